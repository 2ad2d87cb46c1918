"""The command line: `neurosim simulate` and `neurosim info` through click's CliRunner."""
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

import neurosim as ns
import neurosim.simulate as S
from neurosim.cli import main
from neurosim.io import read_run
from neurosim.io.model_file import models_dir
from neurosim.models import load_model
from neurosim.simulate import rerun




def _sim(runner, tmp_path, *args, out="run.h5"):
    argv = ["simulate", *args]
    if out is not None:
        argv += ["--out", str(tmp_path / out)]
    return runner.invoke(main, argv)


def _assert_input_error(res, *patterns):
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr)
    err = res.stderr.strip()
    assert err.startswith("Error: ") and "\n" not in err, err
    assert "Traceback" not in res.stderr
    for p in patterns:
        assert p in err, (p, err)


# -- info ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fsnn_mlp", "test_conv", "test_sparse"])
def test_info_table(runner, name):
    res = runner.invoke(main, ["info", "--model", name])
    assert res.exit_code == 0, res.stderr
    net = load_model(name)
    out = res.stdout
    assert f"model {name!r}" in out and "populations" in out and "projections" in out
    for p in net.populations.values():
        assert p.name in out and p.kind in out
    for q in net.projections.values():
        assert f"{q.pre} -> {q.post}" in out and q.kind in out
    tot = sum(q.n_synapses for q in net.projections.values())
    assert f"{tot} synapses" in out


@pytest.mark.parametrize("name", ["fsnn_mlp", "test_conv", "test_sparse"])
def test_info_json(runner, name):
    res = runner.invoke(main, ["info", "--model", name, "--json"])
    assert res.exit_code == 0, res.stderr
    d = json.loads(res.stdout)
    net = load_model(name)
    assert [p["name"] for p in d["populations"]] == list(net.populations)
    assert [q["synapses"] for q in d["projections"]] == [q.n_synapses for q in net.projections.values()]
    assert d["totals"]["dense_macs"] == sum(q.dense_macs for q in net.projections.values())
    assert name in d["known_models"]


def test_info_model_file_path_and_run_file(runner, tmp_path):
    path = str(models_dir() / "test_conv.toml")
    res = runner.invoke(main, ["info", "--model", path])
    assert res.exit_code == 0 and "conv_transpose2d" in res.stdout
    r = _sim(runner, tmp_path, "--model", "test_conv", "--input", "digits", "--steps", "3",
             "--n-samples", "2")
    assert r.exit_code == 0, r.stderr
    res = runner.invoke(main, ["info", "--model", str(tmp_path / "run.h5")])
    assert res.exit_code == 0 and "conv_transpose2d" in res.stdout


# -- simulate -------------------------------------------------------------------------------------
def test_simulate_digits_forward_and_backward(runner, tmp_path):
    res = _sim(runner, tmp_path, "--model", "fsnn_mlp", "--input", "digits", "--steps", "20",
               "--n-samples", "5", "--backward-steps", "10", "--grad", "random", "--record",
               "--seed", "3", "--threads", "1")
    assert res.exit_code == 0, res.stderr
    assert "forward" in res.stderr and "backward" in res.stderr and "elapsed" in res.stderr
    assert "forward: 20 steps" in res.stdout and "backward: 10 steps" in res.stdout
    assert "synaptic ops" in res.stdout and "rate" in res.stdout
    run = read_run(tmp_path / "run.h5")
    assert run.attrs["seed"] == 3
    assert run.attrs["command"].startswith("neurosim simulate --model fsnn_mlp")
    assert run.forward.batch == 5 and run.forward.steps == 20 and run.backward.steps == 10
    # --record: the stored spike trains add up to the stored per-neuron counts (forward
    # 0/1 spikes; backward +1 / -1 events of the ternary couples), and are not all silent
    for k in ("l0", "l1"):
        f_tr = np.asarray(run.forward.spikes[k])
        b_tr = np.asarray(run.backward.spikes[k]).astype(np.int64)
        assert f_tr.shape == (5, 20, run.network.populations[k].n) and b_tr.shape[:2] == (5, 10)
        np.testing.assert_array_equal((f_tr != 0).sum(1), run.forward.counts[k])
        np.testing.assert_array_equal((b_tr == 1).sum(1), run.backward.counts[k])
        np.testing.assert_array_equal((b_tr == -1).sum(1), run.backward.counts_neg[k])
        assert run.forward.counts[k].sum() > 0
    x, _ = ns.datasets.digits.load_digits("test", n=5)
    np.testing.assert_array_equal(run.inputs["x"], x)
    g = np.random.default_rng(3).normal(0.0, 0.5, size=(5, 64))
    np.testing.assert_array_equal(run.grad["l1"], g)
    # the same run through the library
    sim = S.simulate("fsnn_mlp", "digits", 20, n_samples=5, backward_steps=10, grad="random",
                     seed=3, record=True)
    for k in sim.forward.counts:
        np.testing.assert_array_equal(sim.forward.counts[k], run.forward.counts[k])
        np.testing.assert_array_equal(sim.backward.counts_neg[k], run.backward.counts_neg[k])
    fwd2, bwd2 = rerun(run)
    np.testing.assert_array_equal(fwd2.spikes["l0"], run.forward.spikes["l0"])
    np.testing.assert_array_equal(bwd2.spikes["l1"], run.backward.spikes["l1"])


