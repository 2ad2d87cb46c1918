"""Every script in examples/ runs end to end at a tiny size (smoke tests)."""
import pathlib
import runpy
import sys


EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def _run(name, argv):
    old = sys.argv
    sys.argv = [name] + argv
    try:
        mod = runpy.run_path(str(EXAMPLES / name), run_name="example")
        return mod["main"](argv)
    finally:
        sys.argv = old


def test_train_digits(tmp_path):
    s = _run("train_digits.py", ["--epochs", "1", "--max-train", "200", "--out", str(tmp_path / "t.h5")])
    assert 0.0 <= s["test_accuracy"] <= 1.0 and (tmp_path / "t.h5").exists()


def test_energy_estimate(tmp_path):
    e = _run("energy_estimate.py", ["--max-train", "100"])
    assert e["train_j"] > 0 and e["infer_j"] > 0 and e["ann_infer_j"] > 0


def test_sparse_lif_raster(tmp_path):
    out = tmp_path / "raster.png"
    rate = _run("sparse_lif_raster.py", ["--n", "200", "--steps", "300", "--out", str(out)])
    assert out.stat().st_size > 1000 and rate >= 0
