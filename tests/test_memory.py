"""The whole-run memory estimate (neurosim/memory.py) and the caps on steps and delays.

The estimate is held to within :data:`BAND` of the peak that ``tracemalloc`` measures,
both ways: numpy reports every array it allocates to ``tracemalloc``, so the measured peak
is exact for the arrays that make a run's memory.  The direction that matters is
"measured <= BAND x estimate" (the guard must not let through a run that needs much more
than it says); "estimate <= BAND x measured" keeps the guard from refusing runs that fit.
What ``tracemalloc`` does not see: HDF5's own copy of a run file's image (its ``core``
driver; the estimate's ``HDF5 copy`` part, left out of the comparison) and Numba's
allocations inside the recurrent CubaLIF runner (not in these cases); the interpreter and
the loaded libraries are the baseline.
"""
import gc
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from neurosim import _buffers, config, memory
from neurosim import _validate as V
from neurosim.cli import main
from neurosim.connectivity import Dense
from neurosim.engine import run_forward
from neurosim.io.sources import open_network
from neurosim.kernels import layout as L
from neurosim.network import compile_program
from neurosim.simulate import simulate
from neurosim.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]
#: how far (both ways) the estimate may be from the measured peak.
BAND = 1.25


def _measure(fn):
    """Peak bytes (tracemalloc) that ``fn()`` allocates beyond what exists already, with the
    engine's buffer cache emptied first (a fresh process has none)."""
    _buffers.clear()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
        _buffers.clear()


def _in_band(est, measured):
    return measured <= BAND * est and est <= BAND * measured


def _visible(est, *hidden):
    """The estimate without the parts ``tracemalloc`` cannot see in the measured call:
    HDF5's own copy of a file image (C memory) and ``hidden`` (arrays that existed
    before)."""
    out = {k: v for k, v in est.items() if k not in ("total", "HDF5 copy") + hidden}
    out["total"] = sum(out.values())
    return out


def _simulate_case(tmp_path, model, B, T, Tb, record):
    """(estimate parts, measured peak) of ``simulate`` writing a run file; the model is
    loaded inside, the stimulus exists before (its part is left out of the comparison)."""
    net = open_network(model)
    inp = next(p for p in net.populations.values() if p.kind in ("input", "source"))
    rng = np.random.default_rng(1)
    x = rng.random((B,) + tuple(inp.shape)) if inp.kind == "input" else \
        rng.random((B, T) + tuple(inp.shape)) < 0.1
    kw = dict(backward_steps=Tb, grad="random" if Tb else None, record=record)
    simulate(net, {inp.name: x[:2]}, T, **kw)                     # compile the kernels
    out = tmp_path / "r.h5"
    measured = _measure(lambda: simulate(model, {inp.name: x}, T, out=out, **kw))
    est = memory.estimate_run_bytes(net, "simulate", B, T, Tb, record=record, write=True,
                                    spikes=_recorded_spikes(out) if record else 0)
    return _visible(est, "stimulus"), measured


def _recorded_spikes(path):
    import h5py
    n = 0
    with h5py.File(path, "r") as f:
        for ph in ("forward", "backward"):
            if ph in f:
                for g in f[ph]["populations"].values():
                    if "spikes" in g:
                        n += g["spikes"]["step"].shape[0]
    return n


def _train_case(tmp_path, model, batch, T, Tb, n_train, n_test):
    """(estimate parts, measured peak) of a whole one-epoch ``train`` on the digits."""
    kw = dict(dataset="digits", overrides=dict(batch_size=batch, T=T, T_b=Tb, epochs=1),
              max_train=n_train, max_test=n_test, handle_signals=False)
    train(model, out=tmp_path / "warm.h5", **dict(kw, max_train=batch, max_test=4))
    seen = {}
    from neurosim.training import trainer as TR
    real = TR.check_memory

    def spy(spec, state, n_threads=None):
        seen["est"] = real(spec, state, n_threads)
        return seen["est"]
    TR.check_memory = spy
    try:
        measured = _measure(lambda: train(model, out=tmp_path / "t.h5", **kw))
    finally:
        TR.check_memory = real
    return _visible(seen["est"]), measured


SIM_CASES = [("fsnn_mlp", 64, 30, 100, False), ("fsnn_mlp", 256, 30, 100, True),
             ("test_conv", 32, 20, 20, True), ("test_sparse", 128, 30, None, False)]
SIM_SLOW = [("lenet_mnist", 128, 30, 50, False), ("convnetf_mnist", 64, 30, 30, True),
            ("lenet_mnist", 16, 100, 100, True)]


