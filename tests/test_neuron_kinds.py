"""The neuron-model interface (neurosim.neurons): registry, stored form, packing, model-file
keys and the dense step, checked for every registered model.  The rule that no code outside
neurons/ dispatches on neuron classes is in test_projection_kinds.py."""
import dataclasses

import numpy as np
import pytest

import neurosim as ns
from neurosim.kernels import layout as L
from neurosim.neurons import ALIF, BACKWARD_MODEL, NEURON_KINDS, NeuronModel


def _one_of_each():
    return [ns.LIF(v_th=0.75, leak=0.5, reset="value", v_reset=-0.25, t_ref=2),
            ns.CubaLIF(v_th=2.0, tau_syn=(4.0, 9.0), t_ref=3.0, i_e=0.5, dt=0.5),
            ALIF(v_th=0.75, leak=0.5, beta=0.25, rho=0.5),
            ns.Ternary(v_th=0.25, leak=0.75)]


def test_registry_names_every_model_once():
    assert set(NEURON_KINDS) == {"lif", "cuba_lif", "alif"}
    for kind, cls in NEURON_KINDS.items():
        assert cls.kind == kind and issubclass(cls, NeuronModel) and cls.role == "forward"
    assert BACKWARD_MODEL.role == "backward" and BACKWARD_MODEL.kind == "ternary"
    assert {type(m) for m in _one_of_each()} == set(NEURON_KINDS.values()) | {BACKWARD_MODEL}


@pytest.mark.parametrize("m", _one_of_each(), ids=lambda m: m.kind)
def test_stored_form_round_trips(m):
    d = m.to_dict()
    assert d["model"] == m.kind
    assert set(d) - {"model"} == set(type(m).keys()) == {f.name for f in dataclasses.fields(m)}
    assert type(m).from_dict(d) == m


@pytest.mark.parametrize("m", _one_of_each(), ids=lambda m: m.kind)
def test_pack_returns_the_model_code_and_its_leak(m):
    fp, ip = np.zeros(L.N_FP), np.zeros(L.N_IP, np.int64)
    syn = np.zeros((2, L.MAX_PORTS))
    assert m.pack(fp, ip, syn) == type(m).code
    assert fp[L.FP_VTH] == m.v_th
    assert fp[L.FP_LEAK] == m.leak and m.leaky == (m.leak != 1.0)


@pytest.mark.parametrize("m", _one_of_each(), ids=lambda m: m.kind)
def test_state_fields_and_dense_step(m):
    st = m.init_state(4)
    assert isinstance(st, type(m).State) and st._fields == type(m).State._fields
    cur = np.full((m.n_ports, 4), 100.0) if m.kind == "cuba_lif" else np.full(4, 3.0)
    s, st2 = m.step(st, cur)
    assert st2 is st and s.shape == (4,) and np.any(s != 0)


def test_population_kind_and_ports_come_from_the_model():
    net = ns.Network(dtype=np.float64)
    net.add_population("a", 3, ns.LIF())
    net.add_population("b", 3, ns.CubaLIF(tau_syn=(5.0, 7.0)))
    assert [p.kind for p in net.populations.values()] == ["lif", "cuba_lif"]
    net.add_projection("ab", "a", "b", ns.Dense(np.ones((3, 3)), port=1))
    with pytest.raises(ValueError, match="port 2 but 'b' has 2 receptor ports"):
        net.add_projection("ab2", "a", "b", ns.Dense(np.ones((3, 3)), port=2))
    with pytest.raises(TypeError, match="neuron must be LIF, CubaLIF"):
        net.add_population("c", 3, ns.Ternary())
    with pytest.raises(TypeError, match="ternary must be a Ternary"):
        net.add_population("d", 3, ns.LIF(), ternary=ns.LIF())
