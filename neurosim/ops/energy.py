"""Energy ESTIMATES from exact operation counts and per-operation energy profiles.

A profile prices five kinds of operation in picojoules (``[energy_pj]`` of a TOML file,
format ``neurosim-energy/1``):

``synaptic_op``     one synaptic event (an accumulate; forward and backward ±1 events)
``mac``             one multiply-accumulate (analog input encoding; ANN / BPTT baselines)
``weight_update``   one term of the local weight update (pre rate × post error)
``neuron_update``   one neuron update the event-driven engine performs
``idle_neuron``     one neuron-step the engine skipped (0 on event-driven hardware;
                    a time-stepped chip may still pay for it)

Shipped profiles (``neurosim/data/energy/*.toml``): ``cmos45-fp32`` (default) and
``loihi``; any other TOML file with the same keys is a user profile.  The model, its
baselines and every assumption are written out in ``docs/ops-energy.md`` and in
:data:`ASSUMPTIONS`; every output is labelled an estimate.
"""
import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .. import _validate as V

#: value of a profile's ``format`` key.
FORMAT = "neurosim-energy/1"
#: the default profile.
DEFAULT_PROFILE = "cmos45-fp32"
#: keys of ``[energy_pj]``.
ENERGY_KEYS = ("synaptic_op", "mac", "weight_update", "neuron_update", "idle_neuron")
_TOP_KEYS = {"format", "name", "description", "source", "energy_pj"}

#: what the estimate assumes (printed with every estimate).
ASSUMPTIONS = (
    "an ESTIMATE: exact operation counts times per-operation energies of the profile",
    "only the priced operations count: memory traffic, data movement, routing, control "
    "and static power are not included",
    "SNN: every synaptic event (forward, backward +1 and -1) costs one synaptic_op; "
    "analog input encoding costs one mac per nonzero input x fan-out; the local weight "
    "update costs one weight_update per product with two nonzero factors; neuron updates "
    "the engine performed cost neuron_update, skipped neuron-steps idle_neuron",
    "ANN: the same layers without time (delay-0 projections only; feedback projections "
    "dropped), one dense pass = dense MACs per step; training = forward + error "
    "propagation (no error into the input) + weight gradient, all dense MACs; one "
    "neuron_update per neuron and pass",
    "BPTT: the same SNN simulated densely for T steps (input encoding once, every "
    "projection every step) and trained by backpropagation through time: forward, "
    "errors through every projection every step, weight gradients every step (input "
    "map once: its input is constant), one neuron_update per neuron and step in each "
    "direction",
    "the input is constant over time (direct encoding), as in SPIDE training",
)


class EnergyError(V.NeurosimError):
    """An energy profile is unknown or invalid."""


@dataclass(frozen=True)
class EnergyProfile:
    """Per-operation energies in picojoules (see the module docstring)."""
    name: str
    description: str
    source: str
    synaptic_op: float
    mac: float
    weight_update: float
    neuron_update: float
    idle_neuron: float
    path: str = ""

    def to_dict(self):
        return dict(name=self.name, description=self.description, source=self.source,
                    path=self.path, energy_pj={k: getattr(self, k) for k in ENERGY_KEYS})


def _profile_dir():
    return resources.files("neurosim") / "data" / "energy"


def list_profiles():
    """Names of the shipped profiles."""
    return sorted(p.name[:-5] for p in _profile_dir().iterdir() if p.name.endswith(".toml"))


def load_profile(name_or_path=DEFAULT_PROFILE):
    """A shipped profile by name, or a user profile from a ``.toml`` path.

    Raises :class:`EnergyError` listing the known names for an unknown name, and naming
    the key for a malformed file."""
    if isinstance(name_or_path, EnergyProfile):
        return name_or_path
    arg = str(name_or_path)
    known = list_profiles()
    if arg in known:
        res = _profile_dir() / f"{arg}.toml"
        return _parse(res.read_text(encoding="utf-8"), f"profile {arg!r}", str(res))
    p = Path(arg)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise EnergyError(f"energy profile file {arg!r} does not exist; known profiles: "
                              f"{', '.join(known)}")
        return _parse(p.read_text(encoding="utf-8"), f"energy profile file {arg!r}", str(p))
    raise EnergyError(f"unknown energy profile {arg!r}; known profiles: {', '.join(known)} "
                      "(or give the path of a .toml file with an [energy_pj] table)")


