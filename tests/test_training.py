"""SPIDE training end to end: accuracy on digits, deterministic resume, CLI."""
import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from neurosim.cli import main
from neurosim.training.checkpoint import load_checkpoint
from neurosim.training.trainer import ResumeError, TrainingError, train


def test_ci_sized_training_reaches_90_percent(tmp_path):
    """A few epochs of the default model on digits: >= 90 % test accuracy."""
    s = train("fsnn_mlp", "digits", out=tmp_path / "r.h5", overrides=dict(epochs=6, milestones=[]))
    assert s["test_accuracy"] >= 0.90, s["test_accuracy"]
    net, st = load_checkpoint(tmp_path / "r.h5")
    assert st["epoch"] == 6 and bool(st["finished"])
    h = st["history"]
    assert len(h["test_accuracy"]) == 6 and h["test_accuracy"][-1] == s["test_accuracy"]
    for k in ("fwd_synops", "bwd_synops_pos", "bwd_synops_neg", "update_macs", "encoding_macs"):
        assert all(v >= 0 for v in h[k]) and h[k][0] > 0, k


def _weights(path):
    with h5py.File(path, "r") as f:
        out = {}
        f["network"].visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
        f["training"].visititems(lambda n, o: out.__setitem__("t/" + n, o[()]) if isinstance(o, h5py.Dataset) and not n.startswith("history/wall") else None)
    return out


def test_resume_reaches_the_same_weights(tmp_path):
    kw = dict(overrides=dict(epochs=3, milestones=[2]), max_train=200, max_test=50, seed=3)
    train("fsnn_mlp", "digits", out=tmp_path / "full.h5", **kw)
    train("fsnn_mlp", "digits", out=tmp_path / "part.h5", **dict(kw, overrides=dict(epochs=1, milestones=[2])))
    _, st = load_checkpoint(tmp_path / "part.h5")
    assert st["epoch"] == 1 and bool(st["finished"])   # stopped after epoch 1 (as a crash would)
    train("fsnn_mlp", "digits", out=tmp_path / "part.h5", resume=True, overrides=dict(epochs=3),
          max_train=200, max_test=50)
    a, b = _weights(tmp_path / "full.h5"), _weights(tmp_path / "part.h5")
    assert set(a) == set(b)
    for k in a:
        if k == "t/history/wall_s":
            continue
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_errors(tmp_path):
    with pytest.raises(ResumeError, match="does not exist; start a new run instead") as ei:
        train(out=tmp_path / "nope.h5", resume=True)
    assert ei.value.problem == "missing" and ei.value.path == tmp_path / "nope.h5"
    (tmp_path / "x.h5").write_bytes(b"")
    with pytest.raises(FileExistsError, match="already exists; pass --force"):
        train(out=tmp_path / "x.h5")
    with pytest.raises(ValueError, match="unknown data set 'cifar9'"):
        train(dataset="cifar9", out=tmp_path / "y.h5")
    with pytest.raises(ValueError, match="one neuron per class"):
        train("fsnn_mlp", "digits", out=tmp_path / "z.h5", overrides=dict(loss="spikemax"))


