"""Model files: the shipped models load, every validation error names what is wrong."""
import copy
import math

import numpy as np
import pytest

import neurosim as ns
from neurosim import models as M
from neurosim.io.model_file import ModelError, list_models
from neurosim.models import load_model, model_from_dict


def _mlp():
    """A parsed copy of a small valid model dict (edited by the error tests)."""
    return {
        "format": "neurosim-model/1", "name": "t", "dtype": "float64",
        "populations": [
            {"name": "x", "shape": [6], "kind": "input"},
            {"name": "l0", "shape": [5], "kind": "lif", "v_th": 1.0, "ternary": {"v_th": 0.5}},
            {"name": "l1", "shape": [4], "kind": "lif"},
        ],
        "projections": [
            {"name": "F", "pre": "x", "post": "l0", "kind": "dense", "bias": True},
            {"name": "W", "pre": "l0", "post": "l1", "kind": "dense"},
            {"name": "B", "pre": "l1", "post": "l0", "kind": "dense", "delay": 1,
             "init_scale": 0.1},
        ],
        "training": {"readout": {"classes": 10}},
    }


# -- shipped models ----------------------------------------------------------------------
def test_list_models_has_the_shipped_files():
    assert {"fsnn_mlp", "test_conv", "test_sparse"} <= set(list_models())


@pytest.mark.parametrize("name", ["fsnn_mlp", "test_conv", "test_sparse"])
def test_shipped_models_load_and_run(name):
    net = load_model(name, seed=3)
    assert net.name == name
    assert net.metadata["model"] == name and net.metadata["seed"] == 3
    kinds = {p.kind for p in net.populations.values()}
    batch = 2
    if "input" in kinds:
        x = {p.name: np.random.default_rng(0).random((batch, p.n))
             for p in net.populations.values() if p.kind == "input"}
        r = ns.run_forward(net, 5, inputs=x)
    else:
        s = {p.name: np.random.default_rng(0).random((batch, 5, p.n)) < 0.3
             for p in net.populations.values() if p.kind == "source"}
        r = ns.run_forward(net, 5, spikes=s)
    assert r.batch == batch


def test_fsnn_mlp_structure():
    net = load_model("fsnn_mlp")
    assert [(p.name, p.kind, p.shape) for p in net.populations.values()] == [
        ("x", "input", (64,)), ("l0", "lif", (128,)), ("l1", "lif", (64,))]
    F, W1, B = (net.projections[k] for k in ("F", "W1", "B"))
    assert (F.pre, F.post, F.delay, F.bias is not None) == ("x", "l0", 0, True)
    assert (W1.pre, W1.post, W1.delay, W1.bias is not None) == ("l0", "l1", 0, True)
    assert (B.pre, B.post, B.delay, B.bias is None) == ("l1", "l0", 1, True)
    assert net.metadata["training"]["readout"] == {"classes": 10}
    assert net.metadata["training"]["dataset"] == "digits"
    assert net.populations["l0"].ternary.v_th == 0.5


def test_conv_and_sparse_models_have_the_promised_kinds():
    conv = load_model("test_conv")
    assert {q.kind for q in conv.projections.values()} == {"conv2d", "avgpool2d", "conv_transpose2d"}
    fb = [q for q in conv.projections.values() if q.kind == "conv_transpose2d"][0]
    assert fb.delay == 1
    sp = load_model("test_sparse")
    assert {p.kind for p in sp.populations.values()} == {"source", "lif"}
    assert {q.kind for q in sp.projections.values()} == {"sparse"}


def test_seed_determinism_and_per_name_streams():
    a, b, c = load_model("fsnn_mlp", seed=1), load_model("fsnn_mlp", seed=1), load_model("fsnn_mlp", seed=2)
    np.testing.assert_array_equal(a.projections["W1"].weight, b.projections["W1"].weight)
    assert not np.array_equal(a.projections["W1"].weight, c.projections["W1"].weight)
    # removing a projection does not change the weights of the others
    d = _mlp()
    full = model_from_dict(d, seed=5)
    del d["projections"][2]
    part = model_from_dict(d, seed=5)
    np.testing.assert_array_equal(full.projections["W"].weight, part.projections["W"].weight)


def test_sparse_connectivity_is_seeded():
    a, b = load_model("test_sparse", seed=7), load_model("test_sparse", seed=7)
    np.testing.assert_array_equal(a.projections["rec"].indices, b.projections["rec"].indices)
    rec = a.projections["rec"]
    assert not np.any(rec.pre_index() == rec.indices.astype(np.int64))   # allow_self = false
    np.testing.assert_array_equal(a.projections["out"].in_degree(), 10)  # fan_in = 10


