"""Energy estimates: the arithmetic on a hand-computed example, the shipped profiles,
user profiles and their errors."""
import numpy as np
import pytest

import neurosim as ns
from neurosim import ops
from neurosim.ops import energy as E

PROFILE = """
format = "neurosim-energy/1"
name = "toy"
description = "dyadic numbers, exact in binary"
source = "this test"
[energy_pj]
synaptic_op = 0.5
mac = 2.0
weight_update = 3.0
neuron_update = 0.25
idle_neuron = 0.125
"""


@pytest.fixture
def toy_profile(tmp_path):
    p = tmp_path / "toy.toml"
    p.write_text(PROFILE)
    return p


def _net():
    """x(4) -F-> h(2) -W-> o(3), feedback o -fb-> h with delay 1."""
    net = ns.Network(dtype=np.float64)
    net.add_population("x", 4, "input")
    net.add_population("h", 2, ns.LIF())
    net.add_population("o", 3, ns.LIF())
    net.add_projection("F", "x", "h", ns.Dense(np.ones((4, 2)), bias=np.zeros(2)))
    net.add_projection("W", "h", "o", ns.Dense(np.ones((2, 3))))
    net.add_projection("fb", "o", "h", ns.Dense(np.ones((3, 2)), delay=1))
    return net


def test_baseline_operation_counts_by_hand():
    b = ops.baseline_ops(_net(), 10)
    # dense MACs per step: F 8 (input map), W 6, fb 6 (feedback, delay 1); N = 5 neurons
    # weight-gradient MACs: F 8 + 2 bias terms, W 6, fb 6
    assert b["ann"]["inference"] == dict(macs=8 + 6, neuron_updates=5)
    assert b["ann"]["training"] == dict(macs=14 + (14 - 8) + (10 + 6), neuron_updates=10)
    assert b["bptt"]["inference"] == dict(macs=8 + 10 * 12, neuron_updates=50)
    assert b["bptt"]["training"] == dict(macs=8 + 10 * 12 + 10 * 12 + 10 * 12 + 10,
                                         neuron_updates=100)


def test_energy_arithmetic_on_a_known_example(toy_profile):
    counts = {
        "inference": dict(forward=dict(synaptic_operations=100, neuron_updates=40,
                                       dense_neuron_updates=50), input_encoding_macs=8),
        "training": dict(forward=dict(synaptic_operations=120, neuron_updates=45,
                                      dense_neuron_updates=50), input_encoding_macs=8,
                         backward=dict(synaptic_operations=30, neuron_updates=60,
                                       dense_neuron_updates=100), weight_update_macs=12),
    }
    e = ops.estimate_energy(counts, _net(), 10, toy_profile)
    # inference: 100 x 0.5 + 40 x 0.25 + (50 - 40) x 0.125 + 8 x 2
    assert e["snn"]["inference_pj"] == 77.25
    # training: forward 60 + 11.25 + 0.625, encoding 16, backward 15 + 15 + 5, update 36
    assert e["per_phase_pj"] == {"input_encoding": 16.0, "forward": 71.875, "backward": 35.0,
                                 "weight_update": 36.0}
    assert e["snn"]["training_pj"] == 158.875
    # baselines: MACs x 2 + neuron updates x 0.25 (see test_baseline_operation_counts_by_hand)
    assert e["ann"] == {"inference_pj": 14 * 2 + 5 * 0.25, "training_pj": 36 * 2 + 10 * 0.25}
    assert e["bptt"] == {"inference_pj": 128 * 2 + 50 * 0.25, "training_pj": 378 * 2 + 100 * 0.25}
    assert e["ratios"]["training_vs_ann"] == 158.875 / 74.5
    assert e["ratios"]["inference_vs_bptt"] == 77.25 / 268.5
    assert e["estimate"] is True and e["profile"]["name"] == "toy"
    assert any("memory traffic" in a for a in e["assumptions"])


def test_forward_only_run_has_no_training_energy():
    counts = {"inference": dict(forward=dict(synaptic_operations=10, neuron_updates=1,
                                             dense_neuron_updates=1), input_encoding_macs=0),
              "training": None}
    e = ops.estimate_energy(counts, _net(), 4)
    assert e["snn"]["training_pj"] is None and e["ratios"]["training_vs_ann"] is None
    assert e["snn"]["inference_pj"] == pytest.approx(10 * 0.9 + 1 * 0.9)


def test_estimate_from_a_table_uses_its_counts():
    net = _net()
    x = np.array([[0.5, 0.0, 0.25, 1.0]])
    fwd = ns.run_forward(net, 6, inputs={"x": x})
    bwd = ns.run_backward(net, fwd, {"o": [[0.3, -0.2, 0.1]]}, 8)
    tab = ops.table_from_phases(fwd, bwd, inputs={"x": x})
    t = tab.phase_totals()
    p = ops.load_profile()
    e = ops.estimate_table(tab, p)
    fw = t["forward"]
    want = (fw["synaptic_operations"] * p.synaptic_op + fw["neuron_updates"] * p.neuron_update
            + (fw["dense_neuron_updates"] - fw["neuron_updates"]) * p.idle_neuron
            + t["input_encoding"]["synaptic_operations"] * p.mac)
    assert e["snn"]["inference_pj"] == pytest.approx(want, rel=1e-12)
    assert e["per_phase_pj"]["weight_update"] == pytest.approx(
        t["weight_update"]["synaptic_operations"] * p.weight_update, rel=1e-12)


def test_shipped_profiles():
    assert set(ops.list_profiles()) >= {"cmos45-fp32", "loihi"}
    c = ops.load_profile("cmos45-fp32")
    assert (c.synaptic_op, c.mac) == (0.9, 4.6) and "Horowitz" in c.source
    assert ops.load_profile() == c                       # the default
    lo = ops.load_profile("loihi")
    assert (lo.synaptic_op, lo.neuron_update, lo.idle_neuron) == (23.6, 81.0, 52.0)
    assert "Davies" in lo.source and "IEEE Micro" in lo.source


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(E.EnergyError, match=r"unknown energy profile 'tpu'; known profiles: "
                                            r"cmos45-fp32, loihi"):
        ops.load_profile("tpu")


@pytest.mark.parametrize("edit, msg", [
    (lambda t: t.replace("mac = 2.0\n", ""), r"lacks \['mac'\]"),
    (lambda t: t.replace("mac = 2.0", "mac = -2.0"), "energy_pj.mac must be a finite number >= 0"),
    (lambda t: t.replace("mac = 2.0", "mac = 'two'"), "energy_pj.mac must be"),
    (lambda t: t + "flops = 1\n", r"unknown key\(s\) \['flops'\]"),
    (lambda t: t.replace("[energy_pj]", "[energy]"), "unknown key"),
    (lambda t: t.replace("neurosim-energy/1", "neurosim-energy/9"), "format is"),
    (lambda t: t.replace("=", ":", 1), "not valid TOML"),
])
def test_bad_user_profiles(tmp_path, edit, msg):
    p = tmp_path / "bad.toml"
    p.write_text(edit(PROFILE))
    with pytest.raises(E.EnergyError, match=msg):
        ops.load_profile(p)


def test_missing_profile_file(tmp_path):
    with pytest.raises(E.EnergyError, match="does not exist; known profiles"):
        ops.load_profile(tmp_path / "none.toml")
