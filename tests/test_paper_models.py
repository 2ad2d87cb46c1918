"""SPIDE's five architectures as model files: shapes, sizes, costs, init and [training].

The models are those of SPIDE (Xiao et al., Neural Networks 2023, arXiv:2302.00232), as built
by the reference code pkuxmq/SPIDE-FSNN; the numbers come from /work/shared/spec/SPIDE.md:
section 5 (shapes, initialisation, norm caps), section 1.5 (dropout), section 3 (script
defaults) and section 8 (neuron counts, dense MACs per step).

Counting conventions, worked out from the spec's numbers (every integer below was computed
by hand from the layer shapes, independently of ``neurosim``):

* **Neurons** are the *spiking* neurons only (the input image is not counted):
  LeNet 11760+2940+7840+1960+300 = 24,800 (24.8k; with the 784 input pixels it would be
  25.6k), ConvNet-F 12544+3136+3136 = 18,816 (18.8k), AlexNet-F 24576+65536+24576+24576+16384
  = 155,648 (156k), CIFARNet-F 32768+65536+32768+65536+32768 = 229,376 (229k), DVS 294,912
  (295k).
* **Dense MACs per forward step** count *every* map, the input map and the avg-pools
  included: C_out·H_out·W_out·C_in·k² per conv, C_in·H·W·C_out·k² per conv-transpose,
  C·H_out·W_out·k² per pool, n_in·n_out per FC; the non-spiking classifier is not counted.
  LeNet 294,000 + 11,760 + 2,940,000 + 7,840 + 588,000 = 3,841,600 (3.8M; without the
  input map it would be 3.5M, so the forward column includes it; with or without the pools
  it rounds to 3.8M, so the pools cannot be told apart and we count them, as
  ``dense_macs`` does), ConvNet-F 12,155,136 (12.2M), AlexNet-F 269,623,296 (270M),
  CIFARNet-F 793,608,192 (794M), DVS 3,822,649,344 (3.8G).
* The **backward-step** column of the same table (3.5M, 11.8M, 269M, 793M, 3.8G) is the same
  sum *without the input map* (no ternary spikes go back into the image): 3,547,600,
  11,841,536, 268,959,744, 792,723,456 and 3,774,873,600 — also checked below.
  (The table's T = 30 column is the rounded per-step figure times 30: 3.8M·30 = 0.11G,
  12.2M·30 = 0.37G, whereas the exact products are 0.115G and 0.365G.)
"""
import math
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import neurosim as ns
from neurosim.cli import main
from neurosim.io.model_file import list_models, models_dir
from neurosim.models import load_model, model_info

# -- the architectures of SPIDE.md section 5, written out layer by layer -----------------------
# projections: (name, kind, pre, post, C_in, C_out, k, stride, padding, output_padding, delay, bias)
#   kind: the neurosim projection kind; for "dense" (FC) C_in / C_out are n_in / n_out
_CONV, _CONVT, _POOL, _FC = "conv2d", "conv_transpose2d", "avgpool2d", "dense"

