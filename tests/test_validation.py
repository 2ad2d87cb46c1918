"""Bad input gets a clear error naming what arrived and what is allowed."""
import pathlib
import re

import numpy as np
import pytest

import neurosim as ns
from neurosim._validate import NeurosimError


def _net():
    net = ns.Network(dtype=np.float64)
    net.add_population("x", 4, "input")
    net.add_population("a", 3, ns.LIF())
    net.add_population("b", 2, ns.LIF())
    return net


def test_threshold_must_be_positive():
    with pytest.raises(NeurosimError, match=r"LIF.v_th must be > 0, got -1.0"):
        ns.LIF(v_th=-1.0)
    with pytest.raises(NeurosimError, match=r"LIF.v_th must be > 0, got 0.0"):
        ns.LIF(v_th=0)
    with pytest.raises(NeurosimError, match=r"Ternary.v_th must be > 0"):
        ns.Ternary(v_th=0.0)
    with pytest.raises(NeurosimError, match=r"finite"):
        ns.LIF(v_th=float("nan"))
    with pytest.raises(NeurosimError, match=r"LIF.leak must be <= 1.0, got 1.5"):
        ns.LIF(leak=1.5)
    with pytest.raises(TypeError, match=r"LIF.t_ref must be an integer"):
        ns.LIF(t_ref=1.5)
    with pytest.raises(NeurosimError, match=r"LIF.reset must be one of \['subtract', 'value'\], got 'zero'"):
        ns.LIF(reset="zero")


def test_shape_mismatch():
    net = _net()
    with pytest.raises(NeurosimError, match=r"pre shape \(5,\) does not match population 'x' of shape \(4,\)"):
        net.add_projection("F", "x", "a", ns.Dense(np.zeros((5, 3))))
    with pytest.raises(NeurosimError, match=r"dense weight must have shape \(n_pre, n_post\) = \(4, 3\), got \(4, 2\)"):
        ns.Dense(np.zeros((4, 2)), pre_shape=4, post_shape=3)
    with pytest.raises(NeurosimError, match=r"conv2d weight has C_in=2 but the pre population has 1 channels"):
        ns.Conv2d(np.zeros((3, 2, 3, 3)), pre_shape=(1, 8, 8))


def test_nan_and_inf_weights():
    with pytest.raises(NeurosimError, match=r"dense weight contains NaN or inf \(first at index \(0, 1\)"):
        ns.Dense(np.array([[0.0, np.nan]]))
    with pytest.raises(NeurosimError, match=r"edge weights contains NaN or inf"):
        ns.Sparse.from_edges([0], [0], [np.inf], pre_shape=1, post_shape=1)
    with pytest.raises(NeurosimError, match=r"bias contains NaN"):
        ns.Dense(np.zeros((2, 2)), bias=[0.0, np.nan])


def test_negative_delay():
    with pytest.raises(NeurosimError, match=r"delay must be >= 0, got -1"):
        ns.Dense(np.zeros((3, 2)), delay=-1)


def test_feedback_loop_without_delay():
    net = _net()
    net.add_projection("W", "a", "b", ns.Dense(np.zeros((3, 2))))
    with pytest.raises(NeurosimError, match=r"feedback loop without delay among populations \['a', 'b'\]"):
        net.add_projection("fb", "b", "a", ns.Dense(np.zeros((2, 3))))
    assert "fb" not in net.projections            # the network is left unchanged
    net.add_projection("fb", "b", "a", ns.Dense(np.zeros((2, 3)), delay=1))
    with pytest.raises(NeurosimError, match=r"connects 'a' to itself with delay 0"):
        net.add_projection("self", "a", "a", ns.Dense(np.zeros((3, 3))))


