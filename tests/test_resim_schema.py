"""Is docs/hdf5-schema.md enough to re-simulate a run bit-for-bit?

Run files are produced with neurosim (CLI ``neurosim simulate`` and ``neurosim.io.write_run``
on small hand-built networks, float32 and float64, random non-dyadic values) and then
re-simulated by ``tests/schema_resim.py``, an independent numpy simulator written from
the schema document only; every stored result must be reproduced exactly.
"""

from __future__ import annotations

import os
import sys

import h5py
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import schema_resim as R  # noqa: E402

import neurosim as ns  # noqa: E402  (only to *produce* run files)
from neurosim.io import write_run  # noqa: E402

DTYPES = [np.float32, np.float64]


def _ids(d):
    return np.dtype(d).name


def check(path, ignore=("neuron_updates",)):
    diffs = R.compare(path, ignore=ignore)
    assert diffs == [], "\n".join(diffs)
    # also spell out the main arrays with assert_array_equal
    r = R.resimulate(path)
    with h5py.File(path, "r") as f:
        for name, d in r["forward"]["populations"].items():
            g = f["forward/populations"][name]
            np.testing.assert_array_equal(d["counts"], g["counts"][...])
            np.testing.assert_array_equal(d["v_final"], g["v_final"][...])
            if "spikes" in g:
                for k in ("sample", "step", "neuron"):
                    np.testing.assert_array_equal(d["spikes"][k], g["spikes"][k][...])
        for name, d in r["forward"]["projections"].items():
            g = f["forward/projections"][name]
            for k in ("sent", "count", "count_per_kernel_weight", "synaptic_operations"):
                if k in g:
                    np.testing.assert_array_equal(d[k], g[k][...])
        if r["backward"] is not None:
            for name, d in r["backward"]["populations"].items():
                g = f["backward/populations"][name]
                for k in ("count_pos", "count_neg", "v_final"):
                    np.testing.assert_array_equal(d[k], g[k][...])
            for name, d in r["backward"]["projections"].items():
                g = f["backward/projections"][name]
                for k in ("sent_pos", "sent_neg", "count_pos", "count_neg"):
                    np.testing.assert_array_equal(d[k], g[k][...])
    return r


def write(tmp_path, name, net, fwd, bwd=None, **kw):
    path = str(tmp_path / f"{name}.h5")
    write_run(path, net, fwd, bwd, seed=0, **kw)
    return path


# --------------------------------------------------------------------------------------
# the two minimal cases of the brief


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("current", ["per_step", "constant"])
def test_case1_lazy_leak(tmp_path, dtype, current):
    """One source spiking at steps 0 and 12, dense weight 0.7797698974609375, into 4 LIF
    neurons with leak 0.9, T = 20; zero current per step or constant."""
    T = 20
    net = ns.Network(dtype=dtype)
    net.add_population("s", 1, "source")
    net.add_population("h", 4, ns.LIF(leak=0.9))
    net.add_projection("W", "s", "h", ns.Dense(np.full((1, 4), 0.7797698974609375)))
    sp = np.zeros((1, T, 1), bool)
    sp[0, [0, 12], 0] = True
    cur = np.zeros((1, T, 4)) if current == "per_step" else np.zeros((1, 4))
    fwd = ns.run_forward(net, T, spikes={"s": sp}, currents={"h": cur}, record=True)
    path = write(tmp_path, "case1", net, fwd, spikes={"s": sp}, currents={"h": cur})
    check(path)


@pytest.mark.parametrize("t_ref", [0, 1])
def test_case2_rounding_of_sum(tmp_path, t_ref):
    """0.25 - 2^-26 at step 0 then 0.75 at step 1 into one float32 LIF neuron (v_th 1):
    u = r32(0.25 - 2^-26 + 0.75) = 1.0 -> spike at step 1."""
    T = 4
    net = ns.Network(dtype=np.float32)
    net.add_population("s", 2, "source")
    net.add_population("h", 1, ns.LIF(v_th=1.0, t_ref=t_ref))
    net.add_projection("W", "s", "h", ns.Dense(np.array([[0.25 - 2.0**-26], [0.75]])))
    sp = np.zeros((1, T, 2), bool)
    sp[0, 0, 0] = True
    sp[0, 1, 1] = True
    fwd = ns.run_forward(net, T, spikes={"s": sp}, record=True)
    path = write(tmp_path, "case2", net, fwd, spikes={"s": sp})
    r = check(path)
    assert r["forward"]["populations"]["h"]["counts"][0, 0] == 1