def test_cli_train_json_and_eval(tmp_path):
    out = tmp_path / "cli.h5"
    r = CliRunner().invoke(main, ["train", "--epochs", "2", "--max-train", "300", "--max-test", "100",
                                  "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output.strip().splitlines()[-1])
    for k in ("test_accuracy", "epochs", "model", "dataset", "seed", "wall_s", "ops_per_sample"):
        assert k in d
    assert d["epochs"] == 2 and d["model"] == "fsnn_mlp"
    # 100 test digits: a whole number of them right, well above chance (0.1) after 2 epochs
    n_right = d["test_accuracy"] * 100
    assert abs(n_right - round(n_right)) < 1e-9 and d["test_accuracy"] >= 0.4, d["test_accuracy"]
    assert d["ops_per_sample"]["forward"] > 0 and d["ops_per_sample"]["backward_pos"] > 0
    r = CliRunner().invoke(main, ["eval", "--run", str(out), "--max-test", "100", "--json"])
    assert r.exit_code == 0, r.output
    e = json.loads(r.output.strip().splitlines()[-1])
    assert e["accuracy"] == pytest.approx(d["test_accuracy"])
    r = CliRunner().invoke(main, ["train", "--out", str(out)])
    assert r.exit_code == 2 and "already exists" in r.output


def test_spikemax_training_runs(tmp_path):
    """The spiking-output path (Spikemax) trains end to end and moves off chance."""
    s = train("fsnn_mlp_spiking", "digits", out=tmp_path / "s.h5", overrides=dict(epochs=1))
    assert s["test_accuracy"] > 0.4, s     # chance is 0.1


def test_cli_spide_quirks_flag_reaches_the_config(tmp_path):
    out = tmp_path / "q.h5"
    r = CliRunner().invoke(main, ["train", "--epochs", "1", "--max-train", "64", "--max-test", "32",
                                  "--spide-quirks", "--out", str(out)])
    assert r.exit_code == 0, r.output
    _, st = load_checkpoint(out)
    assert st["config"]["spide_quirks"] is True


def test_cli_milestones_reach_the_config_and_bad_ones_are_usage_errors(tmp_path):
    out = tmp_path / "m.h5"
    r = CliRunner().invoke(main, ["train", "--epochs", "1", "--max-train", "64", "--max-test", "32",
                                  "--milestones", "3,5", "--out", str(out)])
    assert r.exit_code == 0, r.output
    _, st = load_checkpoint(out)
    assert list(st["config"]["milestones"]) == [3, 5]
    bad = CliRunner().invoke(main, ["train", "--milestones", "0,x", "--out", str(tmp_path / "b.h5")])
    assert bad.exit_code == 2 and "--milestones" in bad.output and "'0,x'" in bad.output
    assert not (tmp_path / "b.h5").exists()


def test_restore_gives_the_trained_network_under_a_norm_cap(tmp_path):
    """checkpoint.restore re-applies the cap to the stored raw weights: the restored network
    has exactly the weights training ended with (those stored in /network), and resume,
    eval and ops all restore through it."""
    from neurosim.io import load_network
    from neurosim.training.checkpoint import restore
    from neurosim.training.trainer import evaluate_run
    out = tmp_path / "cap.h5"
    s = train("fsnn_mlp", "digits", out=out, max_train=32, max_test=16, handle_signals=False,
              overrides=dict(epochs=1, T=5, T_b=8, norm_cap={"B": 0.5}))
    net, model, cfg, st = restore(out)
    assert cfg.norm_cap == {"B": 0.5} and set(model.raw) == {"B"}
    raw = model.raw["B"]
    assert np.sqrt(np.sum(raw.astype(np.float64) ** 2)) > 0.5      # the cap is active
    stored = load_network(out)
    for name, pr in net.projections.items():
        if pr.has_weights:
            np.testing.assert_array_equal(pr.weight, stored.projections[name].weight, name)
    assert evaluate_run(out, max_test=16)["accuracy"] == s["test_accuracy"]


@pytest.mark.parametrize("warm", [False, True])
def test_cli_train_says_when_it_compiles(tmp_path, monkeypatch, warm):
    """A first run (no compiled kernels in the cache) says so before the first batch."""
    from neurosim import kernels
    monkeypatch.setattr(kernels, "cache_warm", lambda *names, **kw: warm)
    r = CliRunner().invoke(main, ["train", "--epochs", "1", "--max-train", "32", "--max-test", "16",
                                  "--out", str(tmp_path / "c.h5")])
    assert r.exit_code == 0, r.output
    assert ("compiling the engine's kernels" in r.output) is (not warm), r.output
    assert ("first batch done in" in r.output) is (not warm), r.output


def test_eta_leaves_out_the_compiling_batch(tmp_path, monkeypatch):
    """The ETA after the batch that compiled is unknown (NaN), later ones are measured
    from the batches after it only (a first batch of 25 s must not predict 25 s per batch)."""
    from neurosim import kernels
    monkeypatch.setattr(kernels, "cache_warm", lambda *names, **kw: False)
    seen = []
    train("fsnn_mlp", "digits", out=tmp_path / "e.h5", overrides=dict(epochs=1, batch_size=8),
          max_train=32, max_test=8, progress=seen.append)
    assert [d["batch"] for d in seen] == [1, 2, 3, 4]
    assert np.isnan(seen[0]["eta_s"])
    assert all(np.isfinite(d["eta_s"]) and d["eta_s"] >= 0 for d in seen[1:])
    assert seen[-1]["eta_s"] == 0


def test_cache_warm_knows_the_compiled_engine():
    import neurosim as ns
    from neurosim import kernels
    net = ns.Network()
    net.add_population("s", 2, "source")
    net.add_population("p", 2, ns.LIF())
    net.add_projection("w", "s", "p", ns.Dense(np.ones((2, 2))))
    ns.run_forward(net, 2, batch=1)           # compiles (or loads) the engine
    assert kernels.cache_warm("engine.run_phase") is (kernels.CACHE_DIR is not None)
    assert kernels.cache_warm("engine.run_phase", cuba=False) is (kernels.CACHE_DIR is not None)
    assert not kernels.cache_warm("engine.no_such_kernel")


def test_cache_warm_tells_the_engine_specialisations_apart(monkeypatch):
    """The trainer's "compiling" note asks for run_phase's specialisation without CubaLIF:
    a cache holding only the CubaLIF one is not warm for it (decision 43), and neither is
    an entry Numba would not load (another source)."""
    from numba.core import types
    from neurosim import kernels
    if kernels.CACHE_DIR is None:
        pytest.skip("caching is off (NEUROSIM_NO_CACHE)")
    import neurosim as ns
    net = ns.Network()
    net.add_population("s", 2, "source")
    net.add_population("p", 2, ns.LIF())
    net.add_projection("w", "s", "p", ns.Dense(np.ones((2, 2))))
    ns.run_forward(net, 2, batch=1)           # the cache now holds the LIF specialisation
    sigs = kernels._cached_signatures("engine.run_phase")
    assert sigs and any(s[-1] == types.none for s in sigs)
    lif_only = [s for s in sigs if s[-1] == types.none]
    cuba_only = [s for s in sigs if s[-1] != types.none] or [lif_only[0][:-1] + (types.boolean,)]
    monkeypatch.setattr(kernels, "_cached_signatures", lambda name: cuba_only)
    assert not kernels.cache_warm("engine.run_phase", cuba=False)
    assert kernels.cache_warm("engine.run_phase", cuba=True)
    assert kernels.cache_warm("engine.run_phase")
    monkeypatch.setattr(kernels, "_cached_signatures", lambda name: lif_only)
    assert kernels.cache_warm("engine.run_phase", cuba=False)
    assert not kernels.cache_warm("engine.run_phase", cuba=True)
    monkeypatch.setattr(kernels, "_cached_signatures", lambda name: [])   # nothing loadable
    assert not kernels.cache_warm("engine.run_phase")
    monkeypatch.setattr(kernels, "_cached_signatures", lambda name: None)  # unreadable index
    assert kernels.cache_warm("engine.run_phase", cuba=True)               # the file decides


def test_cli_train_opens_run_files_and_nir_files(tmp_path):
    """``train --model`` opens its model through ``io.sources.open_network``: a run file
    (``.h5``: the stored network, trained weights included) and a NIR file train too."""
    run = ["train", "--epochs", "1", "--max-train", "32", "--max-test", "16"]
    first = tmp_path / "a.h5"
    r = CliRunner().invoke(main, run + ["--out", str(first)])
    assert r.exit_code == 0, r.output
    nir_file = tmp_path / "a.nir"
    r = CliRunner().invoke(main, ["export-nir", "--run", str(first), "--out", str(nir_file)])
    assert r.exit_code == 0, r.output
    for src in (first, nir_file):
        out = tmp_path / f"from_{src.suffix[1:]}.h5"
        r = CliRunner().invoke(main, run + ["--model", str(src), "--out", str(out)])
        assert r.exit_code == 0, (src, r.output)
        assert out.is_file()