ARCH = {
    "lenet_mnist": dict(
        input=(1, 28, 28),
        layers=[(15, 28, 28), (15, 14, 14), (40, 14, 14), (40, 7, 7), (300,)],
        projections=[
            ("F", _CONV, "x", "l0", 1, 15, 5, 1, 2, 0, 0, True),
            ("P1", _POOL, "l0", "l1", 15, 15, 2, 2, 0, 0, 0, False),
            ("W2", _CONV, "l1", "l2", 15, 40, 5, 1, 2, 0, 0, True),
            ("P3", _POOL, "l2", "l3", 40, 40, 2, 2, 0, 0, 0, False),
            ("W4", _FC, "l3", "l4", 1960, 300, 1, 1, 0, 0, 0, True),
        ],
        init="kaiming_normal", classes=10,
        neurons=24_800, neurons_printed=("k", 1, 24.8),
        macs=3_841_600, macs_printed=("M", 1, 3.8),
        back_macs=3_547_600, back_printed=("M", 1, 3.5),
        training=dict(readout={"classes": 10}, dataset="mnist", T=30, T_b=100, kappa=100.0,
                      lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=60, milestones=[20, 40],
                      warmup_iters=0, batch_size=128, dropout={"W4": 0.5}, norm_cap={})),
    "convnetf_mnist": dict(
        input=(1, 28, 28),
        layers=[(64, 14, 14), (64, 7, 7), (64, 7, 7)],
        projections=[
            ("F", _CONV, "x", "l0", 1, 64, 5, 2, 2, 0, 0, True),
            ("W1", _CONV, "l0", "l1", 64, 64, 5, 2, 2, 0, 0, True),
            ("W2", _CONV, "l1", "l2", 64, 64, 5, 1, 2, 0, 0, True),
            ("B", _CONVT, "l2", "l0", 64, 64, 3, 2, 1, 1, 1, False),
        ],
        init="kaiming_normal", classes=10,
        neurons=18_816, neurons_printed=("k", 1, 18.8),
        macs=12_155_136, macs_printed=("M", 1, 12.2),
        back_macs=11_841_536, back_printed=("M", 1, 11.8),
        training=dict(readout={"classes": 10}, dataset="mnist", T=30, T_b=100, kappa=100.0,
                      lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=100,
                      milestones=[30, 60, 90], warmup_iters=0, batch_size=128,
                      dropout={k: 0.2 for k in ("F", "W1", "W2", "B")}, norm_cap={"B": 2.0})),
    "alexnetf_cifar10": dict(
        input=(3, 32, 32),
        layers=[(96, 16, 16), (256, 16, 16), (384, 8, 8), (384, 8, 8), (256, 8, 8)],
        projections=[
            ("F", _CONV, "x", "l0", 3, 96, 3, 2, 1, 0, 0, True),
            ("W1", _CONV, "l0", "l1", 96, 256, 3, 1, 1, 0, 0, True),
            ("W2", _CONV, "l1", "l2", 256, 384, 3, 2, 1, 0, 0, True),
            ("W3", _CONV, "l2", "l3", 384, 384, 3, 1, 1, 0, 0, True),
            ("W4", _CONV, "l3", "l4", 384, 256, 3, 1, 1, 0, 0, True),
            ("B", _CONVT, "l4", "l0", 256, 96, 3, 2, 1, 1, 1, False),
        ],
        init="uniform_unit_norm", classes=10,
        neurons=155_648, neurons_printed=("k", 0, 156),
        macs=269_623_296, macs_printed=("M", 0, 270),
        back_macs=268_959_744, back_printed=("M", 0, 269),
        training=dict(readout={"classes": 10}, dataset="cifar10", T=30, T_b=250, kappa=400.0,
                      lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=100, milestones=[50, 75],
                      warmup_iters=400, batch_size=128,
                      dropout={k: 0.2 for k in ("F", "W1", "W2", "W3", "W4", "B")},
                      norm_cap={"B": 2.0})),
    "cifarnetf_cifar100": dict(
        input=(3, 32, 32),
        layers=[(128, 16, 16), (256, 16, 16), (512, 8, 8), (1024, 8, 8), (512, 8, 8)],
        projections=[
            ("F", _CONV, "x", "l0", 3, 128, 3, 2, 1, 0, 0, True),
            ("W1", _CONV, "l0", "l1", 128, 256, 3, 1, 1, 0, 0, True),
            ("W2", _CONV, "l1", "l2", 256, 512, 3, 2, 1, 0, 0, True),
            ("W3", _CONV, "l2", "l3", 512, 1024, 3, 1, 1, 0, 0, True),
            ("W4", _CONV, "l3", "l4", 1024, 512, 3, 1, 1, 0, 0, True),
            ("B", _CONVT, "l4", "l0", 512, 128, 3, 2, 1, 1, 1, False),
        ],
        init="uniform_unit_norm", classes=100,
        neurons=229_376, neurons_printed=("k", 0, 229),
        macs=793_608_192, macs_printed=("M", 0, 794),
        back_macs=792_723_456, back_printed=("M", 0, 793),
        # kappa: the script default is 400; SPIDE's README passes 500 for CIFAR-100
        training=dict(readout={"classes": 100}, dataset="cifar100", T=30, T_b=250,
                      kappa=500.0, lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=100,
                      milestones=[50, 75], warmup_iters=400, batch_size=128,
                      dropout={k: 0.25 for k in ("F", "W1", "W2", "W3", "W4", "B")},
                      norm_cap={"B": 2.0})),
    "convnet_dvs": dict(
        input=(2, 48, 48),
        layers=[(512, 24, 24)],
        projections=[
            ("F", _CONV, "x", "l0", 2, 512, 9, 2, 4, 0, 0, True),
            ("B", _CONV, "l0", "l0", 512, 512, 5, 1, 2, 0, 1, False),
        ],
        init="kaiming_normal", classes=10,
        neurons=294_912, neurons_printed=("k", 0, 295),
        macs=3_822_649_344, macs_printed=("G", 1, 3.8),
        back_macs=3_774_873_600, back_printed=("G", 1, 3.8),
        training=dict(readout={"classes": 10}, dataset="cifar10-dvs", T=30, T_b=250,
                      kappa=400.0, lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=70,
                      milestones=[50], warmup_iters=0, batch_size=128,
                      dropout={"F": 0.0, "B": 0.0}, norm_cap={"B": 10.0})),
}
NAMES = list(ARCH)
_UNIT = {"k": 1e3, "M": 1e6, "G": 1e9}