def test_simulate_npy_npz_and_grad_file(runner, tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "s.npy", rng.random((3, 6, 50)) < 0.3)
    res = _sim(runner, tmp_path, "--model", "test_sparse", "--input", str(tmp_path / "s.npy"),
               "--steps", "6")
    assert res.exit_code == 0, res.stderr
    np.savez(tmp_path / "in.npz", s=rng.random((4, 6, 50)) < 0.3)
    np.save(tmp_path / "g.npy", rng.normal(0, 0.5, (2, 20)))
    res = _sim(runner, tmp_path, "--model", "test_sparse", "--input", str(tmp_path / "in.npz"),
               "--steps", "6", "--n-samples", "2", "--backward-steps", "4", "--grad",
               str(tmp_path / "g.npy"), out="b.h5")
    assert res.exit_code == 0, res.stderr
    run = read_run(tmp_path / "b.h5")
    assert run.forward.batch == 2 and set(run.grad) == {"o"}
    np.testing.assert_array_equal(run.grad["o"], np.load(tmp_path / "g.npy"))


def test_simulate_force_overwrites(runner, tmp_path):
    args = ("--model", "fsnn_mlp", "--input", "digits", "--steps", "4", "--n-samples", "2")
    assert _sim(runner, tmp_path, *args).exit_code == 0
    before = (tmp_path / "run.h5").read_bytes()
    res = _sim(runner, tmp_path, *args)
    _assert_input_error(res, "run.h5' already exists", "--force")
    assert (tmp_path / "run.h5").read_bytes() == before
    res = _sim(runner, tmp_path, *args[:-1], "3", "--force")
    assert res.exit_code == 0, res.stderr
    assert read_run(tmp_path / "run.h5").forward.batch == 3


# -- errors: one line, exit 2, no output file ---------------------------------------------------------
def _no_output(tmp_path):
    assert not any(p.name.startswith(("run.h5", ".run.h5")) for p in tmp_path.iterdir())


def test_error_missing_model_file(runner, tmp_path):
    res = _sim(runner, tmp_path, "--model", str(tmp_path / "none.toml"), "--input", "digits",
               "--steps", "3")
    _assert_input_error(res, "none.toml' does not exist")
    _no_output(tmp_path)


def test_error_unknown_model_name(runner, tmp_path):
    res = _sim(runner, tmp_path, "--model", "lenet99", "--input", "digits", "--steps", "3")
    _assert_input_error(res, "unknown model 'lenet99'", "known names:", "fsnn_mlp")
    res = runner.invoke(main, ["info", "--model", "lenet99"])
    _assert_input_error(res, "unknown model 'lenet99'")
    _no_output(tmp_path)


def test_error_malformed_toml(runner, tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("format = 'neurosim-model/1'\npopulations = [ {name = 'x'\n")
    res = _sim(runner, tmp_path, "--model", str(p), "--input", "digits", "--steps", "3")
    _assert_input_error(res, "bad.toml' is not valid TOML")
    res = runner.invoke(main, ["info", "--model", str(p)])
    _assert_input_error(res, "is not valid TOML")
    _no_output(tmp_path)


def test_error_unknown_key(runner, tmp_path):
    p = tmp_path / "key.toml"
    p.write_text('format = "neurosim-model/1"\n[[populations]]\nname = "a"\nshape = [3]\n'
                 'kind = "lif"\nthreshold = 1.0\n')
    res = runner.invoke(main, ["info", "--model", str(p)])
    _assert_input_error(res, "unknown key 'threshold' in [[populations]] 'a' (kind 'lif')",
                        "allowed keys:")


def test_error_wrong_input_shape(runner, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 63)))
    res = _sim(runner, tmp_path, "--model", "fsnn_mlp", "--input", str(tmp_path / "x.npy"),
               "--steps", "3")
    _assert_input_error(res, "x.npy'", "population 'x'", "has shape (3, 63)", "allowed: (N, 64)")
    np.savez(tmp_path / "k.npz", y=np.zeros((3, 64)))
    res = _sim(runner, tmp_path, "--model", "fsnn_mlp", "--input", str(tmp_path / "k.npz"),
               "--steps", "3")
    _assert_input_error(res, "key 'y' is not an input/source population", "allowed keys: ['x']")
    np.save(tmp_path / "s.npy", np.zeros((2, 5, 50)))
    res = _sim(runner, tmp_path, "--model", "test_sparse", "--input", str(tmp_path / "s.npy"),
               "--steps", "6")
    _assert_input_error(res, "source population 's'", "(2, 5, 50)", "(N, 6, 50)")
    res = _sim(runner, tmp_path, "--model", "test_sparse", "--input", "digits", "--steps", "6")
    _assert_input_error(res, "digits needs a model with exactly one input population")
    res = _sim(runner, tmp_path, "--model", "fsnn_mlp", "--input", str(tmp_path / "x.txt"),
               "--steps", "3")
    _assert_input_error(res, "x.txt' does not exist")
    (tmp_path / "x.csv").write_text("1,2\n")
    res = _sim(runner, tmp_path, "--model", "fsnn_mlp", "--input", str(tmp_path / "x.csv"),
               "--steps", "3")
    _assert_input_error(res, "must be a .npy (one array) or .npz")
    res = _sim(runner, tmp_path, "--model", "fsnn_mlp", "--input", "digits", "--steps", "3",
               "--n-samples", "400")
    _assert_input_error(res, "359 samples, 400 were asked for")
    _no_output(tmp_path)