# --------------------------------------------------------------------------------------
# hand-built networks


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_mlp_feedback_backward(tmp_path, dtype):
    check(build_mlp_feedback_backward(tmp_path, dtype))


def build_mlp_feedback_backward(tmp_path, dtype):
    """Input map with bias, source spikes, dense, delay-1 feedback, leak; backward."""
    rng = np.random.default_rng(1)
    net = ns.Network(dtype=dtype)
    net.add_population("x", 6, "input")
    net.add_population("s", 5, "source")
    net.add_population("l0", 9, ns.LIF(leak=0.9))
    net.add_population("l1", 4, ns.LIF(v_th=0.7))
    net.add_projection("F", "x", "l0", ns.Dense(rng.normal(0, 0.5, (6, 9)),
                                                bias=rng.normal(0, 0.1, 9)))
    net.add_projection("S", "s", "l0", ns.Dense(rng.normal(0, 0.5, (5, 9))))
    net.add_projection("W", "l0", "l1", ns.Dense(rng.normal(0, 0.8, (9, 4)),
                                                 bias=rng.normal(0, 0.05, 4)))
    net.add_projection("fb", "l1", "l0", ns.Dense(rng.normal(0, 0.3, (4, 9)), delay=1))
    B, T = 3, 15
    x = rng.random((B, 6))
    x[0, 2] = 0.0
    sp = rng.random((B, T, 5)) < 0.3
    fwd = ns.run_forward(net, T, inputs={"x": x}, spikes={"s": sp}, record=True)
    g = {"l1": rng.normal(0, 0.5, (B, 4))}
    bwd = ns.run_backward(net, fwd, g, 25, record=True)
    path = write(tmp_path, "mlp", net, fwd, bwd, inputs={"x": x}, spikes={"s": sp}, grad=g)
    return path


def _sparse_dup(rng, n_pre, n_post, nnz_per_row):
    indptr = [0]
    indices = []
    for _ in range(n_pre):
        cols = np.sort(rng.integers(0, n_post, nnz_per_row))  # duplicates likely
        indices.extend(cols.tolist())
        indptr.append(len(indices))
    indptr = np.array(indptr, np.int64)
    indices = np.array(indices, np.int32)
    return indptr, indices, rng.normal(0.3, 0.5, len(indices))


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_sparse_dup_delays_refractory_reset_masks_currents(tmp_path, dtype):
    check(build_sparse_dup_delays_refractory_reset_masks_currents(tmp_path, dtype))


