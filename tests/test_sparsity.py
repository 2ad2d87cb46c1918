"""The sparsity sweep (neurosim.experiments.sparsity, `neurosim bench sparsity`): its dense
timing baseline against the engine (dense, sparse, conv, conv-transpose and pooling
projections) and against the explicit-loop matrices of tests/reference.py, the point
list, the crossover, and tiny sweeps end to end on digits (an MLP and a miniature
ConvNet-F)."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import neurosim as ns
from neurosim.cli import main
from neurosim.experiments import sparsity as S

import reference

RECORD_KEYS = ("bench", "case", "impl", "threads", "batch", "metric", "unit", "median", "min",
               "max", "n_runs", "version", "commit", "machine", "date", "params", "sweep")


def _dyadic(rng, shape, scale):
    return np.round(rng.normal(0, scale, shape) * 64) / 64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(3))
def test_dense_forward_equals_the_engine(seed, dtype):
    rng = np.random.default_rng(seed)
    net = ns.Network(dtype=dtype)
    net.add_population("x", 6, "input")
    net.add_population("h", 9, ns.LIF(v_th=0.5))
    net.add_population("o", 4, ns.LIF(leak=0.5))
    net.add_population("r", 3, ns.LIF(reset="value", v_reset=-0.25))
    net.add_projection("F", "x", "h", ns.Dense(_dyadic(rng, (6, 9), 0.5), bias=_dyadic(rng, 9, 0.1)))
    net.add_projection("W", "h", "o", ns.Dense(_dyadic(rng, (9, 4), 0.5)))
    net.add_projection("V", "o", "r", ns.Dense(_dyadic(rng, (4, 3), 0.8), bias=_dyadic(rng, 3, 0.1)))
    net.add_projection("fb", "o", "h", ns.Dense(_dyadic(rng, (4, 9), 0.3), delay=1))
    net.add_projection("rec", "h", "h", ns.Sparse.fixed_probability(9, 9, 0.3, 0.125, seed=seed,
                                                                      delay=2))
    x = np.round(rng.uniform(0, 1, (5, 6)) * 16) / 16
    want = ns.run_forward(net, 20, inputs={"x": x}).counts
    got = S.dense_forward(net, 20, {"x": x})
    assert sum(int(c.sum()) for c in got.values()) > 0
    for name, c in got.items():
        np.testing.assert_array_equal(c, want[name], err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lif_dense_step_by_hand_in_the_networks_dtype(dtype):
    """Integrate, threshold, reset, leak: one step by hand, every array staying in dtype."""
    v = np.array([[0.25, 0.5, 0.75, -0.5]], dtype)
    cur = np.array([[0.25, 0.5, 0.0, 0.25]], dtype)
    s = S.lif_dense_step(v, cur, ns.LIF(v_th=1.0, subtract=0.75, leak=0.5), dtype)
    np.testing.assert_array_equal(s, [[False, True, False, False]])
    assert v.dtype == dtype and s.dtype == np.bool_
    np.testing.assert_array_equal(v, np.array([[0.25, 0.125, 0.375, -0.125]], dtype))
    v = np.array([[1.5, 0.0]], dtype)
    s = S.lif_dense_step(v, np.zeros((1, 2), dtype), ns.LIF(reset="value", v_reset=-0.25), dtype)
    np.testing.assert_array_equal(s, [[True, False]])
    np.testing.assert_array_equal(v, np.array([[-0.25, 0.0]], dtype))
    other = np.float64 if dtype == np.float32 else np.float32
    with pytest.raises(TypeError, match="lif_dense_step needs .* convert with .astype"):
        S.lif_dense_step(v, np.zeros((1, 2), other), ns.LIF(), dtype)


def _conv_net(rng, dtype):
    """ConvNet-F in miniature, plus pooling: x(2x12x12) -conv5 s2 p2-> a(4x6x6) -conv5 s2
    p2-> b(3x3x3) -conv3 s1 p1-> c(3x3x3), feedback c -convT3 s2 p1 op1-> a (delay 1);
    a -avgpool2-> p(4x3x3) -dense-> o(5); b -sumpool2 s1-> q(3x2x2) (delay 2).  Dyadic
    weights: every float sum is exact, in float32 as in float64."""
    net = ns.Network(dtype=dtype)
    net.add_population("x", (2, 12, 12), "input")
    net.add_population("a", (4, 6, 6), ns.LIF(v_th=1.0, subtract=2.0))
    net.add_population("b", (3, 3, 3), ns.LIF(v_th=0.5, leak=0.5))
    net.add_population("c", (3, 3, 3), ns.LIF(reset="value", v_reset=-0.25))
    net.add_population("p", (4, 3, 3), ns.LIF(v_th=0.25))
    net.add_population("o", 5, ns.LIF())
    net.add_population("q", (3, 2, 2), ns.LIF(v_th=2.0))
    net.add_projection("F", "x", "a", ns.Conv2d(_dyadic(rng, (4, 2, 5, 5), 0.25), pre_shape=(2, 12, 12),
                                                stride=2, padding=2, bias=_dyadic(rng, 4, 0.1)))
    net.add_projection("W1", "a", "b", ns.Conv2d(_dyadic(rng, (3, 4, 5, 5), 0.3), pre_shape=(4, 6, 6),
                                                 stride=2, padding=2, bias=_dyadic(rng, 3, 0.1)))
    net.add_projection("W2", "b", "c", ns.Conv2d(_dyadic(rng, (3, 3, 3, 3), 0.5), pre_shape=(3, 3, 3),
                                                 padding=1, bias=_dyadic(rng, 3, 0.1)))
    net.add_projection("B", "c", "a", ns.ConvTranspose2d(_dyadic(rng, (3, 4, 3, 3), 0.5),
                                                         pre_shape=(3, 3, 3), stride=2, padding=1,
                                                         output_padding=1, delay=1))
    net.add_projection("P", "a", "p", ns.AvgPool2d(2, pre_shape=(4, 6, 6)))
    net.add_projection("D", "p", "o", ns.Dense(_dyadic(rng, (36, 5), 0.5)))
    net.add_projection("Q", "b", "q", ns.SumPool2d(2, pre_shape=(3, 3, 3), stride=1, delay=2))
    return net


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(3))
def test_dense_conv_forward_equals_the_engine(seed, dtype):
    """Conv (stride 2, padding), conv-transpose (stride 2, padding, output_padding) as a
    delay-1 feedback, pooling and a dense readout: the im2col / col2im baseline gives the
    engine's spike counts exactly, with the image given as [B, C, H, W] or flat."""
    rng = np.random.default_rng(seed)
    net = _conv_net(rng, dtype)
    img = np.round(rng.uniform(0, 1, (6, 2, 12, 12)) * 16) / 16
    want = ns.run_forward(net, 16, inputs={"x": img}).counts
    got = S.dense_forward(net, 16, {"x": img})
    assert set(got) == {"a", "b", "c", "p", "o", "q"}
    for name, c in got.items():
        assert c.dtype == np.int32 and c.shape == want[name].shape
        assert 0 < c.sum() < 16 * c.size, name           # every population active, none saturated
        np.testing.assert_array_equal(c, want[name], err_msg=name)
    flat = S.dense_forward(net, 16, {"x": ns.chw_to_flat(img)})
    for name, c in flat.items():
        np.testing.assert_array_equal(c, want[name], err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind, make", [
    ("conv2d s2 p1", lambda w: ns.Conv2d(w((5, 3, 3, 3)), pre_shape=(3, 9, 8), stride=2, padding=1)),
    ("conv2d kh!=kw p2", lambda w: ns.Conv2d(w((5, 3, 5, 4)), pre_shape=(3, 9, 8), padding=2)),
    ("conv2d s3", lambda w: ns.Conv2d(w((2, 3, 2, 2)), pre_shape=(3, 8, 7), stride=3)),
    ("convT s2 p1 op1", lambda w: ns.ConvTranspose2d(w((3, 4, 3, 3)), pre_shape=(3, 4, 5), stride=2,
                                                     padding=1, output_padding=1)),
    ("convT s3 op2 kh!=kw", lambda w: ns.ConvTranspose2d(w((3, 4, 2, 3)), pre_shape=(3, 4, 5),
                                                         stride=3, output_padding=2)),
    ("convT p>0 s1", lambda w: ns.ConvTranspose2d(w((3, 2, 5, 5)), pre_shape=(3, 4, 5), padding=3)),
    ("avgpool2", lambda w: ns.AvgPool2d(2, pre_shape=(3, 8, 8))),
    ("sumpool3 s2", lambda w: ns.SumPool2d(3, pre_shape=(2, 9, 8), stride=2)),
])
def test_dense_operator_equals_the_reference_matrix(kind, make, dtype):
    """Each spatial operator against the explicit-loop matrix of tests/reference.py (PyTorch
    semantics, neurosim's channel-last order), exactly on dyadic values."""
    rng = np.random.default_rng(7)
    pr = make(lambda shape: _dyadic(rng, shape, 0.5))
    x = np.round(rng.normal(0, 1, (3, pr.n_pre)) * 8) / 8
    out = np.full((3, pr.n_post), 0.5, dtype)                         # the operator adds to it
    S.dense_operator(pr, 3, dtype)(x.astype(dtype), out)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, 0.5 + x @ reference.dense_matrix(pr), err_msg=kind)


