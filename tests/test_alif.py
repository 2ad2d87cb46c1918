"""The adaptive-threshold LIF (``neurosim.neurons.ALIF``): engine against the dense twin
(``tests/reference.py``), hand-computed spike trains for the lazy paths (carry at the base
threshold, decay of the adaptation over untouched steps), β = 0 against LIF, the dense
step, model files, ``neurosim info`` / ``simulate``, re-simulation from the schema
document, and the refusals (SPIDE training, backward phase, NIR export, bad parameters)."""
import os
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import neurosim as ns
import reference
from conftest import random_case
from neurosim.cli import main
from neurosim.kernels.neurons import alif_step
from neurosim.models import model_from_dict
from neurosim.neurons import ALIF, LIF, NEURON_KINDS

sys.path.insert(0, os.path.dirname(__file__))
import schema_resim  # noqa: E402

DTYPES = [np.float32, np.float64]
N_RANDOM = 30


def _ids(d):
    return np.dtype(d).name


def _to_alif(net, rng, share=0.75, beta=None):
    """Turn (most of) the LIF populations of ``net`` into ALIF with the same θ, Θ, λ."""
    n = 0
    for p in net.populations.values():
        if p.spiking and p.kind == "lif" and (rng.random() < share or n == 0):
            nr = p.neuron
            b = float(rng.choice([0.25, 0.5, 1.0, 1.5])) if beta is None else beta
            p.neuron = ALIF(v_th=nr.v_th, subtract=nr.subtract, leak=nr.leak, beta=b,
                            rho=float(rng.choice([0.5, 0.75, 0.9, 1.0])))
            n += 1
    return n


def _assert_same(res, ref, where, weighted=True):
    for name in ref["counts"]:
        np.testing.assert_array_equal(res.spikes[name], ref["spikes"][name],
                                      err_msg=f"spike train of {name!r}, {where}")
        np.testing.assert_array_equal(res.counts[name], ref["counts"][name],
                                      err_msg=f"counts of {name!r}, {where}")
        np.testing.assert_array_equal(res.v_final[name], ref["v_final"][name],
                                      err_msg=f"final potential of {name!r}, {where}")
        pop = res.network.populations[name]
        if weighted and pop.spiking and pop.neuron.leak != 1.0:
            np.testing.assert_array_equal(res.weighted_counts[name], ref["weighted_counts"][name],
                                          err_msg=f"weighted counts of {name!r}, {where}")
    for q in ref["sent"]:
        np.testing.assert_array_equal(res.sent[q], ref["sent"][q],
                                      err_msg=f"sent of {q!r}, {where}")


# -- the engine against the dense twin ----------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("seed", range(N_RANDOM))
def test_random_networks_match_the_dense_twin(seed, dtype):
    """Random feedforward and recurrent networks (dense, sparse, conv, conv-transpose and
    pool projections, masks, constant and per-step currents, λ < 1 or 1), non-dyadic
    values, most LIF layers turned into ALIF: spike trains, counts, final potentials,
    weighted counts and events sent equal the reference bit for bit."""
    case = random_case(seed, dtype=dtype, dyadic_values=False, plain=True)
    assert _to_alif(case.net, np.random.default_rng(1000 + seed)) >= 1
    fwd = ns.run_forward(case.net, case.steps, record=True, **case.fwd_kwargs)
    ref = reference.run_phase(case.net, case.steps, inputs=case.inputs, spikes=case.spikes,
                              currents=case.currents, masks=case.masks, batch=case.batch)
    _assert_same(fwd, ref, case)


def _two_sources(dtype, kind, neuron, w, times, T):
    """Two source neurons, the first spiking at ``times[0]``, the second at ``times[1]``,
    into one ALIF neuron with weights ``w``."""
    net = ns.Network(dtype=dtype)
    net.add_population("s", 2, "source")
    net.add_population("h", 1, neuron)
    W = np.array([[w[0]], [w[1]]])
    pr = ns.Dense(W) if kind == "dense" else ns.Sparse.from_edges(
        [0, 1], [0, 0], list(w), pre_shape=(2,), post_shape=(1,))
    net.add_projection("W", "s", "h", pr)
    sp = np.zeros((1, T, 2), bool)
    sp[0, times[0], 0] = sp[0, times[1], 1] = True
    return net, sp