@pytest.mark.parametrize("case", SIM_CASES + [pytest.param(c, marks=pytest.mark.slow)
                                             for c in SIM_SLOW], ids=str)
def test_simulate_estimate_is_within_band_of_the_measured_peak(tmp_path, case):
    est, measured = _simulate_case(tmp_path, *case)
    assert _in_band(est["total"], measured), (case, measured, est)
    # a case whose largest part dominates (>= 30 % of the estimate) leans on it: without it
    # the estimate leaves the band (where no part dominates, dropping one may stay inside)
    biggest = max((k for k in est if k != "total"), key=est.get)
    if est[biggest] >= 0.3 * est["total"]:
        assert not _in_band(est["total"] - est[biggest], measured), (biggest, est)


TRAIN_CASES = [("fsnn_mlp", 64, 30, 100, 512, 256)]
TRAIN_SLOW = [("fsnn_mlp", 128, 30, 100, 1400, 360)]


@pytest.mark.parametrize("case", TRAIN_CASES + [pytest.param(c, marks=pytest.mark.slow)
                                               for c in TRAIN_SLOW], ids=str)
def test_train_estimate_is_within_band_of_the_measured_peak(tmp_path, case):
    est, measured = _train_case(tmp_path, *case)
    assert _in_band(est["total"], measured), (case, measured, est)
    biggest = max((k for k in est if k != "total"), key=est.get)
    assert not _in_band(est["total"] - est[biggest], measured), (biggest, est)


# -- the parts ---------------------------------------------------------------------------------
def test_scratch_counts_every_array_of_alloc_scratch_and_the_delay_rings():
    net = open_network("fsnn_mlp")
    net.projections["B"].delay = 7                       # deeper rings than the model's
    for backward in (False, True):
        prog = compile_program(net, backward)
        real = L.alloc_scratch(prog.arrays, prog.n_buf, prog.max_ports)
        # (arrays_bytes counts the blocks: an aligned array's base is a little larger)
        assert memory.scratch_bytes(prog) == memory.arrays_bytes(real)
        assert memory.arrays_bytes(real) >= sum(getattr(real, f).nbytes for f in real._fields)


def test_programs_and_model_are_counted_from_the_real_arrays():
    net = open_network("test_conv")
    prog = compile_program(net)
    views = sum(a.nbytes for a in prog.arrays)       # (aligned arrays: a little more)
    assert views <= memory.arrays_bytes(prog.arrays) <= views + 64 * len(prog.arrays)
    assert memory.model_bytes(net) >= sum(a.nbytes for q in net.projections.values()
                                          for a in q.weight_arrays().values())


def test_the_run_file_counts_recorded_spikes():
    net = open_network("fsnn_mlp")
    a = memory.estimate_run_bytes(net, "simulate", 4, 10, record=True, write=True)
    b = memory.estimate_run_bytes(net, "simulate", 4, 10, record=True, write=True, spikes=1000)
    assert b["run file"] - a["run file"] == 13 * 1000


# -- the check ---------------------------------------------------------------------------------
def test_a_run_beyond_the_limit_is_refused_before_it_allocates(monkeypatch):
    net = open_network("fsnn_mlp")
    est = memory.estimate_run_bytes(net, "forward", 1000, 500, record=True)
    monkeypatch.setattr(config, "MAX_RUN_BYTES", est["total"] - 1)
    monkeypatch.setattr(_buffers, "take", lambda *a, **k: pytest.fail("allocated"))
    x = np.zeros((1000, 64))
    with pytest.raises(V.NeurosimError) as e:
        run_forward(net, 500, inputs={"x": x}, record=True)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"the forward phase (1000 samples x 500 steps) would need about "
                          f"{memory.human(est['total'])} (forward recordings ")
    assert f"more than the {memory.human(est['total'] - 1)} a run may use" in msg
    assert "NEUROSIM_MAX_RUN_MB sets it" in msg


def test_simulate_refuses_before_the_forward_phase(monkeypatch, tmp_path):
    from neurosim import simulate as S
    monkeypatch.setattr(config, "MAX_RUN_BYTES", 2 ** 20)
    monkeypatch.setattr(S, "run_forward", lambda *a, **k: pytest.fail("work started"))
    r = CliRunner().invoke(main, ["simulate", "--model", "fsnn_mlp", "--input", "digits",
                                  "--steps", "500", "--n-samples", "300", "--record",
                                  "--out", str(tmp_path / "s.h5")])
    assert r.exit_code == 2
    assert "Error: simulating 300 samples x 500 steps would need about" in r.output
    assert "lower --n-samples or --steps, or drop --record" in r.output