def _parse(text, what, path):
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise EnergyError(f"{what} is not valid TOML: {e}") from e
    unknown = sorted(set(d) - _TOP_KEYS)
    if unknown:
        raise EnergyError(f"{what}: unknown key(s) {unknown}; allowed: {sorted(_TOP_KEYS)}")
    if d.get("format", FORMAT) != FORMAT:
        raise EnergyError(f"{what}: format is {d.get('format')!r}, expected {FORMAT!r}")
    e = d.get("energy_pj")
    if not isinstance(e, dict):
        raise EnergyError(f"{what}: missing table [energy_pj] with keys {', '.join(ENERGY_KEYS)}")
    missing = [k for k in ENERGY_KEYS if k not in e]
    extra = sorted(set(e) - set(ENERGY_KEYS))
    if missing or extra:
        raise EnergyError(f"{what}: [energy_pj] " + (f"lacks {missing}" if missing else "")
                          + ("; " if missing and extra else "")
                          + (f"has unknown key(s) {extra}" if extra else "")
                          + f"; required: {', '.join(ENERGY_KEYS)} (picojoules per operation)")
    vals = {}
    for k in ENERGY_KEYS:
        v = e[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise EnergyError(f"{what}: energy_pj.{k} must be a finite number >= 0 (pJ), got {v!r}")
        vals[k] = float(v)
    name = d.get("name", Path(path).stem)
    return EnergyProfile(name=str(name), description=str(d.get("description", "")),
                         source=str(d.get("source", "")), path=path, **vals)


# ======================================================================================
# baselines
# ======================================================================================
def baseline_ops(network, T):
    """Operations of the two dense baselines per sample (see :data:`ASSUMPTIONS`).

    Returns ``{"ann": {"inference": {"macs", "neuron_updates"}, "training": {...}},
    "bptt": {...}}``."""
    from .table import weight_update_dense_macs
    T = V.check_int(T, "T", low=1)
    d_map = d_syn = d_ff = 0
    g_map = g_syn = g_ff = 0
    for pr in network.projections.values():
        is_map = network.populations[pr.pre].kind == "input"
        d, g = int(pr.dense_macs), weight_update_dense_macs(pr)
        if is_map:
            d_map += d
            g_map += g
        else:
            d_syn += d
            g_syn += g
        if is_map or pr.delay == 0:
            d_ff += d
            g_ff += g
    N = sum(p.n for p in network.spiking_populations)
    return {
        "ann": {"inference": dict(macs=d_ff, neuron_updates=N),
                "training": dict(macs=d_ff + (d_ff - d_map) + g_ff, neuron_updates=2 * N)},
        "bptt": {"inference": dict(macs=d_map + T * d_syn, neuron_updates=T * N),
                 "training": dict(macs=d_map + T * d_syn + T * d_syn + T * g_syn + g_map,
                                  neuron_updates=2 * T * N)},
    }


# ======================================================================================
# the estimate
# ======================================================================================
def _phase_pj(p, ph):
    """pJ of one phase's synaptic events and neuron updates."""
    idle = max(ph["dense_neuron_updates"] - ph["neuron_updates"], 0.0)
    return (ph["synaptic_operations"] * p.synaptic_op + ph["neuron_updates"] * p.neuron_update
            + idle * p.idle_neuron)


def estimate(counts, network, T, profile=DEFAULT_PROFILE):
    """Energy estimate per sample of SNN inference and training, and of the baselines.

    Parameters
    ----------
    counts : dict
        Per-sample counts, :meth:`OpsTable.energy_counts`: ``{"inference": {"forward":
        {synaptic_operations, neuron_updates, dense_neuron_updates},
        "input_encoding_macs"}, "training": {... + "backward": {...},
        "weight_update_macs"} or None}``.
    network : Network
    T : int
        Forward steps (the BPTT baseline runs T steps).
    profile : str, path or EnergyProfile

    Returns
    -------
    dict
        ``profile``, ``assumptions``, ``per_phase_pj`` (training counts if present),
        ``snn`` / ``ann`` / ``bptt`` with ``inference_pj`` and ``training_pj`` (None when
        the run has no backward phase), and ``ratios`` (SNN / baseline).
    """
    p = load_profile(profile)
    inf = counts["inference"]
    tr = counts.get("training")
    snn_inf = _phase_pj(p, inf["forward"]) + inf["input_encoding_macs"] * p.mac
    per_phase = {}
    snn_tr = None
    src = tr if tr is not None else inf
    per_phase["input_encoding"] = src["input_encoding_macs"] * p.mac
    per_phase["forward"] = _phase_pj(p, src["forward"])
    if tr is not None:
        per_phase["backward"] = _phase_pj(p, tr["backward"])
        per_phase["weight_update"] = tr["weight_update_macs"] * p.weight_update
        snn_tr = sum(per_phase.values())
    base = baseline_ops(network, T)
    out = dict(estimate=True, profile=p.to_dict(), assumptions=list(ASSUMPTIONS), unit="pJ per sample",
               per_phase_pj=per_phase,
               snn=dict(inference_pj=snn_inf, training_pj=snn_tr), ops=base)
    for k in ("ann", "bptt"):
        b = base[k]
        out[k] = {f"{m}_pj": b[m]["macs"] * p.mac + b[m]["neuron_updates"] * p.neuron_update
                  for m in ("inference", "training")}
    out["ratios"] = {
        "inference_vs_ann": _ratio(snn_inf, out["ann"]["inference_pj"]),
        "inference_vs_bptt": _ratio(snn_inf, out["bptt"]["inference_pj"]),
        "training_vs_ann": _ratio(snn_tr, out["ann"]["training_pj"]),
        "training_vs_bptt": _ratio(snn_tr, out["bptt"]["training_pj"]),
    }
    return out


def _ratio(a, b):
    return None if a is None or not b else a / b


def estimate_table(table, profile=DEFAULT_PROFILE):
    """:func:`estimate` for an :class:`~neurosim.ops.table.OpsTable`."""
    return estimate(table.energy_counts(), table.network, table.steps["forward"], profile)