def build_sparse_dup_delays_refractory_reset_masks_currents(tmp_path, dtype):
    """Sparse with duplicate synapses, delays 0/1/2, refractoriness, reset by value,
    dropout masks, constant and per-step currents, backward with masks."""
    rng = np.random.default_rng(2)
    net = ns.Network(dtype=dtype)
    net.add_population("s", 8, "source")
    net.add_population("a", 10, ns.LIF(v_th=0.8, leak=0.85, t_ref=2))
    net.add_population("b", 7, ns.LIF(v_th=0.6, reset="value", v_reset=0.1, t_ref=1))
    net.add_population("c", 5, ns.LIF(v_th=0.9, leak=0.95, reset="value", v_reset=-0.2))
    ip, ix, w = _sparse_dup(rng, 8, 10, 4)
    assert any(np.any(np.diff(ix[ip[j]:ip[j + 1]]) == 0) for j in range(8))
    net.add_projection("S", "s", "a", ns.Sparse(ip, ix, w, pre_shape=(8,), post_shape=(10,),
                                                bias=rng.normal(0, 0.1, 10)))
    ip2, ix2, w2 = _sparse_dup(rng, 10, 7, 3)
    net.add_projection("AB", "a", "b", ns.Sparse(ip2, ix2, w2, pre_shape=(10,), post_shape=(7,)))
    net.add_projection("AB2", "a", "b", ns.Dense(rng.normal(0, 0.4, (10, 7)), delay=2))
    net.add_projection("BC", "b", "c", ns.Dense(rng.normal(0.2, 0.5, (7, 5)),
                                                bias=rng.normal(0, 0.1, 5)))
    net.add_projection("CA", "c", "a", ns.Dense(rng.normal(0, 0.4, (5, 10)), delay=1))
    net.add_projection("CB", "c", "b", ns.Dense(rng.normal(0, 0.4, (5, 7)), delay=2))
    B, T = 3, 18
    sp = rng.random((B, T, 8)) < 0.4
    masks = {"AB": (rng.random((B, 7)) < 0.7) / 0.7, "BC": (rng.random((B, 5)) < 0.8) / 0.8,
             "S": (rng.random((B, 10)) < 0.75) / 0.75}
    cur = {"b": rng.normal(0.05, 0.1, (B, 7)), "c": rng.normal(0.0, 0.2, (B, T, 5))}
    fwd = ns.run_forward(net, T, spikes={"s": sp}, currents=cur, masks=masks, record=True)
    g = {"c": rng.normal(0, 0.5, (B, 5)), "b": rng.normal(0, 0.3, (B, 7))}
    bwd = ns.run_backward(net, fwd, g, 22, record=True)
    path = write(tmp_path, "sparse", net, fwd, bwd, spikes={"s": sp}, currents=cur, grad=g)
    with h5py.File(path) as f:
        assert set(f["forward/masks"]) == set(masks)
    return path


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_conv_pool_convT_backward(tmp_path, dtype):
    check(build_conv_pool_convT_backward(tmp_path, dtype))


def build_conv_pool_convT_backward(tmp_path, dtype):
    """conv2d (stride 1, padding 1, bias) input map on per-step [B,T,C,H,W] inputs,
    avgpool2d, conv2d stride 2 between spiking layers, conv_transpose2d feedback
    (stride 2, output_padding), sumpool2d, dense readout; backward with a stored gate."""
    rng = np.random.default_rng(3)
    net = ns.Network(dtype=dtype)
    net.add_population("x", (2, 6, 6), "input")
    net.add_population("c0", (3, 6, 6), ns.LIF(leak=0.9))
    net.add_population("p0", (3, 3, 3), ns.LIF(v_th=0.5))
    net.add_population("c1", (2, 2, 2), ns.LIF(v_th=0.6, leak=0.95))
    net.add_population("q", (2, 1, 1), ns.LIF(v_th=0.5))
    net.add_population("o", 3, ns.LIF())
    net.add_projection("enc", "x", "c0", ns.Conv2d(rng.normal(0, 0.5, (3, 2, 3, 3)),
                                                   pre_shape=(2, 6, 6), padding=1,
                                                   bias=rng.normal(0.1, 0.05, 3)))
    net.add_projection("pool", "c0", "p0", ns.AvgPool2d(2, pre_shape=(3, 6, 6)))
    net.add_projection("cv", "p0", "c1", ns.Conv2d(rng.normal(0.2, 0.6, (2, 3, 2, 2)),
                                                   pre_shape=(3, 3, 3), stride=2, padding=1))
    net.add_projection("fb", "c1", "p0", ns.ConvTranspose2d(
        rng.normal(0, 0.3, (2, 3, 2, 2)), pre_shape=(2, 2, 2), stride=2, padding=1,
        output_padding=1, delay=1))
    net.add_projection("sp", "c1", "q", ns.SumPool2d(2, pre_shape=(2, 2, 2)))
    net.add_projection("ro", "q", "o", ns.Dense(rng.normal(0.3, 0.5, (2, 3))))
    B, T = 2, 12
    x = rng.random((B, T, 2, 6, 6)) * (rng.random((B, T, 2, 6, 6)) < 0.6)
    fwd = ns.run_forward(net, T, inputs={"x": x}, record=True)
    g = {"o": rng.normal(0, 0.5, (B, 3)), "c1": rng.normal(0, 0.3, (B, 8))}
    gate = {"p0": rng.random((B, 27)) < 0.8}
    bwd = ns.run_backward(net, fwd, g, 20, gate=gate, record=True)
    path = write(tmp_path, "conv", net, fwd, bwd, inputs={"x": x}, grad=g, gate=gate)
    with h5py.File(path) as f:
        assert "gate" in f["backward"]
    return path


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_constant_chw_input_and_two_inputs(tmp_path, dtype):
    check(build_constant_chw_input_and_two_inputs(tmp_path, dtype))


