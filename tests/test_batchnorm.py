"""Batch normalisation of an input map in SPIDE training ([training] batch_norm)."""
import h5py
import numpy as np
import pytest

from neurosim.engine import run_forward
from neurosim.io.runfile import load_network
from neurosim.models import load_model
from neurosim.training import batchnorm as bn
from neurosim.training.checkpoint import load_checkpoint, restore
from neurosim.training.loop import evaluate, model_input
from neurosim.training.spide import SGD, SPIDEConfig, build_model, spide_phases, spide_step
from neurosim.training.trainer import TrainingError, load_data, train


def _loss(c, u):
    return float(np.sum(u * c) + 0.5 * np.sum(c ** 3))


def test_backward_matches_finite_differences():
    """dL/dz, dL/dγ, dL/dβ of the exact backward (batch statistics) against central
    differences of a numpy loss through the batch norm."""
    rng = np.random.default_rng(1)
    B, n = 6, 5
    z = rng.normal(2.0, 3.0, (B, n))
    gamma, beta = rng.normal(1.0, 0.3, n), rng.normal(0.0, 0.5, n)
    u = rng.normal(size=(B, n))
    c, (z_hat, r, mu, var) = bn.forward_batch(z, gamma, beta)
    np.testing.assert_allclose(c, gamma * (z - z.mean(0)) / np.sqrt(z.var(0) + bn.EPS) + beta,
                               rtol=1e-12, atol=1e-12)
    dz, dgamma, dbeta = bn.backward(u + 1.5 * c ** 2, z_hat, r, gamma)
    h = 1e-6

    def num(f, a):
        out = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            ap, am = a.copy(), a.copy()
            ap[i] += h
            am[i] -= h
            out[i] = (f(ap) - f(am)) / (2 * h)
        return out
    np.testing.assert_allclose(dz, num(lambda a: _loss(bn.forward_batch(a, gamma, beta)[0], u), z),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dgamma, num(lambda a: _loss(bn.forward_batch(z, a, beta)[0], u),
                                           gamma), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dbeta, num(lambda a: _loss(bn.forward_batch(z, gamma, a)[0], u),
                                          beta), rtol=1e-6, atol=1e-7)


def test_running_statistics_and_fold():
    st = bn.init_state(3)
    z = np.array([[1.0, 2.0, 0.0], [3.0, 2.0, 1.0], [5.0, 2.0, 5.0]])
    _, (_, _, mu, var) = bn.forward_batch(z, st["gamma"], st["beta"])
    bn.update_running(st, mu, var, 3)
    np.testing.assert_allclose(st["running_mean"], 0.1 * z.mean(0))
    np.testing.assert_allclose(st["running_var"], 0.9 + 0.1 * z.var(0, ddof=1))   # unbiased
    st["gamma"], st["beta"] = np.array([2.0, 1.0, 0.5]), np.array([0.1, -0.2, 0.3])
    W, b = np.arange(6.0).reshape(2, 3), np.array([0.5, -1.0, 2.0])
    Wf, bf = bn.fold(W, b, st)
    x = np.array([[1.0, -2.0]])
    s = st["gamma"] / np.sqrt(st["running_var"] + bn.EPS)
    np.testing.assert_allclose(x @ Wf + bf, (x @ W + b - st["running_mean"]) * s + st["beta"],
                               rtol=1e-12)


def _model(batch_norm=("F",), seed=0):
    net = load_model("fsnn_mlp", seed=seed)
    cfg = SPIDEConfig(T=8, T_b=20, batch_norm=list(batch_norm), dropout={"F": 0.2}, seed=seed)
    return build_model(net, cfg, {}, 10), cfg


def _batch(n=16):
    _, x, y, _, _ = load_data("digits")
    return x[:n].reshape(n, -1), y[:n]


def test_step_gradients_counts_and_running_statistics():
    model, cfg = _model()
    x, y = _batch()
    res = spide_phases(model, x, y, cfg, np.random.default_rng(0))
    g = res.grads
    # through the batch statistics the map's bias gets no gradient (Σ_b dL/dz = 0); without
    # the batch norm's backward it would be Σ_b D ⊙ δ
    assert np.abs(g["F.bias"]).max() < 1e-12 * max(1.0, np.abs(g["F.bn_beta"]).max())
    assert np.abs(g["F.bn_beta"]).max() > 0 and np.abs(g["F.bn_gamma"]).max() > 0
    plain, _ = _model(batch_norm=())
    r0 = spide_phases(plain, x, y, cfg, np.random.default_rng(0))
    n = model.net.projections["F"].n_post
    np.testing.assert_array_equal(res.encoding_macs, r0.encoding_macs + bn.FORWARD_MACS * n)
    np.testing.assert_array_equal(res.forward.input_ops["F"],
                                  r0.forward.input_ops["F"] + bn.FORWARD_MACS * n)
    assert np.all(res.update_ops["F"] >= bn.BACKWARD_MACS * n)
    assert "F.bn_gamma" not in r0.grads
    before = {k: v.copy() for k, v in model.bn["F"].items()}
    spide_step(model, x, y, cfg, np.random.default_rng(0), 0.1, SGD())
    z = x @ model.net.projections["F"].weight   # mean of F x + b, with the old weights...
    assert not np.array_equal(model.bn["F"]["running_mean"], before["running_mean"])
    assert not np.array_equal(model.bn["F"]["gamma"], before["gamma"])
    assert z.shape == (16, n)