def _run_both(net, sp, T):
    res = ns.run_forward(net, T, spikes={"s": sp}, record=True)
    ref = reference.run_phase(net, T, spikes={"s": sp})
    _assert_same(res, ref, repr(net.populations["h"].neuron))
    return res


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_carried_between_base_and_adapted_threshold(dtype, kind):
    """θ = 1, β = 1, ρ = 0.5: a spike at t=0 (a = 1), then u = 1.375 at t=1 with
    th = 2: no spike, but u >= θ, so the neuron is updated every step without input and
    fires at t=3, when th = 1 + 0.25 <= u (t=2: th = 1.5 > u).  A carry tested against the
    adapted threshold instead of θ would leave it untouched and silent."""
    T = 6
    net, sp = _two_sources(dtype, kind, ALIF(v_th=1.0, beta=1.0, rho=0.5), (1.0, 2.375),
                           (0, 1), T)
    res = _run_both(net, sp, T)
    np.testing.assert_array_equal(res.spikes["h"][0, :, 0], [1, 0, 0, 1, 0, 0])
    assert res.v_final["h"][0, 0] == -0.625
    # it was updated at steps 0-3 (touched or carried), not after
    assert res.neuron_updates["h"][0] == 4


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("leak", [1.0, 0.75])
def test_adaptation_decays_while_untouched(dtype, kind, leak):
    """A spike at t=0 (a = 1, u = 0 with Θ = θ = 1), nothing for 9 steps, then input
    1.75 at t=10: the adaptation has decayed to 0.5^9 over the 9 untouched steps,
    th = 1 + 2^-9 and the neuron fires; without the missed decays th would be 2 and it
    would stay silent.  λ < 1 leaks the potential over the same gap."""
    T = 14
    net, sp = _two_sources(dtype, kind, ALIF(v_th=1.0, subtract=1.0, leak=leak, beta=1.0,
                                             rho=0.5), (1.0, 1.75), (0, 10), T)
    res = _run_both(net, sp, T)
    want = np.zeros(T, np.int8)
    want[[0, 10]] = 1
    np.testing.assert_array_equal(res.spikes["h"][0, :, 0], want)
    assert res.neuron_updates["h"][0] == 2           # touched twice, never carried


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("seed", range(12))
def test_beta_zero_is_lif(seed, dtype):
    """With β = 0 the threshold never moves: ALIF equals LIF (subtractive reset, no
    refractoriness) bit for bit, on the engine's other update path."""
    case = random_case(seed, dtype=dtype, dyadic_values=False, plain=True)
    lif = ns.run_forward(case.net, case.steps, record=True, **case.fwd_kwargs)
    assert _to_alif(case.net, np.random.default_rng(seed), share=1.0, beta=0.0) >= 1
    alif = ns.run_forward(case.net, case.steps, record=True, **case.fwd_kwargs)
    for name in lif.counts:
        np.testing.assert_array_equal(alif.spikes[name], lif.spikes[name])
        np.testing.assert_array_equal(alif.v_final[name], lif.v_final[name])
        if lif.weighted_counts[name] is not None:
            np.testing.assert_array_equal(alif.weighted_counts[name], lif.weighted_counts[name])
    for q in lif.sent:
        np.testing.assert_array_equal(alif.sent[q], lif.sent[q])


# -- the dense step -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_dense_step_kernel_matches_its_twin(dtype):
    rng = np.random.default_rng(3)
    n, m = 200, ALIF(v_th=0.7, leak=0.9, beta=0.6, rho=0.8)
    d = np.dtype(dtype).type
    args = (d(m.v_th), d(m.subtract), d(m.leak), d(m.beta), d(m.rho))
    v1, a1 = np.zeros(n, dtype), np.zeros(n, dtype)
    v2, a2 = v1.copy(), a1.copy()
    st = m.init_state(n, dtype)
    for t in range(40):
        cur = (rng.normal(0.3, 0.8, n) * (rng.random(n) < 0.6)).astype(dtype)
        s1, s2 = np.zeros(n, bool), np.zeros(n, bool)
        k1 = alif_step(v1, a1, cur, *args, s1)
        k2 = reference.alif_step(v2, a2, cur, *args, s2)
        s3, _ = m.step(st, cur)
        assert k1 == k2 == int(s1.sum())
        for x, y in ((s1, s2), (v1, v2), (a1, a2), (s1, s3), (v1, st.v), (a1, st.a)):
            np.testing.assert_array_equal(x, y)
    assert a1.max() > 1.0                      # the adaptation did accumulate


