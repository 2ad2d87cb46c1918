"""One opener for every model source: :func:`open_network`.

=====================================  ===============================================
source                                 opened by
=====================================  ===============================================
a :class:`~neurosim.Network`           itself
``*.h5`` / ``*.hdf5`` (run file)       :func:`neurosim.io.runfile.load_network` (the
                                       stored network, trained weights included)
``*.nir``                              :func:`open_nir` (``from_nir``; the time step
                                       chosen and explained)
``*.toml`` or a model name             :func:`neurosim.models.load_model` (weights drawn
                                       from ``seed``)
=====================================  ===============================================

``neurosim simulate``, ``info`` and ``export-nir`` open their ``--model`` through it.
"""
import os

from ..models import load_model
from ..network import Network
from .nir import DEFAULT_DT, NIRError, exporter_conventions, from_nir, read_nir
from .runfile import load_network

#: suffixes of run files.
RUN_SUFFIXES = (".h5", ".hdf5")
#: suffix of NIR files.
NIR_SUFFIX = ".nir"


#: the import options of :func:`neurosim.io.nir.from_nir` that ``open_network`` passes
#: on (the CLI's ``--leak-integration``, ``--threshold``, ``--input-kind``,
#: ``--if-gain``, ``--lif-gain``).
NIR_OPTIONS = ("leak_integration", "threshold", "input_kind", "if_gain", "lif_gain")
_NIR_FLAGS = dict(leak_integration="--leak-integration", threshold="--threshold",
                  input_kind="--input-kind", if_gain="--if-gain", lif_gain="--lif-gain")


def open_network(source, *, seed=0, dt=None, nir_options=None):
    """A :class:`~neurosim.Network` from a Network, a run file (``.h5``), a NIR file
    (``.nir``: :func:`open_nir`), a model file (``.toml``) or a model name (``seed``:
    the weight initialisation of model files and names)."""
    if isinstance(source, Network):
        return source
    s = os.fspath(source)
    if s.endswith(RUN_SUFFIXES):
        return load_network(s)
    if s.endswith(NIR_SUFFIX):
        return open_nir(s, dt=dt, **(nir_options or {}))
    if dt is not None or any(v is not None for v in (nir_options or {}).values()):
        raise NIRError(f"--dt and the NIR import options apply to .nir models only, not to "
                       f"{s!r}")
    return load_model(s, seed=seed)


def open_nir(path, *, dt=None, **options):
    """Import a NIR file, choosing and explaining the time step.

    NIR stores no time step, and each exporter means something else by ``r`` and ``tau``
    (:func:`neurosim.io.nir.exporter_conventions`).  With ``dt=None``: a file written by
    neurosim is read at the dt it was exported for; a file whose parameters match another
    exporter's convention is refused with a message naming the exporter, its dt and the
    options that reproduce it (never a silent 10x); any other file gets 1e-3.  With ``dt``
    given, a mismatch with a detected convention is a note.  The notes (what dt was used
    and why) are in ``net.metadata["nir"]["notes"]``; the CLI prints them on stderr.
    ``options``: :data:`NIR_OPTIONS` (None: from_nir's default)."""
    options = {k: v for k, v in options.items() if v is not None}
    bad = set(options) - set(NIR_OPTIONS)
    if bad:
        raise NIRError(f"unknown NIR import option(s) {sorted(bad)}; allowed: {list(NIR_OPTIONS)}")
    graph = read_nir(path)
    conv = exporter_conventions(graph)
    notes = []
    foreign = [c for c in conv if c["exporter"] != "neurosim"]

    def hint(c):
        flags = [f"--dt {c['dt']:g}"] + [f"{_NIR_FLAGS[k]} {v}" for k, v in c["options"].items()]
        return f"{c['exporter']} ({c['evidence']}): use {' '.join(flags)}"

    if dt is None:
        if foreign:
            raise NIRError(f"NIR file {os.fspath(path)!r} stores no time step and looks like an "
                           f"export of " + "; ".join(hint(c) for c in foreign)
                           + " (docs/nir.md, exporter conventions); give --dt")
        if conv:
            dt = conv[0]["dt"]
            notes.append(f"dt = {dt:g} (recorded by neurosim's export)")
        else:
            dt = DEFAULT_DT
            notes.append(f"dt = {dt:g} (the default; NIR stores no time step: time constants "
                         "and LIF gains depend on it, see --dt)")
    else:
        notes.append(f"dt = {dt:g} (--dt)")
        for c in foreign:
            off = [f"{_NIR_FLAGS[k]} {v}" for k, v in c["options"].items()
                   if options.get(k) != v]
            if c["dt"] != dt or off:
                notes.append(f"note: this file looks like an export of {hint(c)}")
    stem = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    named = "neurosim_name" in (getattr(graph, "metadata", None) or {})
    net = from_nir(graph, dt=dt, name=None if named else stem, **options)
    net.metadata["nir"]["notes"] = notes
    return net