def test_error_nan_input(runner, tmp_path):
    x = np.zeros((2, 64))
    x[1, 7] = np.nan
    np.save(tmp_path / "x.npy", x)
    res = _sim(runner, tmp_path, "--model", "fsnn_mlp", "--input", str(tmp_path / "x.npy"),
               "--steps", "3")
    _assert_input_error(res, "contains NaN or inf (first at index (1, 7)")
    g = np.zeros((2, 64))
    g[0, 0] = np.inf
    np.save(tmp_path / "x.npy", np.zeros((2, 64)))
    np.save(tmp_path / "g.npy", g)
    res = _sim(runner, tmp_path, "--model", "fsnn_mlp", "--input", str(tmp_path / "x.npy"),
               "--steps", "3", "--backward-steps", "2", "--grad", str(tmp_path / "g.npy"))
    _assert_input_error(res, "g.npy'", "contains NaN or inf")
    _no_output(tmp_path)


def test_error_grad_without_backward_and_vice_versa(runner, tmp_path):
    res = _sim(runner, tmp_path, "--model", "fsnn_mlp", "--input", "digits", "--steps", "3",
               "--grad", "random")
    _assert_input_error(res, "no backward phase", "--backward-steps")
    res = _sim(runner, tmp_path, "--model", "fsnn_mlp", "--input", "digits", "--steps", "3",
               "--backward-steps", "3")
    _assert_input_error(res, "needs a gradient", "--grad random")
    np.save(tmp_path / "g.npy", np.zeros((10, 5)))
    res = _sim(runner, tmp_path, "--model", "fsnn_mlp", "--input", "digits", "--steps", "3",
               "--backward-steps", "3", "--grad", str(tmp_path / "g.npy"))
    _assert_input_error(res, "population 'l1' has shape (10, 5)", "(10, 64)")
    _no_output(tmp_path)


def test_error_output_folder_missing(runner, tmp_path):
    res = _sim(runner, tmp_path, "--model", "fsnn_mlp", "--input", "digits", "--steps", "3",
               out="missing/run.h5")
    _assert_input_error(res, "output folder", "does not exist")


def test_debug_shows_traceback(runner, tmp_path):
    res = _sim(runner, tmp_path, "--model", "lenet99", "--input", "digits", "--steps", "3",
               "--debug")
    assert res.exit_code == 2
    assert "Traceback" in res.stderr and "Error: unknown model 'lenet99'" in res.stderr