def test_dense_forward_refuses_what_it_cannot_do():
    net = ns.Network(dtype=np.float64)
    net.add_population("x", 4, "source")
    net.add_population("h", 3, ns.LIF())
    net.add_projection("k", "x", "h", ns.Dense(np.ones((4, 3))))
    with pytest.raises(S.SweepError, match="analog input populations, not the source 'x'"):
        S.dense_forward(net, 3, {"x": np.zeros((1, 4))})
    net = ns.Network(dtype=np.float64)
    net.add_population("x", (1, 4, 4), "input")
    net.add_population("c", (1, 3, 3), ns.LIF(t_ref=2))
    net.add_projection("k", "x", "c", ns.Conv2d(np.ones((1, 1, 2, 2)), pre_shape=(1, 4, 4)))
    with pytest.raises(S.SweepError, match="LIF populations without refractoriness; 'c' is"):
        S.dense_forward(net, 3, {"x": np.zeros((1, 16))})
    net.populations["c"].neuron = ns.LIF()
    with pytest.raises(S.SweepError, match=r"inputs\['x'\] has shape \(1, 9\); population 'x' "
                                           r"takes \[B, 16\] or \[B, 1, 4, 4\]"):
        S.dense_forward(net, 3, {"x": np.zeros((1, 9))})
    with pytest.raises(S.SweepError, match="'c', which is not an input population"):
        S.dense_forward(net, 3, {"c": np.zeros((1, 9))})

    class Odd(ns.Dense):
        kind = "odd"
    net.add_projection("o", "c", "c", Odd(np.ones((9, 9)), delay=1))
    with pytest.raises(S.SweepError, match="supports dense, sparse, conv2d, conv_transpose2d, "
                                           "avgpool2d, sumpool2d projections; 'o' is odd"):
        S.dense_forward(net, 3, {"x": np.zeros((1, 16))})