def build_constant_chw_input_and_two_inputs(tmp_path, dtype):
    """Two input populations (constant [B,C,H,W] and per-step [B,T,n]) into one layer,
    an input-map mask, currents [n]."""
    rng = np.random.default_rng(4)
    net = ns.Network(dtype=dtype)
    net.add_population("z", 5, "input")
    net.add_population("img", (1, 4, 4), "input")
    net.add_population("h", (2, 4, 4), ns.LIF(leak=0.9))
    net.add_population("o", 4, ns.LIF(v_th=0.8))
    net.add_projection("Ci", "img", "h", ns.Conv2d(rng.normal(0, 0.6, (2, 1, 3, 3)),
                                                   pre_shape=(1, 4, 4), padding=1,
                                                   bias=rng.normal(0, 0.1, 2)))
    net.add_projection("Z", "z", "h", ns.Dense(rng.normal(0, 0.3, (5, 32)),
                                               bias=rng.normal(0, 0.1, 32)))
    net.add_projection("HO", "h", "o", ns.Dense(rng.normal(0.1, 0.3, (32, 4))))
    B, T = 2, 10
    img = rng.random((B, 1, 4, 4))
    z = rng.normal(0, 1, (B, T, 5))
    masks = {"Ci": (rng.random((B, 32)) < 0.7) / 0.7}
    cur = {"o": rng.normal(0, 0.1, 4)}
    fwd = ns.run_forward(net, T, inputs={"img": img, "z": z}, masks=masks, currents=cur,
                         record=True)
    path = write(tmp_path, "two_inputs", net, fwd, inputs={"img": img, "z": z}, currents=cur)
    return path


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_cuba_lif(tmp_path, dtype):
    check(build_cuba_lif(tmp_path, dtype))


def build_cuba_lif(tmp_path, dtype):
    """CubaLIF with two ports (one tau_syn == tau_mem), v_rest, i_e, refractoriness,
    input map with bias, source spikes, masked projection, delay 1."""
    rng = np.random.default_rng(5)
    net = ns.Network(dtype=dtype)
    net.add_population("s", 6, "source")
    net.add_population("x", 3, "input")
    net.add_population("c", 5, ns.CubaLIF(v_rest=-0.1, v_th=0.4, v_reset=-0.2, tau_mem=7.0,
                                          tau_syn=(3.0, 7.0), t_ref=2.0, i_e=0.03, dt=0.5))
    net.add_population("d", 4, ns.CubaLIF(tau_mem=10.0, tau_syn=(4.0,), v_th=0.3))
    net.add_projection("S0", "s", "c", ns.Dense(rng.normal(0.3, 0.5, (6, 5)), port=0))
    net.add_projection("S1", "s", "c", ns.Dense(rng.normal(0.2, 0.5, (6, 5)), port=1))
    net.add_projection("X", "x", "c", ns.Dense(rng.normal(0, 0.3, (3, 5)),
                                               bias=rng.normal(0, 0.05, 5)))
    net.add_projection("CD", "c", "d", ns.Dense(rng.normal(0.5, 0.5, (5, 4))))
    net.add_projection("DC", "d", "c", ns.Dense(rng.normal(0, 0.5, (4, 5)), delay=1, port=1))
    B, T = 2, 30
    sp = rng.random((B, T, 6)) < 0.3
    x = rng.random((B, 3))
    masks = {"CD": (rng.random((B, 4)) < 0.7) / 0.7}
    fwd = ns.run_forward(net, T, spikes={"s": sp}, inputs={"x": x}, masks=masks, record=True)
    assert fwd.counts["c"].sum() > 0
    path = write(tmp_path, "cuba", net, fwd, spikes={"s": sp}, inputs={"x": x})
    return path