def test_step_refuses_bad_state_and_current():
    m = ALIF()
    st = m.init_state(3, np.float32)
    with pytest.raises(ValueError, match=r"state.a must be a float32 array of shape \(3,\)"):
        m.step(st._replace(a=np.zeros(3)), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"current must have shape \(3,\), got \(4,\)"):
        m.step(st, np.zeros(4))


# -- parameters and model files ---------------------------------------------------------------
@pytest.mark.parametrize("key,value,msg", [
    ("v_th", 0.0, r"ALIF.v_th must be in \(0, inf\), got 0.0"),
    ("subtract", -1.0, r"ALIF.subtract must be in \(0, inf\), got -1.0"),
    ("leak", 1.5, r"ALIF.leak must be in \(0, 1\], got 1.5"),
    ("leak", 0.0, r"ALIF.leak must be in \(0, 1\], got 0.0"),
    ("beta", -0.5, r"ALIF.beta must be in \[0, inf\), got -0.5"),
    ("rho", 0.0, r"ALIF.rho must be in \(0, 1\], got 0.0"),
    ("rho", 1.25, r"ALIF.rho must be in \(0, 1\], got 1.25"),
    ("rho", float("nan"), r"ALIF.rho must be finite, got nan"),
    ("beta", "big", r"ALIF.beta must be a real number, got str 'big'"),
])
def test_bad_parameters_one_line(key, value, msg):
    with pytest.raises((ValueError, TypeError), match=msg) as e:
        ALIF(**{key: value})
    assert "\n" not in str(e.value)


def _model(**alif):
    return {"format": "neurosim-model/1", "name": "alif_toy", "dtype": "float64",
            "populations": [{"name": "x", "shape": [64], "kind": "input"},
                            {"name": "h", "shape": [20], "kind": "alif", **alif},
                            {"name": "o", "shape": [10], "kind": "alif"}],
            "projections": [{"name": "F", "pre": "x", "post": "h", "kind": "dense",
                             "init_scale": 0.5},
                            {"name": "W", "pre": "h", "post": "o", "kind": "sparse", "p": 0.5},
                            {"name": "R", "pre": "o", "post": "h", "kind": "dense",
                             "delay": 1, "init_scale": 0.5}]}


def _toml(d):
    """The model dict of :func:`_model` as TOML text (scalar values only)."""
    def val(v):
        return f'"{v}"' if isinstance(v, str) else (str(v).lower() if isinstance(v, bool) else
                                                    repr(v))
    lines = [f"{k} = {val(v)}" for k, v in d.items() if not isinstance(v, list)]
    for table in ("populations", "projections"):
        for t in d[table]:
            lines.append(f"[[{table}]]")
            lines += [f"{k} = {val(v) if not isinstance(v, list) else v}" for k, v in t.items()]
    return "\n".join(lines) + "\n"


def test_model_file_builds_alif_and_names_bad_values():
    net = model_from_dict(_model(leak=0.875, beta=0.75, rho=0.625), seed=0)
    h = net.populations["h"].neuron
    assert NEURON_KINDS["alif"] is ALIF and isinstance(h, ALIF)
    assert (h.v_th, h.subtract, h.leak, h.beta, h.rho) == (1.0, 2.0, 0.875, 0.75, 0.625)
    with pytest.raises(ValueError, match=r"^[^\n]*'h'[^\n]*ALIF.rho must be in \(0, 1\], "
                                         r"got 1.5$"):
        model_from_dict(_model(rho=1.5), seed=0)
    with pytest.raises(ValueError, match=r"unknown key 't_ref'"):
        model_from_dict(_model(t_ref=2), seed=0)


# -- refusals ---------------------------------------------------------------------------------
def test_spide_training_refuses_alif():
    from neurosim.training.spide import SPIDEModel
    net = model_from_dict(_model(), seed=0)
    with pytest.raises(ValueError, match=r"^SPIDE training cannot train population 'h' of model "
                                         r"'alif'; allowed models: \['lif'\]$"):
        SPIDEModel(net, 10)


def test_train_command_refuses_alif(tmp_path):
    p = tmp_path / "alif.toml"
    p.write_text(_toml(_model()))
    res = CliRunner().invoke(main, ["train", "--model", str(p), "--dataset", "digits",
                                    "--epochs", "1", "--max-train", "8", "--max-test", "8",
                                    "--out", str(tmp_path / "t.h5")])
    err = res.stderr.strip()
    assert res.exit_code != 0 and "Traceback" not in res.stderr
    assert err.startswith("Error: ") and "\n" not in err, err
    assert "cannot train population 'h' of model 'alif'; allowed models: ['lif']" in err
    assert not (tmp_path / "t.h5").exists()


