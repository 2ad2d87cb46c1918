"""The ``command`` a run file records re-runs as written and gives the same file.

For ``neurosim simulate`` and ``neurosim train`` (and a resumed training run) the stored
command is split with :func:`shlex.split`, run through click's ``CliRunner`` from another
folder (the ``--out`` paths are relative, so the re-run writes its own file there), and
the two files must hold identical datasets and attributes except the timings
(``wall_s``, ``created`` and the attribute digest over them).  Re-running in the folder of
the original needs ``--force``, which is recorded only when it was given.
"""
import shlex

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from neurosim.cli import main
from neurosim.io.model_file import models_dir

#: attributes and datasets that legitimately differ between two identical runs.
TIMINGS = {"wall_s", "created", "attrs_sha256"}




def _invoke(runner, argv):
    res = runner.invoke(main, argv)
    assert res.exit_code == 0, (argv, res.output, getattr(res, "stderr", ""))
    return res


def _command(path):
    with h5py.File(path, "r") as f:
        c = f.attrs["command"]
    return c.decode() if isinstance(c, bytes) else c


def _rerun(runner, path, where, monkeypatch):
    """Run the command stored in ``path`` from the folder ``where``."""
    argv = shlex.split(_command(path))
    assert argv[0] == "neurosim", argv
    where.mkdir(exist_ok=True)
    monkeypatch.chdir(where)
    _invoke(runner, argv[1:])
    return argv


def _contents(path):
    """{hdf5 path: value} of every dataset and attribute but the timings."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if name.rsplit("/", 1)[-1] in TIMINGS:
                return
            for k, v in obj.attrs.items():
                if k not in TIMINGS:
                    out[f"{name}@{k}"] = v
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
        visit("", f)
        f.visititems(visit)
    return out


def _assert_same(a, b, ignore=()):
    ca, cb = _contents(a), _contents(b)
    assert sorted(ca) == sorted(cb)
    for k in set(ca) - set(ignore):
        x, y = np.asarray(ca[k]), np.asarray(cb[k])
        assert x.dtype == y.dtype and x.shape == y.shape, k
        assert np.array_equal(x, y), f"{k} differs"


@pytest.fixture
def float64_model(tmp_path):
    text = (models_dir() / "fsnn_mlp.toml").read_text()
    assert 'dtype = "float32"' in text
    p = tmp_path / "models" / "fsnn_mlp64.toml"
    p.parent.mkdir()
    p.write_text(text.replace('dtype = "float32"', 'dtype = "float64"'))
    return str(p)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_simulate_command_reruns(runner, tmp_path, monkeypatch, float64_model, dtype):
    model = "fsnn_mlp" if dtype == "float32" else float64_model
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    _invoke(runner, ["simulate", "--model", model, "--input", "digits", "--steps", "8",
                     "--n-samples", "3", "--backward-steps", "6", "--grad", "random",
                     "--record", "--seed", "1", "--threads", "1", "--out", "run.h5"])
    with h5py.File("run.h5", "r") as f:
        assert f.attrs["dtype"] == dtype
    argv = _rerun(runner, tmp_path / "a" / "run.h5", tmp_path / "b", monkeypatch)
    assert argv[:4] == ["neurosim", "simulate", "--model", model] and "--force" not in argv
    _assert_same(tmp_path / "a" / "run.h5", tmp_path / "b" / "run.h5")
    # in the original's folder, as for any run, only with --force
    monkeypatch.chdir(tmp_path / "a")
    res = runner.invoke(main, argv[1:])
    assert res.exit_code == 2 and "--force" in res.output
    _invoke(runner, argv[1:] + ["--force"])
    assert "--force" in shlex.split(_command("run.h5"))
    _rerun(runner, tmp_path / "a" / "run.h5", tmp_path / "a", monkeypatch)
    _assert_same(tmp_path / "a" / "run.h5", tmp_path / "b" / "run.h5", ignore={"@command"})


TRAIN = ["train", "--epochs", "1", "--max-train", "32", "--max-test", "16", "--tf", "4",
         "--tb", "6", "--batch-size", "16", "--lr", "0.05", "--milestones", "",
         "--spide-quirks", "--threads", "1", "--json", "--out", "r.h5"]


def test_train_command_reruns_and_names_the_real_options(runner, tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    _invoke(runner, TRAIN)
    argv = _rerun(runner, tmp_path / "a" / "r.h5", tmp_path / "b", monkeypatch)
    assert argv[:2] == ["neurosim", "train"]
    for opt in ("--tf", "--tb", "--json", "--max-train", "--spide-quirks", "--model", "--seed"):
        assert opt in argv, (opt, argv)
    assert argv[argv.index("--milestones") + 1] == ""
    assert argv[argv.index("--lr") + 1] == "0.05"
    assert not {"--as-json", "--T", "--T-b", "--resume", "--force"} & set(argv)
    _assert_same(tmp_path / "a" / "r.h5", tmp_path / "b" / "r.h5")


def test_resumed_run_records_the_command_of_the_whole_run(runner, tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    _invoke(runner, TRAIN)
    _invoke(runner, ["train", "--out", "r.h5", "--resume", "--epochs", "2"])
    argv = shlex.split(_command(tmp_path / "a" / "r.h5"))
    assert "--resume" not in argv and argv[argv.index("--epochs") + 1] == "2"
    assert argv[argv.index("--tf") + 1] == "4"          # the stored run's own options
    _rerun(runner, tmp_path / "a" / "r.h5", tmp_path / "b", monkeypatch)
    _assert_same(tmp_path / "a" / "r.h5", tmp_path / "b" / "r.h5")