@pytest.fixture(scope="module")
def nets():
    """Each model loaded once (the big ones allocate up to 11.5M weights)."""
    return {n: load_model(n, seed=0) for n in NAMES}


def _printed(value, printed):
    unit, digits, shown = printed
    return round(value / _UNIT[unit], digits) == shown


def _conv_out(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def _shapes(a):
    """Population shapes by name, from ARCH (input 'x', spiking 'l0', 'l1', ...)."""
    out = {"x": a["input"]}
    out.update({f"l{i}": s for i, s in enumerate(a["layers"])})
    return out


def _independent_macs(a, include_input=True):
    """Dense MACs per step from the layer table alone (see the module docstring)."""
    shapes = _shapes(a)
    total = 0
    for name, kind, pre, post, cin, cout, k, s, p, op, delay, bias in a["projections"]:
        if pre == "x" and not include_input:
            continue
        if kind == _CONV:
            co, ho, wo = shapes[post]
            total += co * ho * wo * cin * k * k
        elif kind == _CONVT:
            ci, h, w = shapes[pre]
            total += ci * h * w * cout * k * k
        elif kind == _POOL:
            c, ho, wo = shapes[post]
            total += c * ho * wo * k * k
        else:
            total += cin * cout
    return total


# -- hand arithmetic agrees with the spec's rounded numbers ------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_hand_counts_match_the_spec(name):
    a = ARCH[name]
    spiking = sum(math.prod(s) for s in a["layers"])
    assert spiking == a["neurons"] and _printed(spiking, a["neurons_printed"])
    assert _independent_macs(a) == a["macs"] and _printed(a["macs"], a["macs_printed"])
    back = _independent_macs(a, include_input=False)
    assert back == a["back_macs"] and _printed(back, a["back_printed"])
    # the shapes chain: every conv / pool / convT maps its pre shape onto its post shape
    shapes = _shapes(a)
    for n, kind, pre, post, cin, cout, k, s, p, op, delay, bias in a["projections"]:
        if kind == _FC:
            assert (math.prod(shapes[pre]), math.prod(shapes[post])) == (cin, cout)
            continue
        c, h, w = shapes[pre]
        assert c == cin and shapes[post][0] == cout
        if kind == _CONVT:
            hw = ((h - 1) * s - 2 * p + k + op, (w - 1) * s - 2 * p + k + op)
        else:
            hw = (_conv_out(h, k, s, p), _conv_out(w, k, s, p))
        assert tuple(shapes[post][1:]) == hw, (n, hw)


def test_spec_conventions_pin_down_input_map():
    """Without the input map the forward figures would not round to the spec's table."""
    assert not _printed(_independent_macs(ARCH["lenet_mnist"], False), ("M", 1, 3.8))
    assert not _printed(_independent_macs(ARCH["convnetf_mnist"], False), ("M", 1, 12.2))
    # ... and with the input pixels the LeNet neuron count would not be 24.8k
    assert not _printed(24_800 + 784, ("k", 1, 24.8))


# -- the model files -----------------------------------------------------------------------------
def test_models_are_listed():
    assert set(NAMES) <= set(list_models())


@pytest.mark.parametrize("name", NAMES)
def test_populations(nets, name):
    net, a = nets[name], ARCH[name]
    assert net.name == name
    want = [("x", "input", a["input"])] + [(f"l{i}", "lif", s) for i, s in enumerate(a["layers"])]
    assert [(p.name, p.kind, tuple(p.shape)) for p in net.populations.values()] == want
    for p in net.populations.values():
        if p.kind != "lif":
            continue
        d = p.neuron.to_dict()
        assert (d["v_th"], d["subtract"], d["leak"], d["reset"], d["t_ref"]) == (1.0, 2.0, 1.0, "subtract", 0)
        t = p.ternary.to_dict()
        assert (t["v_th"], t["subtract"], t["leak"]) == (0.5, 1.0, 1.0)
    assert np.dtype(net.dtype) == np.float32


@pytest.mark.parametrize("name", NAMES)
def test_projections(nets, name):
    net, a = nets[name], ARCH[name]
    assert list(net.projections) == [t[0] for t in a["projections"]]
    for n, kind, pre, post, cin, cout, k, s, p, op, delay, bias in a["projections"]:
        q = net.projections[n]
        assert (q.kind, q.pre, q.post, q.delay) == (kind, pre, post, delay), n
        assert (q.bias is not None) == bias, n
        if bias:
            assert np.all(q.bias == 0.0), n
        if kind in (_CONV, _CONVT):
            assert (tuple(q.kernel_shape), q.stride, q.padding) == ((k, k), s, p), n
            wshape = (cout, cin, k, k) if kind == _CONV else (cin, cout, k, k)
            assert q.weight.shape == wshape, n
        if kind == _CONVT:
            assert q.output_padding == op
        if kind == _POOL:
            assert (q.kernel, q.stride) == (k, s)
        if kind == _FC:
            assert q.weight.shape == (cin, cout)
    # exactly one delayed projection: the feedback (none in LeNet), and it is bias-free
    fb = [q for q in net.projections.values() if q.delay > 0]
    assert [q.name for q in fb] == ([] if name == "lenet_mnist" else ["B"])
    # the first projection is the input map, with bias
    first = next(iter(net.projections.values()))
    assert first.pre == "x" and first.bias is not None
    assert [q.name for q in net.projections.values() if q.pre == "x"] == ["F"]


@pytest.mark.parametrize("name", NAMES)
def test_neuron_and_mac_totals(nets, name):
    net, a = nets[name], ARCH[name]
    info = model_info(net)["totals"]
    assert info["spiking_neurons"] == a["neurons"]
    assert sum(p.n for p in net.populations.values() if p.spiking) == a["neurons"]
    macs = sum(q.dense_macs for q in net.projections.values())
    assert macs == info["dense_macs"] == a["macs"] == _independent_macs(a)
    back = sum(q.dense_macs for q in net.projections.values() if q.pre != "x")
    assert back == a["back_macs"]
    assert _printed(info["spiking_neurons"], a["neurons_printed"])
    assert _printed(macs, a["macs_printed"]) and _printed(back, a["back_printed"])


@pytest.mark.parametrize("name", NAMES)
def test_initialisation(nets, name):
    """MNIST / DVS: Kaiming normal (fan-in); CIFAR: uniform, unit L2 norm per output filter;
    the feedback ConvTranspose additionally x0.1."""
    net, a = nets[name], ARCH[name]
    for n, kind, pre, post, cin, cout, k, s, p, op, delay, bias in a["projections"]:
        if kind == _POOL:
            continue
        w = net.projections[n].weight
        scale = 0.1 if kind == _CONVT else 1.0
        if a["init"] == "kaiming_normal":
            # torch's fan_in: conv C_in k², convT (C_in, C_out, k, k) layout: C_out k², FC n_in
            fan_in = {_CONV: cin * k * k, _CONVT: cout * k * k, _FC: cin}[kind]
            sd = scale * math.sqrt(2.0 / fan_in)
            assert abs(w.std() / sd - 1) < 6 / math.sqrt(w.size) + 0.01, (n, w.std(), sd)
            assert abs(w.mean()) < 6 * sd / math.sqrt(w.size), n
        else:
            axes = (1, 2, 3) if kind == _CONV else (0, 2, 3)   # weight[co] / weight[:, co]
            norms = np.sqrt((w.astype(np.float64) ** 2).sum(axis=axes))
            assert norms.shape == (cout,)
            np.testing.assert_allclose(norms, scale, rtol=1e-6, err_msg=n)
    # the DVS recurrent conv is a conv2d, not a ConvTranspose: no x0.1
    if name == "convnet_dvs":
        sd = math.sqrt(2.0 / (512 * 25))
        assert abs(net.projections["B"].weight.std() / sd - 1) < 0.01


@pytest.mark.parametrize("name", NAMES)
def test_training_table(nets, name):
    net, a = nets[name], ARCH[name]
    t = net.metadata["training"]
    assert t == a["training"]
    assert t["readout"]["classes"] == a["classes"]
    assert set(t["dropout"]) <= set(net.projections)
    for fb, r in t["norm_cap"].items():
        assert net.projections[fb].delay == 1, fb
    # the readout is not a population: the last spiking layer is the output
    assert all(p.kind in ("input", "lif") for p in net.populations.values())
    # the trainer accepts the table as it stands
    from neurosim.training.trainer import config_for
    cfg, meta = config_for(net, {})
    assert (cfg.T, cfg.T_b, cfg.kappa, cfg.lr, cfg.epochs) == (
        t["T"], t["T_b"], t["kappa"], t["lr"], t["epochs"])
    assert cfg.dropout == t["dropout"] and cfg.norm_cap == t["norm_cap"]
    assert meta == {"readout": t["readout"], "dataset": t["dataset"]}


@pytest.mark.parametrize("name", NAMES)
def test_file_cites_spide_and_reference_code(name):
    text = (models_dir() / f"{name}.toml").read_text()
    assert "2302.00232" in text and "pkuxmq/SPIDE-FSNN" in text
    training = text[text.index("[training]"):]
    assert "2302.00232" in training and "SPIDE-FSNN" in training


# -- neurosim info -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_cli_info_prints_every_layer(runner, nets, name):
    res = runner.invoke(main, ["info", "--model", name])
    assert res.exit_code == 0, (res.output, res.exception)
    out = res.stdout
    net, a = nets[name], ARCH[name]
    lines = [l.strip() for l in out.splitlines()]
    assert f"model {name!r}" in out
    for p in net.populations.values():
        shape = "x".join(map(str, p.shape))
        row = [l for l in lines if re.match(rf"{re.escape(p.name)}\s", l)]
        assert len(row) == 1, (p.name, out)
        assert p.kind in row[0] and shape in row[0] and str(p.n) in row[0]
    for q in net.projections.values():
        row = [l for l in lines if re.match(rf"{re.escape(q.name)}\s", l)]
        assert len(row) == 1, (q.name, out)
        assert q.kind in row[0] and f"{q.pre} -> {q.post}" in row[0]
        assert str(q.dense_macs) in row[0]
        if q.pre == "x":
            assert "(input map)" in row[0]
    assert f"({a['neurons']} spiking)" in out
    assert f"{a['macs']} dense-equivalent MACs per step" in out


# -- the small ones run --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lenet_mnist", "convnetf_mnist"])
def test_mnist_models_run_a_few_steps(nets, name):
    net = nets[name]
    x = {"x": np.random.default_rng(0).standard_normal((2, 784)).astype(np.float32)}
    r = ns.run_forward(net, 4, inputs=x)
    assert r.batch == 2


# -- the CIFAR networks: spike counts against the dense numpy oracle ---------------------------
@pytest.mark.parametrize("name", ["alexnetf_cifar10", "cifarnetf_cifar100"])
def test_cifar_models_match_the_numpy_oracle_on_a_channel_scaled_copy(name):
    """The CIFAR networks at their own T (30) and T_b (250), κ and dropout, on synthetic
    CIFAR-shaped images (``benchmarks/bench_training.py``'s inputs): a SPIDE step's forward
    spike counts and backward ternary counts equal the dense numpy oracle's exactly.  The
    oracle's dense matrices of the full networks would take ~13 GB, so every spiking
    layer's channels are divided by 32 (AlexNet-F 3-8-12-12-8, CIFARNet-F 4-8-16-32-16);
    geometry, feedback and delay are the model file's."""
    from benchmarks.bench_training import scaled_oracle_check
    chk = scaled_oracle_check(name, seed=0, div=32, n=2)
    assert (chk["T"], chk["T_b"]) == (30, 250)
    assert chk["identical_spike_counts"], chk["mismatched_neurons"]
    # not vacuous: every layer spikes in the forward phase and some send ternary spikes back
    assert all(v > 0 for v in chk["spikes"]["forward"].values()), chk["spikes"]
    assert sum(chk["spikes"]["backward"].values()) > 0, chk["spikes"]