def test_eval_uses_running_statistics_folded():
    """The test pass simulates the folded map: per sample (batch size 1 works, batch
    statistics would refuse it), and equal to the folded network simulated directly."""
    model, cfg = _model()
    x, y = _batch(32)
    opt = SGD()
    for i in range(3):
        spide_step(model, x, y, cfg, np.random.default_rng(i), 0.1, opt)
    a = evaluate(model, cfg, x, y, batch_size=32)
    b = evaluate(model, cfg, x, y, batch_size=1)
    assert a["accuracy"] == b["accuracy"] and a["loss"] == pytest.approx(b["loss"], rel=1e-12)
    with pytest.raises(Exception, match="at least 2 samples per batch"):
        spide_phases(model, x[:1], y[:1], cfg, np.random.default_rng(0))
    folded = model.inference_net()
    W, bias = bn.fold(model.net.projections["F"].weight, model.net.projections["F"].bias,
                      model.bn["F"])
    np.testing.assert_array_equal(folded.projections["F"].weight, W)
    np.testing.assert_array_equal(folded.projections["F"].bias, bias)
    r = spide_phases(model, x, y, cfg, None, train=False)
    f = run_forward(folded, cfg.T, inputs={"x": x})
    np.testing.assert_array_equal(r.forward.counts["l1"], f.counts["l1"])
    # the training network is not changed by the fold
    assert not np.array_equal(model.net.projections["F"].weight, W)


def test_bad_values_rejected():
    with pytest.raises(Exception, match="batch_norm must be a list of distinct input-map names"):
        SPIDEConfig(batch_norm="F")
    with pytest.raises(Exception, match="batch_norm must be a list"):
        SPIDEConfig(batch_norm=["F", "F"])
    for name, what in (("W1", "is a dense projection from 'l0'"), ("nope", "does not exist")):
        with pytest.raises(Exception, match=f"batch_norm names '{name}', which {what}") as e:
            _model(batch_norm=(name,))
        assert "\n" not in str(e.value) and "allowed: dense input maps of 'x'" in str(e.value)


def _datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset)
                     else None)
    return out


KW = dict(max_train=200, max_test=60, seed=3, handle_signals=False)


def test_option_changes_training_and_run_file(tmp_path):
    ov = dict(epochs=1, milestones=[])
    train("fsnn_mlp", "digits", out=tmp_path / "bn.h5", overrides=dict(ov, batch_norm=["F"]),
          **KW)
    train("fsnn_mlp", "digits", out=tmp_path / "plain.h5", overrides=ov, **KW)
    a, b = _datasets(tmp_path / "bn.h5"), _datasets(tmp_path / "plain.h5")
    assert "training/batch_norm/F/running_var" in a and "training/batch_norm" not in str(sorted(b))
    assert not np.array_equal(a["training/readout_weight"], b["training/readout_weight"])
    assert "training/optimizer/F.bn_gamma" in a
    # /network holds the inference form: the running statistics folded into F
    _, model, cfg, st = restore(tmp_path / "bn.h5")
    net = load_network(tmp_path / "bn.h5")
    np.testing.assert_array_equal(net.projections["F"].weight,
                                  model.inference_net().projections["F"].weight)
    np.testing.assert_array_equal(model.net.projections["F"].weight, a["training/batch_norm/F/weight"])
    # the test accuracy of the history is that of the stored network, simulated as it is
    _, _, _, xte, yte = load_data("digits")
    xte, yte = model_input(net, "x", xte[:60]), yte[:60]
    f = run_forward(net, cfg.T, inputs={"x": xte})
    pred = np.argmax(f.rates("l1") @ model.C.T + model.c, 1)
    assert np.mean(pred == yte) == st["history"]["test_accuracy"][-1]


def test_resume_mid_run_equals_uninterrupted(tmp_path):
    ov = dict(epochs=3, milestones=[2], batch_norm=["F"])
    train("fsnn_mlp", "digits", out=tmp_path / "full.h5", overrides=ov, **KW)
    train("fsnn_mlp", "digits", out=tmp_path / "part.h5", overrides=dict(ov, epochs=1), **KW)
    _, st = load_checkpoint(tmp_path / "part.h5")
    assert st["epoch"] == 1
    train("fsnn_mlp", "digits", out=tmp_path / "part.h5", resume=True, overrides=dict(epochs=3),
          **KW)
    a, b = _datasets(tmp_path / "full.h5"), _datasets(tmp_path / "part.h5")
    assert set(a) == set(b) and "training/batch_norm/F/running_mean" in a
    for k in a:
        if k != "training/history/wall_s":
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_shipped_model_and_bad_model_file_value(tmp_path):
    net = load_model("fsnn_fc400bn_fmnist")
    plain = load_model("fsnn_fc400_fmnist")
    t, p = dict(net.metadata["training"]), dict(plain.metadata["training"])
    assert t.pop("batch_norm") == ["F"] and t == p
    with pytest.raises(Exception, match="batch_norm must be a list"):
        train("fsnn_mlp", "digits", out=tmp_path / "x.h5", overrides=dict(batch_norm="F"), **KW)
    src = load_model("fsnn_mlp").metadata["source"]
    text = open(src).read().replace("[training]", '[training]\nbatch_norm = "F"')
    (tmp_path / "m.toml").write_text(text)
    with pytest.raises(TrainingError, match=r"m.toml: \[training\]: batch_norm must be a list"):
        train(str(tmp_path / "m.toml"), "digits", out=tmp_path / "y.h5", **KW)
