"""The sparsity sweep (neurosim.ops.sparsity, `neurosim bench sparsity`): its dense
timing baseline against the engine, the point list, the crossover, and a tiny sweep end
to end on digits."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import neurosim as ns
from neurosim.cli import main
from neurosim.ops import sparsity as S

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


def test_dense_forward_refuses_what_it_cannot_do():
    net = ns.Network(dtype=np.float64)
    net.add_population("x", (1, 4, 4), "input")
    net.add_population("c", (1, 3, 3), ns.LIF())
    net.add_projection("k", "x", "c", ns.Conv2d(np.ones((1, 1, 2, 2)), pre_shape=(1, 4, 4)))
    with pytest.raises(S.SweepError, match="dense and sparse projections; 'k' is conv2d"):
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