def test_info_prints_the_estimate_of_the_default_run():
    r = CliRunner().invoke(main, ["info", "--model", "fsnn_mlp"])
    assert r.exit_code == 0, r.output
    net = open_network("fsnn_mlp")
    tr = net.metadata["training"]
    assert (f"memory: a training step at batch {tr['batch_size']} (T {tr['T']}, T_b "
            f"{tr['T_b']}) needs about") in r.output


# -- caps ---------------------------------------------------------------------------------------
def test_steps_beyond_the_cap_are_refused_everywhere(monkeypatch):
    monkeypatch.setattr(config, "MAX_STEPS", 50)
    net = open_network("fsnn_mlp")
    msg = ("steps = 51 steps is more than the 50 a phase may run (NEUROSIM_MAX_STEPS, "
           "default 100000); check the value, or set NEUROSIM_MAX_STEPS=51 to allow it")
    with pytest.raises(V.NeurosimError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        run_forward(net, 51, batch=1)
    run_forward(net, 50, batch=1)
    with pytest.raises(V.NeurosimError, match="backward_steps = 60 steps is more than the 50"):
        simulate(net, "digits", 5, backward_steps=60, grad="random")
    from neurosim.training.spide import SPIDEConfig
    with pytest.raises(V.NeurosimError, match="T_b = 51 steps is more than the 50"):
        SPIDEConfig(T=5, T_b=51)


def test_delay_beyond_the_cap_is_refused_in_the_api_and_model_files(monkeypatch, tmp_path):
    monkeypatch.setattr(config, "MAX_DELAY", 10)
    with pytest.raises(V.NeurosimError, match="dense projection delay = 11 steps is more than "
                                              "the 10 a projection may have"):
        Dense(np.zeros((2, 3)), delay=11)
    Dense(np.zeros((2, 3)), delay=10)
    text = (ROOT / "neurosim/data/models/fsnn_mlp.toml").read_text().replace("delay = 1",
                                                                             "delay = 11")
    (tmp_path / "m.toml").write_text(text)
    r = CliRunner().invoke(main, ["info", "--model", str(tmp_path / "m.toml")])
    assert r.exit_code == 2 and "delay = 11 steps is more than the 10" in r.output
    assert "set NEUROSIM_MAX_DELAY=11 to allow it" in r.output


def test_nir_delay_beyond_the_cap_is_refused_before_weights_are_built(monkeypatch, tmp_path):
    nir = pytest.importorskip("nir")
    from neurosim.io.nir import NIRError, write_nir
    from neurosim.io.sources import open_network as on
    net = open_network("fsnn_mlp")
    path = tmp_path / "m.nir"
    write_nir(path, net)
    monkeypatch.setattr(config, "MAX_DELAY", 0)
    with pytest.raises(NIRError, match=r"delay .* = 1 steps is more than the 0 a projection "
                                       r"may have"):
        on(path)


@pytest.mark.parametrize("var, value, want", [
    ("NEUROSIM_MAX_STEPS", "lots", "expected a whole number of steps >= 1 (e.g. "
                                   "NEUROSIM_MAX_STEPS=100000)"),
    ("NEUROSIM_MAX_DELAY", "0", "expected a whole number of steps >= 1 (e.g. "
                                "NEUROSIM_MAX_DELAY=10000)"),
    ("NEUROSIM_MAX_RUN_MB", "-5", "expected a size in MiB, a finite number >= 0 (e.g. "
                                  "NEUROSIM_MAX_RUN_MB=512)")])
def test_a_malformed_cap_variable_is_one_line_even_for_help(var, value, want):
    import os
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{var: value})
    r = subprocess.run([sys.executable, "-m", "neurosim.cli", "--help"], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 2
    assert r.stderr == f"Error: environment variable {var}={value!r}: {want}\n"


def test_the_step_cap_is_raised_by_its_variable():
    import os
    code = ("from neurosim import config, _validate as V; "
            "print(config.MAX_STEPS, V.check_steps(200000, 'T'))")
    env = dict(os.environ, PYTHONPATH=str(ROOT), NEUROSIM_MAX_STEPS="300000")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.split() == ["300000", "200000"], r.stderr


def test_shipped_models_and_workflows_are_within_the_caps():
    from neurosim.io.model_file import list_models
    for name in list_models():
        net = open_network(name)
        tr = (net.metadata or {}).get("training", {})
        assert tr.get("T", 1) <= config.DEFAULT_MAX_STEPS // 100
        assert tr.get("T_b", 1) <= config.DEFAULT_MAX_STEPS // 100
        assert all(q.delay <= config.DEFAULT_MAX_DELAY // 1000 for q in net.projections.values())
