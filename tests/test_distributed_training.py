"""Data-parallel SPIDE training over MPI (neurosim.training.distributed): `mpirun -n P
neurosim train --distributed mpi` gives the one-process run bit for bit (weights,
optimizer state, history, op totals), resumes like it, and the engine hooks on one
process (SerialComm) change nothing."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from neurosim.cli import main
from neurosim.training import distributed as dist
from neurosim.training.trainer import train

#: all of digits (1438 training / 359 test samples, batches of 32), 2 epochs
FULL = ["--epochs", "2", "--seed", "3"]
#: 99 samples in batches of 32: the last batch (3) has fewer samples than 4 ranks
SMALL = ["--epochs", "2", "--max-train", "99", "--max-test", "40", "--batch-size", "32",
         "--tf", "8", "--tb", "16", "--seed", "3"]


def _mpiexec():
    if not dist.available():
        return None
    here = Path(sys.executable).parent
    for name in ("mpiexec", "mpirun"):
        if (here / name).exists():
            return str(here / name)
    return shutil.which("mpiexec") or shutil.which("mpirun")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="needs the mpi extra (mpi4py and an MPI "
                                                       "with mpiexec): pip install 'neurosim[mpi]'")


def _datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


def _assert_same_run(a, b):
    da, db = _datasets(a), _datasets(b)
    assert set(da) == set(db)
    assert any(k.startswith("network/") for k in da) and "training/history/fwd_synops" in da
    for k in da:
        if k == "training/history/wall_s":
            continue
        np.testing.assert_array_equal(da[k], db[k], err_msg=k)


def _env():
    return dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")


def _neurosim(*args):
    return [sys.executable, "-m", "neurosim.cli", *args]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """fsnn_mlp with dropout (masks drawn for the whole batch, then sliced per rank)."""
    from neurosim.io.model_file import resolve_model_path
    text = resolve_model_path("fsnn_mlp").read_text()
    assert "\nbatch_size = 32\n" in text
    p = tmp_path_factory.mktemp("model") / "fsnn_mlp_dropout.toml"
    p.write_text(text.replace("\nbatch_size = 32\n", "\nbatch_size = 32\ndropout = { W1 = 0.3 }\n"))
    return p


def _one(tmp_path_factory, model_file, args):
    out = tmp_path_factory.mktemp("one") / "one.h5"
    r = subprocess.run(_neurosim("train", "--model", str(model_file), *args, "--out", str(out)),
                       env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def one_full(tmp_path_factory, model_file):
    return _one(tmp_path_factory, model_file, FULL)


@pytest.fixture(scope="module")
def one_small(tmp_path_factory, model_file):
    return _one(tmp_path_factory, model_file, SMALL)


def test_serial_engine_changes_nothing(tmp_path):
    kw = dict(overrides=dict(epochs=1, batch_size=32, T=8, T_b=16, dropout={"F": 0.2}),
              seed=1, max_train=70, max_test=30, handle_signals=False)
    train("fsnn_mlp", "digits", out=tmp_path / "a.h5", **kw)
    train("fsnn_mlp", "digits", out=tmp_path / "b.h5", engine=dist.ShardedEngine(dist.SerialComm()),
          **kw)
    _assert_same_run(tmp_path / "a.h5", tmp_path / "b.h5")


def test_shard_bounds_cover_the_batch():
    for B in (1, 3, 22, 32):
        for P in (1, 2, 4):
            b = dist.shard_bounds(B, P)
            assert b[0][0] == 0 and b[-1][1] == B and all(x[1] == y[0] for x, y in zip(b, b[1:]))
            sizes = [hi - lo for lo, hi in b]
            assert sizes[0] >= 1 and max(sizes) - min(sizes) <= 1 and (0 not in sizes or set(sizes[sizes.index(0):]) == {0})


def _mpirun(P, model_file, args, out, *more):
    cmd = [MPIEXEC, "-n", str(P)] + _neurosim("train", "--model", str(model_file), *args,
                                              "--out", str(out), "--distributed", "mpi", *more)
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"data parallel over {P} MPI ranks" in r.stderr
    assert r.stdout.count("test accuracy") == 1           # rank 0 alone reports
    return r


@needs_mpi
def test_mpirun_two_ranks_equals_one_process_on_digits(one_full, model_file, tmp_path):
    _mpirun(2, model_file, FULL, tmp_path / "p2.h5")
    _assert_same_run(one_full, tmp_path / "p2.h5")


@needs_mpi
@pytest.mark.parametrize("P", [2, 4])
def test_mpirun_uneven_shards_equal_one_process(P, one_small, model_file, tmp_path):
    _mpirun(P, model_file, SMALL, tmp_path / f"p{P}.h5")   # 4 ranks: oversubscribed here
    _assert_same_run(one_small, tmp_path / f"p{P}.h5")


@needs_mpi
def test_mpirun_resume_equals_one_process(one_full, model_file, tmp_path):
    out = tmp_path / "r.h5"
    _mpirun(2, model_file, ["--epochs", "1", "--seed", "3"], out)
    cmd = [MPIEXEC, "-n", "2"] + _neurosim("train", "--out", str(out), "--resume", "--epochs", "2",
                                           "--distributed", "mpi")
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_same_run(one_full, out)


def test_distributed_without_mpi4py_exits_2(monkeypatch, tmp_path):
    monkeypatch.setattr(dist, "available", lambda: False)
    r = CliRunner().invoke(main, ["train", "--distributed", "mpi", "--out", str(tmp_path / "x.h5")])
    assert r.exit_code == 2 and "neurosim[mpi]" in r.output