def test_backward_phase_and_nir_refuse_alif():
    net = model_from_dict(_model(), seed=0)
    fwd = ns.run_forward(net, 5, inputs={"x": np.ones((1, 64))})
    with pytest.raises(ValueError, match="the backward phase needs LIF populations; 'h' is ALIF"):
        ns.run_backward(net, fwd, {"o": np.ones((1, 10))}, 5)
    with pytest.raises(ValueError, match="neuron model 'alif' has no NIR export"):
        net.populations["h"].neuron.to_nir(1.0, np.float64)


# -- the CLI and the run file -----------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cli_info_and_simulate_resimulate_from_the_schema(tmp_path, dtype):
    """``neurosim info`` lists the ALIF populations with their parameters; ``neurosim
    simulate`` writes a run file (neuron attribute model "alif", weighted counts of the
    leaky layer) that tests/schema_resim.py, written from docs/hdf5-schema.md only,
    reproduces exactly."""
    import json

    import h5py
    d = _model(leak=0.875, beta=0.75, rho=0.625)
    d["dtype"] = dtype
    p = tmp_path / "alif.toml"
    p.write_text(_toml(d))
    runner = CliRunner()
    res = runner.invoke(main, ["info", "--model", str(p)])
    assert res.exit_code == 0, res.output
    assert "alif" in res.stdout and "beta=0.75" in res.stdout and "rho=0.625" in res.stdout
    out = str(tmp_path / "run.h5")
    res = runner.invoke(main, ["simulate", "--model", str(p), "--input", "digits",
                               "--n-samples", "3", "--steps", "16", "--record", "--out", out])
    assert res.exit_code == 0, res.output
    with h5py.File(out, "r") as f:
        g = f["network/populations/h"]
        assert g.attrs["kind"] == "alif"
        assert json.loads(g.attrs["neuron"]) == dict(model="alif", v_th=1.0, subtract=2.0,
                                                     leak=0.875, beta=0.75, rho=0.625)
        assert "weighted_counts" in f["forward/populations/h"]
        assert f["forward/populations/h/counts"][...].sum() > 0
        assert f["forward/populations/o/counts"][...].sum() > 0
    diffs = schema_resim.compare(out)
    assert diffs == [], "\n".join(diffs)


# -- the footprint ----------------------------------------------------------------------------
def test_architecture_lists_every_file_that_knows_alif():
    """docs/architecture.md, "What adding ALIF touched": every file it lists exists and
    mentions ALIF, and every file of the package, the tests and the docs that mentions
    ALIF is listed (the model stays where the table says)."""
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "architecture.md").read_text()
    section = text.split("## What adding ALIF touched", 1)[1].split("\n## ", 1)[0]
    table = section.split("Not touched:", 1)[0]
    listed = set(re.findall(r"`((?:neurosim|tests|docs)/[\w/.-]+\.(?:py|md))`", table))
    word = re.compile(r"(?<![a-z])alif(?![a-z])", re.IGNORECASE)
    found = {str(f.relative_to(root)) for d in ("neurosim", "tests", "docs")
             for f in (root / d).rglob("*") if f.suffix in (".py", ".md")
             and word.search(f.read_text(encoding="utf-8"))}
    assert listed == found, (sorted(listed - found), sorted(found - listed))


@pytest.mark.parametrize("seed", range(4))
def test_thread_count_does_not_change_alif_results(seed):
    """The same ALIF network at 1 and 2 threads: spike trains, counts and final
    potentials identical bit for bit (samples are independent; the chunking must not
    leak into the adaptation state)."""
    case = random_case(seed, dtype=np.float32, dyadic_values=False, plain=True)
    assert _to_alif(case.net, np.random.default_rng(2000 + seed)) >= 1
    kw = {k: v for k, v in case.fwd_kwargs.items() if k != "n_threads"}
    runs = [ns.run_forward(case.net, case.steps, record=True, n_threads=n, **kw)
            for n in (1, 2)]
    for r in runs[1:]:
        for name in runs[0].counts:
            assert np.array_equal(r.counts[name], runs[0].counts[name]), name
            assert np.array_equal(r.spikes[name], runs[0].spikes[name]), name
            assert np.array_equal(r.v_final[name], runs[0].v_final[name]), name