def test_runtime_failure_exits_1_and_leaves_no_file(runner, tmp_path, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("kernel exploded")
    monkeypatch.setattr(S, "run_forward", broken)
    res = _sim(runner, tmp_path, "--model", "fsnn_mlp", "--input", "digits", "--steps", "3")
    assert res.exit_code == 1
    assert "Error: runtime failure: RuntimeError: kernel exploded" in res.stderr
    assert "Traceback" not in res.stderr
    _no_output(tmp_path)


def test_failure_while_writing_leaves_no_file(runner, tmp_path, monkeypatch):
    import neurosim.io.runfile as H

    def boom(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(H, "write_network", boom)
    res = _sim(runner, tmp_path, "--model", "fsnn_mlp", "--input", "digits", "--steps", "3")
    assert res.exit_code == 1          # a full disk is a runtime failure, not bad input
    assert "No space left on device" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_usage_errors_come_from_click(runner, tmp_path):
    res = _sim(runner, tmp_path, "--model", "fsnn_mlp", "--input", "digits", "--steps", "0")
    assert res.exit_code == 2 and "--steps" in res.stderr
    res = runner.invoke(main, ["simulate", "--model", "fsnn_mlp"])
    assert res.exit_code == 2 and "Missing option" in res.stderr


def test_version_and_help(runner):
    res = runner.invoke(main, ["--version"])
    assert res.exit_code == 0 and ns.__version__ in res.stdout
    res = runner.invoke(main, ["simulate", "--help"])
    assert res.exit_code == 0 and "--backward-steps" in res.stdout


def test_error_checked_before_simulating(runner, tmp_path):
    p = tmp_path / "cuba.toml"
    p.write_text('format = "neurosim-model/1"\n'
                 '[[populations]]\nname = "x"\nshape = [64]\nkind = "input"\n'
                 '[[populations]]\nname = "c"\nshape = [10]\nkind = "cuba_lif"\n'
                 '[[projections]]\nname = "F"\npre = "x"\npost = "c"\nkind = "dense"\n')
    res = _sim(runner, tmp_path, "--model", str(p), "--input", "digits", "--steps", "3",
               "--backward-steps", "2", "--grad", "random")
    _assert_input_error(res, "backward phase needs LIF populations; ['c'] are cuba_lif")
    assert "forward:" not in res.stderr
    res = _sim(runner, tmp_path, "--model", "fsnn_mlp", "--input", "digits", "--steps", "3",
               "--threads", "100000")
    _assert_input_error(res, "threads: 100000 asked for, at most")
    res = _sim(runner, tmp_path, "--model", str(p), "--input", "digits", "--steps", "3")
    assert res.exit_code == 0, res.stderr
    assert "cuba_lif" in res.stdout


def test_train_words_resume_conflicts_with_its_options(runner, tmp_path):
    """The library reports a resume conflict as (option, given, stored); the train command
    words it with its own option names (--tf for T, --max-train for max_train)."""
    out = tmp_path / "r.h5"
    base = ["train", "--epochs", "1", "--tf", "4", "--tb", "6", "--max-train", "32",
            "--max-test", "16", "--out", str(out)]
    assert runner.invoke(main, base).exit_code == 0
    for extra, words in ((["--tf", "5"], "--tf 5 differs from the run's 4"),
                         (["--tb", "7"], "--tb 7 differs from the run's 6"),
                         (["--lr", "0.5"], "--lr 0.5 differs from the run's 0.1"),
                         (["--max-train", "40"], "--max-train 40 differs from the run's 32")):
        r = runner.invoke(main, ["train", "--out", str(out), "--resume"] + extra)
        assert r.exit_code == 2, r.output
        assert f"--resume: {words}" in r.output and f"drop {extra[0]}" in r.output, r.output
    r = runner.invoke(main, ["train", "--out", str(out), "--resume", "--epochs", "0"])
    assert r.exit_code == 2 and "--epochs 0 is fewer than the 1 epochs already done" in r.output
    r = runner.invoke(main, ["train", "--out", str(tmp_path / "none.h5"), "--resume"])
    assert r.exit_code == 2 and "does not exist; start without --resume" in r.output


def test_python_m_neurosim_cli_knows_every_command():
    """``python -m neurosim.cli`` registers every command before running (export-nir was
    once registered below the ``__main__`` guard and unknown there)."""
    import subprocess
    import sys
    run = lambda *a: subprocess.run([sys.executable, "-m", "neurosim.cli", *a],
                                    capture_output=True, text=True)
    res = run("--help")
    assert res.returncode == 0, res.stderr
    for name in main.commands:
        assert name in res.stdout
    res = run("export-nir", "--help")
    assert res.returncode == 0 and "--out" in res.stdout, res.stderr


def test_command_modules_and_file_layer_import_no_cycle():
    """cli_ops takes its helpers from _cli_common, not from cli; io/ imports no
    application module (simulate, cli, training, ops); nothing imports io.nir's old home."""
    import ast
    from pathlib import Path
    root = Path(ns.__file__).parent

    def imports(path):
        pkg = ".".join(path.relative_to(root.parent).with_suffix("").parts[:-1])
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = pkg.rsplit(".", node.level - 1)[0] if node.level else ""
                mod = ".".join(x for x in (base, node.module) if x)
                out |= {mod} | {f"{mod}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names}
        return out

    assert not {"neurosim.cli"} & imports(root / "cli_ops.py")
    app = ("neurosim.simulate", "neurosim.cli", "neurosim.training", "neurosim.ops",
           "neurosim.experiments")
    for p in (root / "io").glob("*.py"):
        bad = [m for m in imports(p) if m.startswith(app)]
        assert bad == [], (p.name, bad)
