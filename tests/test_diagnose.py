"""neurosim.training.diagnose: the exact backward solve and the spiking backward's error
(issue 12, item 4), and ``neurosim train --diagnose``."""
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import neurosim as ns
from neurosim.cli import main
from neurosim.training import SPIDEConfig, SPIDEModel
from neurosim.training.diagnose import diagnose, exact_beta, projection_matrix

from reference import dense_matrix
from test_spide_gradients import _conv_net, _fc_net
from test_spide_gradients import exact_beta as dense_exact_beta


@pytest.mark.parametrize("builder", [_fc_net, _conv_net])
def test_projection_matrix_matches_dense_twin(builder):
    net, _ = builder(np.random.default_rng(0))
    for q in net.projections.values():
        np.testing.assert_array_equal(projection_matrix(q).toarray(), dense_matrix(q), err_msg=q.name)


def test_projection_matrix_sumpool_and_duplicate_synapses():
    sp = ns.SumPool2d(2, pre_shape=(3, 4, 6))
    np.testing.assert_array_equal(projection_matrix(sp).toarray(), dense_matrix(sp))
    dup = ns.Sparse(np.array([0, 2, 3]), np.array([1, 1, 0], np.int32), np.array([0.5, 0.25, -1.0]),
                    pre_shape=(2,), post_shape=(2,))
    np.testing.assert_array_equal(projection_matrix(dup).toarray(), [[0, 0.75], [-1.0, 0]])


@pytest.mark.parametrize("builder", [_fc_net, _conv_net])
def test_exact_beta_matches_dense_solve(builder):
    rng = np.random.default_rng(1)
    net, x = builder(rng)
    model = SPIDEModel(net, classes=2, readout=True)
    fwd = ns.run_forward(net, 40, inputs={"x": x})
    out = model.output
    g = rng.normal(0, 0.3, (x.shape[0], net.populations[out].n))
    a = {p.name: np.where(fwd.mask(p.name), 0.5, 0.0) for p in net.spiking_populations}
    mats = {q.name: dense_matrix(q) for q in net.projections.values()}
    ref = dense_exact_beta(net, a, mats, g, out)
    got = exact_beta(model, fwd, g)
    for n in ref:
        np.testing.assert_allclose(got[n], ref[n], rtol=1e-10, atol=1e-12, err_msg=n)


def _feedback_model(seed=3):
    net, x = _fc_net(np.random.default_rng(seed))
    return SPIDEModel(net, classes=2, readout=True, seed=0), x, np.array([0, 1])


def test_error_shrinks_with_backward_steps():
    model, x, y = _feedback_model()
    errs = {}
    for Tb in (20, 400):
        d = diagnose(model, SPIDEConfig(T=60, T_b=Tb, kappa=1.0), x, y)
        errs[Tb] = d
        assert set(d["populations"]) == {"l0", "l1"} and set(d["projections"]) == {"F", "W1", "fb"}
    for n in ("l0", "l1"):
        assert errs[400]["populations"][n]["beta_rel_error"] < \
            errs[20]["populations"][n]["beta_rel_error"], n
        assert errs[400]["populations"][n]["beta_rel_error"] < 0.02
    for n in ("F", "W1", "fb"):
        assert errs[400]["projections"][n]["grad_cosine"] > 0.99, n
    r = errs[20]["populations"]["l1"]
    assert 0 < r["bwd_rate_pos"] + r["bwd_rate_neg"] <= 1


def test_exact_case_has_zero_error():
    """One Dense layer, no feedback: input current 1 per step gives rate 1/2 (both neurons
    in range); the rate MSE with targets 0.25 / 0.5 gives g = (0.5, 0), so the ternary
    neuron fires +1 every second step and β = 0.5 is exact after T_b = 8 steps."""
    net = ns.Network(dtype=np.float64)
    net.add_population("x", 2, "input")
    net.add_population("h", 2, ns.LIF())
    net.add_projection("F", "x", "h", ns.Dense(np.full((2, 2), 0.5), bias=np.zeros(2)))
    model = SPIDEModel(net, classes=2, readout=False)
    cfg = SPIDEConfig(T=10, T_b=8, kappa=1.0, loss="rate-mse", rate_true=0.25, rate_false=0.5)
    x = np.ones((1, 2))
    d = diagnose(model, cfg, x, np.array([0]))
    fwd = ns.run_forward(net, cfg.T, inputs={"x": x})
    np.testing.assert_array_equal(fwd.counts["h"], [[5, 5]])
    assert d["populations"]["h"] == dict(bwd_rate_pos=0.25, bwd_rate_neg=0.0, beta_rel_error=0.0)
    assert d["projections"]["F"]["grad_cosine"] == pytest.approx(1.0, abs=1e-12)


def test_refuses_large_networks():
    model, x, y = _feedback_model()
    with pytest.raises(ValueError, match="above the limit of 4 spiking neurons"):
        diagnose(model, SPIDEConfig(T=5, T_b=5), x, y, max_neurons=4)


def test_cli_diagnose(tmp_path):
    out = tmp_path / "run.h5"
    r = CliRunner().invoke(main, ["train", "--epochs", "1", "--max-train", "64", "--max-test", "32",
                                  "--diagnose", "4", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "backward diagnostics (4 samples" in r.output
    with h5py.File(out, "r") as f:
        g = f["training/diagnostics"]
        assert g.attrs["samples"] == 4 and g.attrs["epoch"] == 1
        pops = [s.decode() for s in g["populations"][()]]
        assert len(pops) == len(g["beta_rel_error"]) == len(g["bwd_rate_pos"]) > 0
        assert len(g["projections"]) == len(g["grad_cosine"]) > 0