def test_ternary_leak_and_params(tmp_path):
    check(build_ternary_leak_and_params(tmp_path))


def build_ternary_leak_and_params(tmp_path):
    """Backward with non-default ternary parameters (leak, v_th, subtract) and
    neuron.subtract != 2 v_th, float32."""
    rng = np.random.default_rng(6)
    net = ns.Network(dtype=np.float32)
    net.add_population("x", 4, "input")
    net.add_population("a", 6, ns.LIF(v_th=0.7, subtract=1.1, leak=0.9),
                       ternary=ns.Ternary(v_th=0.3, subtract=0.7, leak=0.95))
    net.add_population("b", 3, ns.LIF(v_th=0.5), ternary=ns.Ternary(v_th=0.2, subtract=0.3))
    net.add_projection("F", "x", "a", ns.Dense(rng.normal(0.2, 0.5, (4, 6))))
    net.add_projection("AB", "a", "b", ns.Dense(rng.normal(0.2, 0.6, (6, 3))))
    net.add_projection("BA", "b", "a", ns.Dense(rng.normal(0, 0.3, (3, 6)), delay=2))
    B, T = 2, 12
    x = rng.random((B, 4))
    fwd = ns.run_forward(net, T, inputs={"x": x}, record=True)
    g = {"b": rng.normal(0, 0.3, (B, 3))}
    bwd = ns.run_backward(net, fwd, g, 30, record=True)
    path = write(tmp_path, "ternary", net, fwd, bwd, inputs={"x": x}, grad=g)
    return path


# --------------------------------------------------------------------------------------
# the CLI


@pytest.mark.parametrize("model,extra", [
    ("fsnn_mlp", ["--input", "digits", "--n-samples", "2", "--steps", "8",
                  "--backward-steps", "15", "--grad", "random"]),
    ("test_conv", ["--input", "digits", "--n-samples", "1", "--steps", "6",
                   "--backward-steps", "8", "--grad", "random"]),
])
def test_cli_simulate(tmp_path, model, extra):
    from click.testing import CliRunner
    from neurosim.cli import main

    out = str(tmp_path / f"{model}.h5")
    res = CliRunner().invoke(main, ["simulate", "--model", model, *extra, "--record",
                                    "--out", out])
    assert res.exit_code == 0, res.output
    check(out)


def test_cli_simulate_sparse_source(tmp_path):
    """test_sparse (float32, source spikes given as .npy)."""
    from click.testing import CliRunner
    from neurosim.cli import main

    rng = np.random.default_rng(7)
    sp = (rng.random((2, 10, 50)) < 0.2).astype(np.float64)
    np.save(tmp_path / "s.npy", sp)
    out = str(tmp_path / "sparse.h5")
    res = CliRunner().invoke(main, ["simulate", "--model", "test_sparse", "--input",
                                    str(tmp_path / "s.npy"), "--steps", "10",
                                    "--backward-steps", "12", "--grad", "random",
                                    "--record", "--out", out])
    assert res.exit_code == 0, res.output
    check(out)


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_source_chw_overlapping_pools(tmp_path, dtype):
    """Source spikes given as [B, T, C, H, W]; overlapping avgpool2d (k 3, stride 1,
    weight 1/9, not dyadic) and sumpool2d (k 2, stride 1); conv2d without padding."""
    rng = np.random.default_rng(8)
    net = ns.Network(dtype=dtype)
    net.add_population("s", (2, 5, 5), "source")
    net.add_population("a", (2, 3, 3), ns.LIF(v_th=0.3, leak=0.9))
    net.add_population("b", (2, 2, 2), ns.LIF(v_th=0.4, t_ref=1))
    net.add_population("c", (3, 3, 3), ns.LIF(v_th=0.5, leak=0.8))
    net.add_projection("ap", "s", "a", ns.AvgPool2d(3, pre_shape=(2, 5, 5), stride=1))
    net.add_projection("sp", "a", "b", ns.SumPool2d(2, pre_shape=(2, 3, 3), stride=1))
    net.add_projection("cv", "s", "c", ns.Conv2d(rng.normal(0.1, 0.4, (3, 2, 3, 3)),
                                                 pre_shape=(2, 5, 5)))
    net.add_projection("ca", "c", "a", ns.Conv2d(rng.normal(0, 0.3, (2, 3, 1, 1)),
                                                 pre_shape=(3, 3, 3), delay=2))
    B, T = 2, 14
    sp = rng.random((B, T, 2, 5, 5)) < 0.35
    fwd = ns.run_forward(net, T, spikes={"s": sp}, record=True)
    g = {"b": rng.normal(0, 0.4, (B, 8))}
    bwd = ns.run_backward(net, fwd, g, 16, record=True)
    path = write(tmp_path, "chw", net, fwd, bwd, spikes={"s": sp}, grad=g)
    with h5py.File(path) as f:
        assert f["forward/source_spikes/s"].ndim == 5
    check(path)