def test_unknown_population_and_bad_inputs():
    net = _net()
    with pytest.raises(NeurosimError, match=r"post population 'c' does not exist; known: \['x', 'a', 'b'\]"):
        net.add_projection("W", "a", "c", ns.Dense(np.zeros((3, 2))))
    net.add_projection("F", "x", "a", ns.Dense(np.ones((4, 3))))
    with pytest.raises(NeurosimError, match=r"steps must be >= 1, got 0"):
        ns.run_forward(net, 0, inputs={"x": np.ones((2, 4))})
    with pytest.raises(NeurosimError, match=r"must have shape \(B, 4\).*got \(2, 5\)"):
        ns.run_forward(net, 3, inputs={"x": np.ones((2, 5))})
    with pytest.raises(NeurosimError, match=r"contains NaN or inf"):
        ns.run_forward(net, 3, inputs={"x": np.full((2, 4), np.nan)})
    with pytest.raises(NeurosimError, match=r"inputs given for unknown population 'y'"):
        ns.run_forward(net, 3, inputs={"y": np.ones((2, 4))})
    with pytest.raises(NeurosimError, match=r"inputs\['a'\]: 'a' is a lif population, not 'input'"):
        ns.run_forward(net, 3, inputs={"a": np.ones((2, 3))})
    with pytest.raises(NeurosimError, match=r"inconsistent batch sizes"):
        ns.run_forward(net, 3, inputs={"x": np.ones((2, 4))}, currents={"a": np.ones((3, 3))})


def test_csr_structure_is_checked():
    with pytest.raises(NeurosimError, match=r"indptr\[-1\] = 3 must equal nnz = 2"):
        ns.Sparse([0, 1, 3], [0, 1], [1.0, 1.0], pre_shape=2, post_shape=2)
    with pytest.raises(NeurosimError, match=r"indices must lie in \[0, 2\)"):
        ns.Sparse([0, 1, 2], [0, 5], [1.0, 1.0], pre_shape=2, post_shape=2)


def test_numba_flags_only_from_config():
    """House rule: kernels take Numba options from neurosim.config, never literals."""
    root = pathlib.Path(ns.__file__).parent
    offenders = []
    for f in root.rglob("*.py"):
        text = f.read_text()
        if f.parent.name != "kernels" and re.search(r"^\s*(import numba|from numba)", text, re.M):
            offenders.append(f"{f}: imports numba outside neurosim/kernels")
        for m in re.finditer(r"numba\.njit\(([^)]*)\)", text):
            if m.group(1).strip() not in ("**NJIT", "**NJIT_PARALLEL", "**NJIT_NORT", "**NJIT_INLINE"):
                offenders.append(f"{f}: numba.njit({m.group(1)})")
        if re.search(r"(fastmath|parallel|cache)\s*=\s*(True|False)", text) and f.name != "config.py":
            offenders.append(f"{f}: literal Numba flag")
    assert offenders == []


def test_conv_shape_must_match_exactly():
    net = ns.Network(dtype=np.float64)
    net.add_population("a", (2, 4, 4), ns.LIF())
    net.add_population("b", (2, 2, 8), ns.LIF())      # same neuron count, wrong geometry
    with pytest.raises(NeurosimError, match=r"avgpool2d post shape \(2, 2, 2\) does not match population 'b'"):
        net.add_projection("p", "a", "b", ns.AvgPool2d(2, pre_shape=(2, 4, 4)))


@pytest.mark.parametrize("value", ["abc", "-5", "nan", "inf"])
def test_bad_memory_size_in_the_environment_is_named(value, monkeypatch):
    from neurosim import config
    monkeypatch.setenv("NEUROSIM_BUFFER_CACHE_MB", value)
    with pytest.raises(ValueError, match=r"NEUROSIM_BUFFER_CACHE_MB=.*expected a size in MiB"):
        config._env_mib("NEUROSIM_BUFFER_CACHE_MB", 0)
    monkeypatch.setenv("NEUROSIM_BUFFER_CACHE_MB", "1.5")
    assert config._env_mib("NEUROSIM_BUFFER_CACHE_MB", 0) == int(1.5 * 2 ** 20)
    monkeypatch.delenv("NEUROSIM_BUFFER_CACHE_MB")
    assert config._env_mib("NEUROSIM_BUFFER_CACHE_MB", 7) == 7
