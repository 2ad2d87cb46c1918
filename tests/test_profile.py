"""The step profile (``NEUROSIM_PROFILE=1``, docs/decisions.md 70): a compile-time build
whose phases report the time of each named schedule step, with results identical to the
default build's.

The profiled build is another compilation of the engine (its own cache key), so it runs
in a subprocess; its first run compiles the engine (about a minute on 2 busy cores), later
runs load it from the cache: marked slow.  The checks of the default build and of the
switch itself are cheap and run always.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import neurosim as ns
from neurosim import config
from neurosim.kernels import layout as L

ROOT = Path(__file__).resolve().parents[1]

#: builds the network of these tests, runs both phases and prints what is compared
SCRIPT = r"""
import json, sys
import numpy as np
import neurosim as ns
from neurosim import config

def net():
    rng = np.random.default_rng(5)
    n = ns.Network(dtype=np.float32)
    n.add_population("src", 12, "source")
    n.add_population("h", 30, ns.LIF(v_th=1.0, leak=0.95))
    n.add_population("o", 4, ns.LIF(v_th=0.5))
    n.add_projection("w1", "src", "h", ns.Dense(rng.normal(0.2, 0.3, (12, 30))))
    n.add_projection("w2", "h", "o", ns.Dense(rng.normal(0.1, 0.3, (30, 4))))
    n.add_projection("fb", "o", "h", ns.Dense(rng.normal(0.0, 0.2, (4, 30)), delay=2))
    return n

def run():
    rng = np.random.default_rng(6)
    m = net()
    s = rng.random((3, 20, 12)) < 0.3
    f = ns.run_forward(m, 20, spikes={"src": s}, n_threads=1)
    b = ns.run_backward(m, f, {"o": rng.normal(0.0, 0.4, (3, 4))}, 30, n_threads=1)
    return f, b

def summary(r):
    return dict(counts=r.counts_all.tolist(), counts_neg=r.counts_neg_all.tolist(),
                v={k: v.tolist() for k, v in r.v_final.items()},
                sent={k: v.tolist() for k, v in r.sent.items()},
                sent_neg={k: v.tolist() for k, v in r.sent_neg.items()},
                profile=r.profile, table=r.profile_table(), batch=r.batch)

if __name__ == "__main__":
    f, b = run()
    print(json.dumps(dict(profile_build=config.PROFILE, forward=summary(f), backward=summary(b))))
"""


def _run(tmp_path, **env):
    script = tmp_path / "prof_run.py"
    script.write_text(SCRIPT)
    e = {k: v for k, v in os.environ.items() if k != "NEUROSIM_PROFILE"}
    e.update(env, PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in e.get("PYTHONPATH", "").split(os.pathsep) if p]))
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, text=True,
                         capture_output=True, env=e)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def _in_process():
    """The same script's phases in this (default-build) process."""
    ns_ = {}
    exec(compile(SCRIPT.replace('if __name__ == "__main__":', "if False:"), "prof_run", "exec"), ns_)
    f, b = ns_["run"]()
    return ns_["summary"](f), ns_["summary"](b)


@pytest.mark.skipif(config.PROFILE, reason="this process runs the profiled build")
def test_default_build_reports_no_profile():
    f, b = _in_process()
    assert f["profile"] is None and b["profile"] is None and f["table"] is None
    assert sum(map(sum, f["counts"])) > 0


@pytest.mark.slow
@pytest.mark.skipif(config.PROFILE, reason="this process runs the profiled build")
def test_profiled_build_times_every_step_and_changes_no_result(tmp_path):
    prof = _run(tmp_path, NEUROSIM_PROFILE="1")
    assert prof["profile_build"] is True
    for phase, plain in zip(("forward", "backward"), _in_process()):
        got = prof[phase]
        # identical results, exactly
        for key in ("counts", "counts_neg", "v", "sent", "sent_neg"):
            assert got[key] == plain[key], f"{phase} {key} differs in the profiled build"
        # one non-negative entry per named step, in schedule order
        p = got["profile"]
        assert list(p) == list(L.STEP_NAMES)
        assert all(v >= 0 for v in p.values()), p
        # steps taken every step or every sample were timed
        for name in ("reset", "seed_touched", "deliver_delayed", "update", "finish_leak", "totals"):
            assert p[name] > 0, (phase, name, p)
        # the gate runs in the backward phase only
        assert (p["gate_backward"] > 0) == (phase == "backward"), (phase, p)
        # the table: per-sample seconds and shares of the profiled total, adding up
        rows = {ln.split()[0]: ln.split()[1:] for ln in got["table"].splitlines()[1:]}
        total = sum(p.values())
        assert float(rows["total"][0]) == pytest.approx(total / got["batch"], rel=1e-3)
        shares = [float(rows[n][1].rstrip("%")) for n in L.STEP_NAMES]
        assert sum(shares) == pytest.approx(100.0, abs=0.1 * len(shares))
        for n in L.STEP_NAMES:
            assert float(rows[n][0]) == pytest.approx(p[n] / got["batch"], rel=1e-3, abs=1e-12)


@pytest.mark.parametrize("value", ["2", "yes", "true"])
def test_bad_profile_switch_is_named(value, monkeypatch):
    monkeypatch.setenv("NEUROSIM_PROFILE", value)
    monkeypatch.setattr(config, "ENV_ERRORS", {})
    assert config._profile_switch() is False
    assert config.ENV_ERRORS["NEUROSIM_PROFILE"] == (
        f"environment variable NEUROSIM_PROFILE={value!r}: expected 1 (profiled kernels) "
        "or 0 (default)")


def test_profile_needs_x86(monkeypatch):
    monkeypatch.setenv("NEUROSIM_PROFILE", "1")
    monkeypatch.setattr(config, "ENV_ERRORS", {})
    monkeypatch.setattr(config.platform, "machine", lambda: "aarch64")
    assert config._profile_switch() is False
    assert "needs an x86-64 processor" in config.ENV_ERRORS["NEUROSIM_PROFILE"]
    monkeypatch.setattr(config, "ENV_ERRORS", {})
    monkeypatch.setattr(config.platform, "machine", lambda: "x86_64")
    assert config._profile_switch() is True and config.ENV_ERRORS == {}


def test_profile_table_of_a_result():
    r = ns.PhaseResult("forward", 10, 4, profile=dict.fromkeys(L.STEP_NAMES, 0.0))
    r.profile["update"], r.profile["totals"] = 3.0, 1.0
    lines = r.profile_table().splitlines()
    assert lines[1 + L.ST_UPDATE].split() == ["update", "7.500e-01", "75.0%"]
    assert lines[-1].split() == ["total", "1.000e+00", "100.0%"]
    assert ns.PhaseResult("forward", 10, 4).profile_table() is None