# --------------------------------------------------------------------------------------
# where the file is not enough (documented gaps; strict xfails: they start failing if
# neurosim or the file format change)


def _two_inputs_run(tmp_path, dict_order):
    """Two constant inputs into one neuron; total = bias 1 + 2^-53 (map of 'ain') - 1
    (map of 'zin'): the float64 sum depends on the order of the two maps."""
    e = 2.0**-53
    net = ns.Network(dtype=np.float64)
    net.add_population("zin", 1, "input")
    net.add_population("ain", 1, "input")
    net.add_population("h", 1, ns.LIF(v_th=100.0))
    net.add_projection("Pz", "zin", "h", ns.Dense(np.array([[-1.0]])))
    net.add_projection("Pa", "ain", "h", ns.Dense(np.array([[e]]), bias=np.array([1.0])))
    inputs = {k: np.ones((1, 1)) for k in dict_order}
    fwd = ns.run_forward(net, 3, inputs=inputs)
    return write(tmp_path, "order_" + "_".join(dict_order), net, fwd, inputs=inputs)


@pytest.mark.parametrize("dict_order", [("ain", "zin"), ("zin", "ain")])
def test_input_map_order(tmp_path, dict_order):
    """Input maps are summed in projection declaration order, whatever the order of the
    caller's `inputs` mapping: both orders re-simulate."""
    check(_two_inputs_run(tmp_path, dict_order))


@pytest.mark.xfail(strict=True, reason="GAP: run_forward(v_init=...) is not stored")
def test_cuba_v_init_not_stored(tmp_path):
    net = ns.Network(dtype=np.float64)
    net.add_population("s", 1, "source")
    net.add_population("c", 2, ns.CubaLIF(v_th=1.0))
    net.add_projection("W", "s", "c", ns.Dense(np.array([[0.3, 0.2]])))
    sp = np.zeros((1, 5, 1), bool)
    fwd = ns.run_forward(net, 5, spikes={"s": sp}, v_init={"c": np.array([0.5, 1.5])})
    check(write(tmp_path, "v_init", net, fwd, spikes={"s": sp}))


# --------------------------------------------------------------------------------------
# the readings of the original document that the files contradict (each must fail, so
# the conventions used by schema_resim are the only ones that fit)

LITERAL = {
    # "Every stored parameter is read as float64 and used as r(value): weights, ...,
    #  the masks r(mask)" applied to the float64 constant-current sum as well:
    "map_weights_rounded": ({"map_rw": True}, "mlp", np.float32),
    "biases_rounded": ({"bias_r": True}, "sparse", np.float32),
    "masks_rounded_in_const": ({"mask_r": True}, "sparse", np.float32),
    # CubaLIF "else if v >= v_th it spikes ...; otherwise v = acc" with v the old potential
    "cuba_threshold_on_old_v": ({"cuba_check": "old"}, "cuba", np.float64),
}


@pytest.mark.parametrize("key", sorted(LITERAL))
def test_literal_readings_disagree(tmp_path, key, monkeypatch):
    opts, case, dtype = LITERAL[key]
    build = {"mlp": build_mlp_feedback_backward,
             "sparse": build_sparse_dup_delays_refractory_reset_masks_currents,
             "cuba": build_cuba_lif}[case]
    path = build(tmp_path, dtype)
    assert R.compare(path) == []
    monkeypatch.setattr(R, "OPT", {**R.OPT, **opts})
    assert R.compare(path) != []