# -- initialisations -----------------------------------------------------------------------
def _one_proj(kind="dense", pre=(400,), post=(300,), **kw):
    d = {"format": "neurosim-model/1", "dtype": "float64",
         "populations": [{"name": "a", "shape": list(pre), "kind": "source"},
                         {"name": "b", "shape": list(post), "kind": "lif"}],
         "projections": [dict({"name": "p", "pre": "a", "post": "b", "kind": kind}, **kw)]}
    return model_from_dict(d, seed=0).projections["p"]


def test_kaiming_normal_std():
    w = _one_proj(init="kaiming_normal").weight
    assert abs(w.std() / math.sqrt(2 / 400) - 1) < 0.02
    w = _one_proj("conv2d", (3, 12, 12), (8, 10, 10), kernel=3).weight
    assert w.shape == (8, 3, 3, 3)
    assert abs(w.std() / math.sqrt(2 / 27) - 1) < 0.15
    w = _one_proj("sparse", p=0.25, init_scale=2.0).weight
    assert abs(w.std() / (2 * math.sqrt(2 / 100)) - 1) < 0.05


def test_uniform_unit_norm_per_output_filter():
    w = _one_proj(init="uniform_unit_norm", init_scale=0.5).weight
    np.testing.assert_allclose(np.linalg.norm(w, axis=0), 0.5)
    w = _one_proj("conv2d", (3, 6, 6), (4, 4, 4), kernel=3, init="uniform_unit_norm").weight
    np.testing.assert_allclose(np.sqrt((w ** 2).sum(axis=(1, 2, 3))), 1.0)
    w = _one_proj("conv_transpose2d", (4, 3, 3), (2, 6, 6), kernel=2, stride=2,
                  init="uniform_unit_norm", init_scale=0.1).weight
    assert w.shape == (4, 2, 2, 2)
    np.testing.assert_allclose(np.sqrt((w ** 2).sum(axis=(0, 2, 3))), 0.1)
    pr = _one_proj("sparse", fan_in=5, init="uniform_unit_norm")
    norms = np.sqrt(np.bincount(pr.indices.astype(np.int64), pr.weight ** 2, minlength=300))
    np.testing.assert_allclose(norms, 1.0)


def test_normal_constant_zeros_and_bias():
    w = _one_proj(init="normal", init_scale=0.3).weight
    assert abs(w.std() / 0.3 - 1) < 0.02
    np.testing.assert_array_equal(_one_proj(init="constant", init_scale=0.25).weight, 0.25)
    np.testing.assert_array_equal(_one_proj(init="zeros").weight, 0.0)
    pr = _one_proj(bias=True, bias_value=0.5)
    np.testing.assert_array_equal(pr.bias, 0.5)
    pr = _one_proj("conv2d", (2, 5, 5), (3, 5, 5), kernel=3, padding=1, bias=True)
    assert pr.bias.shape == (3,)


def test_cuba_lif_population_and_port():
    d = {"format": "neurosim-model/1",
         "populations": [{"name": "s", "shape": [4], "kind": "source"},
                         {"name": "c", "shape": [3], "kind": "cuba_lif", "tau_syn": [5.0, 10.0],
                          "v_th": 1.0, "tau_mem": 10.0}],
         "projections": [{"name": "p", "pre": "s", "post": "c", "kind": "dense", "port": 1}]}
    net = model_from_dict(d)
    assert isinstance(net.populations["c"].neuron, ns.CubaLIF)
    assert net.populations["c"].neuron.tau_syn == (5.0, 10.0)
    assert net.projections["p"].port == 1
    d["projections"][0]["port"] = 2
    with pytest.raises(ModelError, match=r"projections\]\] 'p'.*port 2 but 'c' has 2 receptor ports"):
        model_from_dict(d)


# -- loading errors -------------------------------------------------------------------------
def test_unknown_model_name_lists_known():
    with pytest.raises(ModelError, match=r"unknown model 'nope'.*known names: \[.*'fsnn_mlp'"):
        load_model("nope")


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match=r"model file .*missing\.toml' does not exist"):
        load_model(tmp_path / "missing.toml")


