"""Data-parallel SPIDE training over MPI (neurosim.training.distributed): `mpirun -n P
neurosim train --distributed mpi` gives the one-process run bit for bit (weights,
optimizer state, history, op totals) for P = 1..4 and 1 or 2 threads per rank, resumes
like it (with another P), the fixed tree finished from the ranks' subtrees gives
tree_sum's bits, and the engine on one process (SerialComm) changes nothing."""
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
from neurosim.kernels.spide import block_bounds, tree_sum
from neurosim.training import distributed as dist
from neurosim.training.trainer import train

#: 200 digits in batches of 66: three batches of 8 blocks (3 ranks: 3 + 3 + 2 blocks, not
#: aligned subtrees) and a last batch of 2 samples (2 blocks: with 3 and 4 ranks the last
#: ranks have empty shards); a test pass of 100 samples, 2 epochs
SMALL = ["--epochs", "2", "--max-train", "200", "--max-test", "100", "--batch-size", "66",
         "--seed", "3"]


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
                                                       "with mpiexec): pip install 'neurosim-events[mpi]'")


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


def _env(threads=1):
    return dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS="1")


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
def one_small(tmp_path_factory, model_file):
    return _one(tmp_path_factory, model_file, SMALL)


def test_serial_engine_changes_nothing(tmp_path):
    kw = dict(overrides=dict(epochs=1, batch_size=32, T=8, T_b=16, dropout={"F": 0.2}),
              seed=1, max_train=70, max_test=30, handle_signals=False)
    train("fsnn_mlp", "digits", out=tmp_path / "a.h5", **kw)
    train("fsnn_mlp", "digits", out=tmp_path / "b.h5", engine=dist.ShardedEngine(dist.SerialComm()),
          **kw)
    _assert_same_run(tmp_path / "a.h5", tmp_path / "b.h5")


def test_shards_are_whole_blocks_of_the_batch():
    for B in (1, 2, 3, 7, 22, 32, 66):
        gb = list(block_bounds(B))
        for P in (1, 2, 3, 4, 5, 9):
            b = dist.shard_bounds(B, P)
            assert len(b) == P and b[0][0] == 0 and b[-1][1] == B
            assert all(x[1] == y[0] for x, y in zip(b, b[1:]))
            assert all(lo in gb and hi in gb for lo, hi in b)        # block boundaries
            sizes = [hi - lo for lo, hi in b]
            assert sizes[0] >= 1 and (0 not in sizes or set(sizes[sizes.index(0):]) == {0})
            blocks = [k1 - k0 for k0, k1 in dist.shard_blocks(len(gb) - 1, P)]
            assert max(blocks) - min(blocks) <= 1


def _bits(a):
    return np.ascontiguousarray(a).view(np.int64)


def test_subtrees_finished_in_the_tree_order_give_tree_sum_bits():
    """Every rank pre-adds its aligned subtrees, rank 0 finishes the tree: the bits of
    one tree_sum of all block rows, for every number of blocks and of ranks (mutation
    check: adding the nodes left to right instead fails for n = 3 .. 8)."""
    rng = np.random.default_rng(0)
    for n in range(1, 9):
        for P in range(1, 11):
            rows = rng.standard_normal((n, 29)) * 10.0 ** rng.integers(-9, 9, (n, 29))
            ref = np.empty(29)
            tree_sum(rows.copy(), ref)
            nodes = {}
            for k0, k1 in dist.shard_blocks(n, P):
                for k, size in dist.subtree_nodes(k0, k1, n):
                    assert k % size == 0 and k0 <= k < min(k + size, n) <= k1
                    r = np.empty(29)
                    tree_sum(np.ascontiguousarray(rows[k:min(k + size, n)]), r)
                    nodes[k] = (size, r)
            assert sorted(nodes) == sorted({k for k in nodes})
            np.testing.assert_array_equal(_bits(dist.finish_tree(nodes, n)), _bits(ref))


def _mpirun(P, model_file, args, out, *more, threads=1):
    cmd = [MPIEXEC, "-n", str(P)] + _neurosim("train", "--model", str(model_file), *args,
                                              "--out", str(out), "--distributed", "mpi",
                                              "--threads", str(threads), *more)
    r = subprocess.run(cmd, env=_env(threads), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"data parallel over {P} MPI ranks" in r.stderr
    assert r.stdout.count("test accuracy") == 1           # rank 0 alone reports
    return r


#: the default suite runs these (P = 4: oversubscribed here, and ranks with empty shards)
FAST = [(2, 1), (4, 2)]


@needs_mpi
@pytest.mark.parametrize("P,threads", [
    pytest.param(P, t, marks=() if (P, t) in FAST else pytest.mark.slow)
    for P in (1, 2, 3, 4) for t in (1, 2)])
def test_mpirun_equals_one_process(P, threads, one_small, model_file, tmp_path):
    """Weights, optimizer state, history, op totals: every dataset of the run file equal
    to the one-process (1-thread) run, wall times aside."""
    _mpirun(P, model_file, SMALL, tmp_path / f"p{P}.h5", threads=threads)
    _assert_same_run(one_small, tmp_path / f"p{P}.h5")


@needs_mpi
def test_mpirun_resume_equals_one_process(one_small, model_file, tmp_path):
    out = tmp_path / "r.h5"
    first = [a if a != "2" else "1" for a in SMALL]          # --epochs 1
    assert first[:2] == ["--epochs", "1"]
    _mpirun(2, model_file, first, out)
    cmd = [MPIEXEC, "-n", "3"] + _neurosim("train", "--out", str(out), "--resume", "--epochs", "2",
                                           "--distributed", "mpi")
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_same_run(one_small, out)


def test_distributed_without_mpi4py_exits_2(monkeypatch, tmp_path):
    monkeypatch.setattr(dist, "available", lambda: False)
    r = CliRunner().invoke(main, ["train", "--distributed", "mpi", "--out", str(tmp_path / "x.h5")])
    assert r.exit_code == 2 and "neurosim-events[mpi]" in r.output