def test_sweep_points_one_at_a_time_and_grid():
    base = dict(T=30, T_b=100, v_th=1.0, kappa=100.0, dropout=None)
    pts = S.sweep_points(base, {"T": [10, 30], "v_th": [2.0]})
    assert pts == [base, dict(base, T=10), dict(base, v_th=2.0)]
    grid = S.sweep_points(base, {"T": [10, 20], "v_th": [1.0, 2.0]}, grid=True)
    assert len(grid) == 4 and dict(base, T=20, v_th=2.0) in grid
    with pytest.raises(S.SweepError, match="cannot sweep 'lr'"):
        S.sweep(params={"lr": [0.1]})


def test_crossover_interpolates_in_log_log():
    pts = [dict(activity=0.01, time_ratio=0.5), dict(activity=0.1, time_ratio=2.0),
           dict(activity=1.0, time_ratio=4.0)]
    c = S.crossover(pts)
    assert c["found"] and c["activity"] == pytest.approx(np.sqrt(0.01 * 0.1), rel=1e-12)
    c = S.crossover([dict(activity=0.01, time_ratio=2.0), dict(activity=0.1, time_ratio=3.0)])
    assert not c["found"] and "slower than dense at every point" in c["note"]


def test_tiny_sweep_end_to_end(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "results" / "sparsity.jsonl"
    r = S.sweep("fsnn_mlp", "digits", params={"T": [4], "v_th": [2.0], "dropout": [0.2]},
                base={"T": 6, "T_b": 8}, epochs=1, max_train=48, max_test=24, reps=1, out=out)
    assert len(r["points"]) == 4
    for p in r["points"]:
        n_right = p["accuracy"] * 24                     # max_test=24 digits
        assert abs(n_right - round(n_right)) < 1e-9 and 0 <= n_right <= 24, p["accuracy"]
        assert p["inference_ops"] > 0 and p["train_ops"] > 0
        assert p["event_s"] > 0 and p["dense_s"] > 0 and p["identical_spike_counts"] > 0.9
    assert [p["params"]["T"] for p in r["points"]] == [6, 4, 6, 6]
    assert r["points"][2]["params"]["v_th"] == 2.0
    lines = out.read_text().splitlines()
    assert len(lines) == len(r["records"]) == 4 * 6
    recs = [json.loads(x) for x in lines]
    for rec in recs:
        for k in RECORD_KEYS:
            assert k in rec, k
        assert rec["bench"] == "sparsity" and rec["sweep"] == r["sweep"]
    acc = [x for x in recs if x["metric"] == "test_accuracy"]
    assert [x["median"] for x in acc] == [p["accuracy"] for p in r["points"]]
    assert {x["impl"] for x in recs if x["metric"] == "s_per_sample"} == {"neurosim", "numpy-dense"}
    assert S.load_records(out) == recs
    # a second sweep appends
    S.sweep("fsnn_mlp", "digits", params={"T": [4]}, base={"T": 6, "T_b": 8}, epochs=1,
            max_train=48, max_test=24, reps=1, out=out)
    assert len(out.read_text().splitlines()) == 24 + 12
    text = S.format_sweep(r)
    assert "test acc" in text and r["crossover"]["note"] in text   # found or not: timing
    png = S.plot_sweep(r, tmp_path / "figs")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5000


#: ConvNet-F in miniature (float32, 8x8 digits): three spiking convs, stride 2 and
#: padding, and a conv-transpose feedback (stride 2, padding 1, output_padding 1, delay 1).
TINY_CONVNETF = """
format = "neurosim-model/1"
name = "tiny_convnetf"
dtype = "float32"
populations = [
  { name = "x", shape = [1, 8, 8], kind = "input" },
  { name = "l0", shape = [4, 4, 4], kind = "lif", v_th = 1.0 },
  { name = "l1", shape = [4, 2, 2], kind = "lif", v_th = 1.0 },
  { name = "l2", shape = [4, 2, 2], kind = "lif", v_th = 1.0 },
]
projections = [
  { name = "F", pre = "x", post = "l0", kind = "conv2d", kernel = 3, stride = 2, padding = 1, bias = true, init = "kaiming_normal" },
  { name = "W1", pre = "l0", post = "l1", kind = "conv2d", kernel = 3, stride = 2, padding = 1, bias = true, init = "kaiming_normal" },
  { name = "W2", pre = "l1", post = "l2", kind = "conv2d", kernel = 3, padding = 1, bias = true, init = "kaiming_normal" },
  { name = "B", pre = "l2", post = "l0", kind = "conv_transpose2d", kernel = 3, stride = 2, padding = 1, output_padding = 1, delay = 1, init = "kaiming_normal", init_scale = 0.1 },
]
[training]
readout = { classes = 10 }
dataset = "digits"
T = 6
T_b = 8
"""


def test_tiny_conv_sweep_end_to_end(tmp_path):
    """A conv model with a conv-transpose feedback is swept with dense timings (the im2col
    baseline), through the Python API and the command line."""
    model = tmp_path / "tiny_convnetf.toml"
    model.write_text(TINY_CONVNETF)
    out = tmp_path / "sparsity.jsonl"
    r = S.sweep(str(model), "digits", params={"v_th": [0.5, 2.0]}, epochs=1, max_train=48,
                max_test=24, reps=1, out=out)
    assert [p["params"]["v_th"] for p in r["points"]] == [1.0, 0.5, 2.0]
    for p in r["points"]:
        assert p["note"] is None, p["note"]
        assert p["event_s"] > 0 and p["dense_s"] > 0 and p["time_ratio"] > 0
        assert p["identical_spike_counts"] > 0.9 and 0 < p["activity"] < 1
        assert p["inference_dense_macs"] > p["inference_ops"] > 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 3 * 6
    assert sum(x["impl"] == "numpy-dense" and x["metric"] == "s_per_sample" for x in recs) == 3
    assert r["crossover"]["note"] in S.format_sweep(r)
    res = CliRunner().invoke(main, ["bench", "sparsity", "--model", str(model), "--dataset", "digits",
                                    "--param", "v_th=0.5", "--epochs", "1", "--max-train", "48",
                                    "--max-test", "24", "--reps", "1", "--threads", "1", "--no-record"])
    assert res.exit_code == 0, res.output
    assert "no dense timing" not in res.output
    assert ("event-driven stops paying off at about" in res.stdout
            or "no crossover in the sweep" in res.stdout), res.stdout


def test_cli_bench_sparsity(tmp_path):
    out = tmp_path / "s.jsonl"
    r = CliRunner().invoke(main, ["bench", "sparsity", "--param", "T=4", "--base", "T=6",
                                  "--base", "T_b=8", "--epochs", "1", "--max-train", "48",
                                  "--max-test", "24", "--reps", "1", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert len(d["points"]) == 2 and "crossover" in d
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 12
    assert recs[0]["extra"]["command"].startswith("neurosim bench sparsity --param T=4 --base T=6")
    r = CliRunner().invoke(main, ["bench", "sparsity", "--param", "lr=0.1"])
    assert r.exit_code == 2 and "sweepable: T, T_b, v_th, kappa, dropout" in r.output
    r = CliRunner().invoke(main, ["bench", "sparsity", "--param", "T=ten"])
    assert r.exit_code == 2 and "T takes int values" in r.output


def test_default_out_is_outside_the_repository_results():
    """`bench sparsity` appends to the file the user names; by default sparsity.jsonl in the
    current folder, never the tracked benchmarks/results/ (decisions 54)."""
    from pathlib import Path
    from neurosim.cli import main
    cmd = main.commands["bench"].commands["sparsity"]
    default = [p for p in cmd.params if p.name == "out"][0].default
    assert Path(default) == S.DEFAULT_OUT == Path("sparsity.jsonl")


def test_machine_line_names_the_cpu_generation_and_vector_width():
    """Benchmark and sweep records name the CPU's family / model number and its widest
    SIMD level with the vector width (issue 32: "AMD EPYC (2 cores)" covered an AVX-512
    and an AVX2-only machine)."""
    from neurosim.experiments.provenance import cpu_info, machine, provenance
    c = dict(model="AMD EPYC", family=25, model_number=1, simd="avx2", vector_bits=256, cores=2)
    assert machine(c, llvm_cpu="znver3") == \
        "AMD EPYC (family 25 model 1; avx2, 256-bit vectors; LLVM target znver3; 2 cores)"
    assert machine(dict(model="Neoverse", simd="asimd", vector_bits=128, cores=4)) == \
        "Neoverse (asimd, 128-bit vectors; 4 cores)"
    info = cpu_info()
    assert info["cores"] >= 1 and info["model"]
    assert info["simd"] is None or info["vector_bits"] in (None, 128, 256, 512)
    p = provenance()
    assert p["cpu"] == info and p["machine"] == machine(info)