def test_malformed_toml(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('format = "neurosim-model/1"\n[[populations]\nname = "x"\n')
    with pytest.raises(ModelError, match=r"bad\.toml' is not valid TOML"):
        load_model(p)


def test_models_dir_env(tmp_path, monkeypatch):
    (tmp_path / "mine.toml").write_text(
        'format = "neurosim-model/1"\n[[populations]]\nname = "a"\nshape = [3]\nkind = "lif"\n')
    monkeypatch.setenv("NEUROSIM_MODELS", str(tmp_path))
    assert list_models() == ["mine"]
    assert load_model("mine").name == "mine"
    with pytest.raises(ModelError, match=r"known names: \['mine'\]"):
        load_model("fsnn_mlp")


def _err(edit, match):
    d = _mlp()
    edit(d)
    with pytest.raises(ModelError, match=match):
        model_from_dict(d, source="m.toml")


def test_unknown_keys_name_key_table_and_allowed():
    _err(lambda d: d.update(colour="red"),
         r"m\.toml: unknown key 'colour' in the top-level table; allowed keys: \['description'")
    _err(lambda d: d["populations"][1].update(v_thr=1.0),
         r"unknown key 'v_thr' in \[\[populations\]\] 'l0' \(kind 'lif'\); allowed keys: .*'v_th'")
    _err(lambda d: d["populations"][0].update(v_th=1.0),
         r"unknown key 'v_th' in \[\[populations\]\] 'x' \(kind 'input'\); allowed keys: \['kind', 'name', 'shape'\]")
    _err(lambda d: d["populations"][1]["ternary"].update(tau=3),
         r"unknown key 'tau' in the ternary table of \[\[populations\]\] 'l0'; allowed keys: \['leak', 'subtract', 'v_th'\]")
    _err(lambda d: d["projections"][1].update(stride=2),
         r"unknown key 'stride' in \[\[projections\]\] 'W' \(kind 'dense'\); allowed keys:")


def test_format_checks():
    _err(lambda d: d.pop("format"), r"missing the required key 'format'")
    _err(lambda d: d.update(format="neurosim-model/2"),
         r"format is 'neurosim-model/2'; this neurosim reads 'neurosim-model/1'")
    _err(lambda d: d.update(dtype="float16"), r"dtype must be 'float32' or 'float64', got 'float16'")
    _err(lambda d: d.update(populations=[]), r"at least one \[\[populations\]\]")


def test_unknown_kinds_and_inits():
    _err(lambda d: d["populations"][1].update(kind="izhikevich"),
         r"\[\[populations\]\] 'l0': unknown kind 'izhikevich'; allowed kinds: \['alif', 'cuba_lif', 'input', 'lif', 'source'\]")
    _err(lambda d: d["projections"][1].update(kind="conv3d"),
         r"\[\[projections\]\] 'W': unknown kind 'conv3d'; allowed kinds: \['avgpool2d', 'conv2d'")
    _err(lambda d: d["projections"][1].update(init="xavier"),
         r"unknown init 'xavier'; allowed: \['kaiming_normal', 'uniform_unit_norm'")


def test_wrong_shapes():
    _err(lambda d: d["populations"][1].update(shape=[5, 2]),
         r"\[\[populations\]\] 'l0': shape must be \[n\] or \[C, H, W\] with positive integers, got \[5, 2\]")
    _err(lambda d: d["populations"][1].update(shape=[0]), r"shape must be .* got \[0\]")
    _err(lambda d: d["populations"][1].pop("shape"), r"'l0' is missing the required key 'shape'")
    # conv projection whose output does not fit the post population
    def conv(d):
        d["populations"] = [{"name": "a", "shape": [1, 8, 8], "kind": "input"},
                            {"name": "b", "shape": [4, 8, 8], "kind": "lif"}]
        d["projections"] = [{"name": "c", "pre": "a", "post": "b", "kind": "conv2d", "kernel": 3}]
    _err(conv, r"the conv2d projection produces shape \[4, 6, 6\] from 'a' of shape \[1, 8, 8\], "
               r"but post population 'b' has shape \[4, 8, 8\]")
    def flat_conv(d):
        d["projections"][1].update(kind="conv2d", kernel=3)
    _err(flat_conv, r"a conv2d projection needs a \(C, H, W\) pre population; 'l0' has shape \[5\]")


def test_nonexistent_population():
    _err(lambda d: d["projections"][1].update(post="l9"),
         r"\[\[projections\]\] 'W': post population 'l9' does not exist; populations: \['x', 'l0', 'l1'\]")
    _err(lambda d: d["projections"][1].pop("pre"), r"'W' is missing the required key 'pre'")


def test_feedback_loop_without_delay():
    _err(lambda d: d["projections"][2].update(delay=0),
         r"\[\[projections\]\] 'B' \(l1 -> l0\): feedback loop without delay among populations "
         r"\['l0', 'l1'\].*delay >= 1")
    _err(lambda d: d["projections"].append({"name": "S", "pre": "l0", "post": "l0", "kind": "dense"}),
         r"'S' \(l0 -> l0\): .*connects 'l0' to itself with delay 0")


def test_bad_neuron_parameters():
    _err(lambda d: d["populations"][1].update(v_th=-1.0),
         r"\[\[populations\]\] 'l0': LIF\.v_th must be > 0, got -1\.0")
    _err(lambda d: d["populations"][1].update(v_th=0),
         r"LIF\.v_th must be > 0, got 0")
    _err(lambda d: d["populations"][1]["ternary"].update(v_th=0.0),
         r"'l0' ternary: Ternary\.v_th must be > 0")
    _err(lambda d: d["populations"][1].update(v_th="1"), r"LIF\.v_th must be a real number, got str")
    _err(lambda d: d["populations"][1].update(leak=1.5), r"LIF\.leak must be <= 1\.0, got 1\.5")


def test_bad_projection_values():
    _err(lambda d: d["projections"][1].update(delay=-1), r"'W' \(l0 -> l1\): delay must be >= 0, got -1")
    _err(lambda d: d["projections"][1].update(delay=1.5), r"delay must be an integer, got float 1\.5")
    _err(lambda d: d["projections"][1].update(bias="yes"), r"bias must be true or false")
    _err(lambda d: d["projections"][1].update(kind="sparse"), r"needs exactly one of 'p'")
    _err(lambda d: d["projections"][1].update(kind="sparse", p=1.5), r"p must be <= 1\.0")
    _err(lambda d: d["projections"][1].update(kind="sparse", fan_in=6),
         r"fan_in must be <= n_pre = 5, got 6")
    _err(lambda d: d["projections"].append({"name": "l1", "pre": "l0", "post": "l1", "kind": "dense"}),
         r"name 'l1' is already used")
    _err(lambda d: d["projections"].append({"name": "x/y", "pre": "l0", "post": "l1", "kind": "dense"}),
         r"name 'x/y' must start with a letter")
    _err(lambda d: d["projections"].append({"name": "G", "pre": "l0", "post": "x", "kind": "dense"}),
         r"'G' \(l0 -> x\): .*cannot receive synapses")


def test_no_spiking_population():
    d = {"format": "neurosim-model/1", "populations": [{"name": "x", "shape": [3], "kind": "input"}]}
    with pytest.raises(ModelError, match="no spiking population"):
        model_from_dict(d)


def test_seed_must_be_nonnegative_int():
    with pytest.raises(ModelError, match="seed must be a non-negative integer"):
        model_from_dict(_mlp(), seed=-1)


def test_model_info_totals():
    info = M.model_info(load_model("fsnn_mlp"))
    t = info["totals"]
    assert t["neurons"] == 256 and t["spiking_neurons"] == 192
    assert t["synapses"] == 3 * 128 * 64
    assert t["parameters"] == 3 * 128 * 64 + 128 + 64
    text = M.format_model_info(info)
    assert "F     dense (input map)" in text and "totals:" in text


def test_example_lenet_theta_b_differs_only_in_l0s_backward_threshold():
    """examples/models/lenet_mnist_theta_b.toml is lenet_mnist with l0's θ_b = 0.0625
    (docs/training.md, "Backward resolution"): same weights for the same seed, same
    training table, only that one ternary threshold changed."""
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "examples" / "models" / "lenet_mnist_theta_b.toml"
    a, b = load_model("lenet_mnist", seed=3), load_model(str(path), seed=3)
    assert list(a.populations) == list(b.populations)
    for name in a.populations:
        ta, tb = a.populations[name].ternary, b.populations[name].ternary
        if name == "l0":
            assert (ta.v_th, tb.v_th) == (0.5, 0.0625)
        else:
            assert ta == tb
    for name, pr in a.projections.items():
        ga, wa = pr.to_stored()
        gb, wb = b.projections[name].to_stored()
        assert ga == gb and list(wa) == list(wb)
        for k in wa:
            np.testing.assert_array_equal(wa[k], wb[k])
    assert a.metadata["training"] == b.metadata["training"]
