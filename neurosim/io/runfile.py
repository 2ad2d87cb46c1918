"""Run files: one HDF5 file per simulation run, one documented schema (version 1).

A run file holds the network (structure, parameters and weights), the stimulus of each
phase exactly as given, and everything the phases produced: spike counts, final
potentials, events sent per projection and sender neuron, per-synapse event counts and,
when recorded, the spike trains.  The schema is specified in ``docs/hdf5-schema.md``;
the file alone is enough to rebuild the network and re-simulate the run
(:func:`neurosim.simulate.rerun`; this module only reads and writes, it runs nothing).

The building blocks :func:`write_header`, :func:`write_network`, :func:`write_dataset`
(checksummed datasets), :func:`atomic_h5`, :func:`open_run_file` and :func:`read_network`
serve the files that extend this schema (a training run file is a run file plus
``/training``, :mod:`neurosim.training.checkpoint`).

:func:`write_run` writes atomically: the file is assembled under a temporary name in the
destination folder, flushed and fsync'ed, then renamed over the destination; on any
error the temporary file is removed and no output appears.  An existing file is only
replaced with ``force=True``.

:func:`read_run` validates while reading and raises :class:`RunFileError` (a
``ValueError``) naming the file and the missing or wrong piece.
"""
import contextlib
import hashlib
import warnings
import json
import os
import platform
import re
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version as _pkg_version
from pathlib import Path

import h5py
import numpy as np

import neurosim
from .. import _testhooks
from .. import _validate as V
from .. import counting
from ..connectivity import PROJECTION_KINDS
from ..results import PhaseResult
from ..network import Network
from ..neurons import BACKWARD_MODEL, NEURON_KINDS
from . import atomic as _atomic

#: value of the root attribute ``format``.
FORMAT = "neurosim-run"
#: schema version written, and the only one read.
SCHEMA_VERSION = 1
#: datasets with at least this many elements are gzip-compressed (with shuffle).
COMPRESS_MIN = 4096

_NAME_RE = re.compile(r"^[^/.][^/]*$")


class RunFileError(V.NeurosimError):
    """A run file is missing, unreadable, of another format or version, or incomplete."""


# ======================================================================================
# writing
# ======================================================================================
def write_dataset(g, name, a):
    a = np.asarray(a)
    if a.dtype.kind == "U":
        a = a.astype(h5py.string_dtype())
    kw = {}
    if a.ndim >= 1 and a.size > 0 and a.dtype.kind != "O":
        kw = dict(chunks=True, fletcher32=True)      # checksummed: corruption is detected
        if a.size >= COMPRESS_MIN:
            kw.update(compression="gzip", compression_opts=4, shuffle=True)
    return g.create_dataset(name, data=a, **kw)


def _json(x):
    return json.dumps(x, sort_keys=True, default=json_default)


def json_default(o):
    """``default=`` of :func:`json.dumps` for every JSON neurosim writes (run-file
    attributes, ``neurosim ops --json``): numpy integers and floats as numbers, arrays as
    lists, anything else as its ``str``."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _check_name(name, what):
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise V.NeurosimError(f"{what} name {name!r} cannot be stored in HDF5: it must not "
                              "contain '/' nor start with '.'")


def write_network(f, net):
    g = f.create_group("network")
    sched = net.schedule()
    bsched = net.schedule(backward=True)
    meta = dict(getattr(net, "metadata", None) or {})
    g.attrs["name"] = str(net.name)
    g.attrs["dtype"] = np.dtype(net.dtype).name
    g.attrs["populations"] = _json(list(net.populations))
    g.attrs["projections"] = _json(list(net.projections))
    g.attrs["schedule"] = _json(sched)
    g.attrs["backward_schedule"] = _json(bsched)
    g.attrs["metadata"] = _json(meta)
    gp = g.create_group("populations")
    for i, p in enumerate(net.populations.values()):
        _check_name(p.name, "population")
        h = gp.create_group(p.name)
        h.attrs["index"] = i
        h.attrs["kind"] = p.kind
        h.attrs["shape"] = np.array(p.shape, np.int64)
        h.attrs["n"] = p.n
        h.attrs["neuron"] = _json(p.neuron.to_dict() if p.spiking else {"model": p.kind})
        h.attrs["ternary"] = _json(p.ternary.to_dict() if p.spiking else None)
        h.attrs["schedule_position"] = sched.index(p.name)
        h.attrs["backward_schedule_position"] = bsched.index(p.name)
    gq = g.create_group("projections")
    for i, pr in enumerate(net.projections.values()):
        _check_name(pr.name, "projection")
        geometry, arrays = pr.to_stored()
        h = gq.create_group(pr.name)
        h.attrs["index"] = i
        h.attrs["kind"] = pr.kind
        h.attrs["pre"] = pr.pre
        h.attrs["post"] = pr.post
        h.attrs["delay"] = pr.delay
        h.attrs["port"] = pr.port
        h.attrs["geometry"] = _json(geometry)
        h.attrs["input_map"] = net.populations[pr.pre].kind == "input"
        h.attrs["n_synapses"] = pr.n_synapses
        h.attrs["dense_macs"] = pr.dense_macs
        for k, a in arrays.items():
            write_dataset(h, k, a)
    g.attrs[NETWORK_DIGEST] = np.bytes_(_network_digest(g).encode())


#: attribute of ``/network``: a digest of every dataset under it (see _network_digest)
NETWORK_DIGEST = "network_sha256"


class UncheckedNetworkWarning(UserWarning):
    """A run file without :data:`NETWORK_DIGEST` (written before neurosim added it): its
    weights are read, but an edited weight or a deleted bias cannot be detected."""


def _network_digest(g):
    """SHA-256 over the names, dtypes, shapes and bytes of every dataset under the group
    ``g`` (``/network``: weights, biases, connectivity), in name order.

    Fletcher-32 catches a damaged byte, but not a weight edited with h5py (HDF5 recomputes
    the checksum) nor a deleted optional dataset such as a projection's ``bias`` (the
    reader would build the projection without one): this digest catches both."""
    h = hashlib.sha256()
    names = []
    g.visit(names.append)
    for n in sorted(names):
        obj = g[n]
        if not isinstance(obj, h5py.Dataset):
            continue
        a = np.asarray(obj[()])
        data = (repr(a.tolist()).encode() if a.dtype.kind == "O"
                else a.dtype.str.encode() + a.tobytes())
        h.update(f"{n}\0{a.shape}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def _verify_network(r, g):
    """Compare ``/network``'s digest; a file without one is read with a warning."""
    stored = g.attrs.get(NETWORK_DIGEST)
    if stored is None:
        warnings.warn(f"run file {str(r.path)!r} has no network checksum (written by an older "
                      "neurosim): its weights are used as they are, but an edited weight or a "
                      "deleted bias cannot be detected; write it again to add one",
                      UncheckedNetworkWarning, stacklevel=4)
        return
    stored = stored.decode() if isinstance(stored, bytes) else str(stored)
    if stored != _network_digest(g):
        r.fail("its network (weights, biases or connectivity under /network) was changed "
               "or partly deleted after writing (network checksum mismatch); the file "
               "cannot be trusted")



def _write_arrays(g, name, arrays, net, kind):
    """A group ``name`` with one dataset per entry of ``arrays`` (stimulus, as given)."""
    if not arrays:
        return
    h = g.create_group(name)
    for k, a in arrays.items():
        _check_name(k, kind)
        a = np.asarray(a)
        if a.dtype == object or a.dtype.kind not in "biuf":
            raise V.NeurosimError(f"{name}[{k!r}] must be a numeric array, got dtype {a.dtype}")
        write_dataset(h, k, a)


def _write_spike_trains(h, trains, signed):
    """Spike trains [B, T, n] -> parallel int32 (sample, step, neuron) [+ int8 sign]."""
    b, t, j = np.nonzero(trains)
    s = h.create_group("spikes")
    write_dataset(s, "sample", b.astype(np.int32))
    write_dataset(s, "step", t.astype(np.int32))
    write_dataset(s, "neuron", j.astype(np.int32))
    if signed:
        write_dataset(s, "sign", trains[b, t, j].astype(np.int8))


def _leak(pop, forward):
    """λ of a population in one phase (1 for sources and CubaLIF, which have none)."""
    if not pop.spiking:
        return 1.0
    return pop.neuron.leak if forward else pop.ternary.leak


def _write_phase(f, res, stimulus):
    """Group /forward or /backward from a PhaseResult and its stimulus dict of dicts."""
    net = res.network
    fwd = res.phase == "forward"
    g = f.create_group(res.phase)
    g.attrs["steps"] = res.steps
    g.attrs["batch"] = res.batch
    g.attrs["wall_s"] = float(res.wall_s)
    for name, arrays in stimulus.items():
        _write_arrays(g, name, arrays, net, "population" if name != "masks" else "projection")
    gp = g.create_group("populations")
    for name in res.counts:
        h = gp.create_group(name)
        if fwd:
            write_dataset(h, "counts", res.counts[name])
        else:
            write_dataset(h, "count_pos", res.counts[name])
            write_dataset(h, "count_neg", res.counts_neg[name])
        write_dataset(h, "v_final", res.v_final[name])
        if res.weighted_counts.get(name) is not None and _leak(net.populations[name], fwd) != 1.0:
            write_dataset(h, "weighted_counts", res.weighted_counts[name])
        write_dataset(h, "neuron_updates", np.asarray(res.neuron_updates[name], np.int64))
        if res.spikes is not None and name in res.spikes:
            _write_spike_trains(h, res.spikes[name], signed=not fwd)
    gq = g.create_group("projections")
    for name, ops in (res.input_ops or {}).items():
        h = gq.create_group(name)
        h.attrs["input_map"] = True
        write_dataset(h, "synaptic_operations", np.asarray(ops, np.int64))
    for name in res.sent:
        pr = net.projections[name]
        h = gq.create_group(name)
        h.attrs["input_map"] = False
        ev = counting.synaptic_events(res, name)
        if fwd:
            write_dataset(h, "sent", res.sent[name])
            write_dataset(h, "synaptic_operations", ev)
        else:
            write_dataset(h, "sent_pos", res.sent[name])
            write_dataset(h, "sent_neg", res.sent_neg[name])
            write_dataset(h, "synaptic_operations", ev[0] + ev[1])
            write_dataset(h, "synaptic_operations_pos", ev[0])
            write_dataset(h, "synaptic_operations_neg", ev[1])
        for k, a in counting.per_synapse(res, name).items():
            write_dataset(h, k, a)
        if pr.spatial:
            for k, a in counting.per_kernel_weight(res, name).items():
                write_dataset(h, "count_per_kernel_weight" + k[len("count"):], a)


def _check_result(res, phase, net, what):
    if not isinstance(res, PhaseResult) or res.phase != phase:
        raise TypeError(f"{what} must be the {phase} PhaseResult (from run_{phase}), got {res!r}")
    if res.network is not net:
        raise V.NeurosimError(f"{what} was computed on another network than the one given")


def _version(pkg):
    try:
        return _pkg_version(pkg)
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


def write_run(path, network, forward, backward=None, *, inputs=None, spikes=None, currents=None,
              grad=None, gate=None, seed=None, command=None, force=False):
    """Write one run (network, stimulus, results) to ``path``, atomically.

    Parameters
    ----------
    path : str or Path
        Destination, conventionally ``*.h5``.  Its folder must exist.
    network : Network
    forward : PhaseResult
        Result of :func:`neurosim.run_forward` on ``network``.
    backward : PhaseResult, optional
        Result of :func:`neurosim.run_backward` on the same batch.
    inputs, spikes, currents : dict, optional
        The forward stimulus as given to ``run_forward`` (stored as given; the masks are
        taken from ``forward.masks``).
    grad, gate : dict, optional
        The backward stimulus as given to ``run_backward`` (``gate`` only when not the
        default ``forward.mask``).
    seed : int, optional
        Seed of the run (weights, random stimulus); stored as -1 when unknown.
    command : str, optional
        Command line or description of what produced the run.
    force : bool
        Replace an existing ``path``.  Without it an existing file raises
        :class:`FileExistsError` and is left untouched.

    Returns
    -------
    Path
        The written file.
    """
    if not isinstance(network, Network):
        raise TypeError(f"network must be a neurosim Network, got {type(network).__name__}")
    _check_result(forward, "forward", network, "forward")
    if backward is not None:
        _check_result(backward, "backward", network, "backward")
    elif grad or gate:
        raise V.NeurosimError("grad/gate given without a backward result")
    for what, d in (("inputs", inputs), ("spikes", spikes), ("currents", currents),
                    ("grad", grad), ("gate", gate)):
        for k in (d or {}):
            if k not in network.populations:
                raise V.NeurosimError(f"{what} given for unknown population {k!r}; known: "
                                      f"{list(network.populations)}")
    def fill(f):
        write_header(f, network, seed, command)
        write_network(f, network)
        _write_phase(f, forward, {"inputs": dict(inputs or {}),
                                  "source_spikes": dict(spikes or {}),
                                  "currents": dict(currents or {}),
                                  "masks": dict(forward.masks or {})})
        if backward is not None:
            _write_phase(f, backward, {"grad": dict(grad or {}), "gate": dict(gate or {})})

    return atomic_h5(path, fill, force=force)


def write_header(f, network, seed, command):
    f.attrs["format"] = FORMAT
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["neurosim_version"] = neurosim.__version__
    f.attrs["created"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    f.attrs["seed"] = -1 if seed is None else int(seed)
    f.attrs["dtype"] = np.dtype(network.dtype).name
    f.attrs["command"] = "" if command is None else str(command)
    f.attrs["numpy_version"] = np.__version__
    f.attrs["numba_version"] = _version("numba")
    f.attrs["h5py_version"] = h5py.__version__
    f.attrs["python_version"] = platform.python_version()


#: root attribute holding a digest of every other attribute of the file (see _attrs_digest)
ATTRS_DIGEST = "attrs_sha256"


def _attrs_digest(f):
    """SHA-256 over every attribute of every object (names and values), except the digest.

    Datasets carry Fletcher-32 checksums and object headers their own checksums, but
    h5py's ``str`` attributes live in HDF5's global heap, which has none: a damaged byte
    there changed a stored model name or a number inside a JSON configuration without any
    error (found by tests/test_fuzz.py).  The digest is stored as a fixed-length string in
    the root object header, which is checksummed."""
    h = hashlib.sha256()
    names = [""]
    f.visit(names.append)
    for n in sorted(names):
        obj = f[n] if n else f
        for k in sorted(obj.attrs):
            if n == "" and k == ATTRS_DIGEST:
                continue
            a = np.asarray(obj.attrs[k])
            data = (repr(a.tolist()).encode() if a.dtype.kind == "O"
                    else a.dtype.str.encode() + a.tobytes())
            h.update(f"{n}\0{k}\0{len(data)}\0".encode())
            h.update(data)
    return h.hexdigest()


def _verify_attrs(r):
    """Compare the stored attribute digest (files without one are not checked)."""
    stored = r.f.attrs.get(ATTRS_DIGEST)
    if stored is None:
        return
    stored = stored.decode() if isinstance(stored, bytes) else str(stored)
    if stored != _attrs_digest(r.f):
        r.fail("its attributes were damaged or changed after writing (attribute checksum "
               "mismatch); the file cannot be trusted")


def atomic_h5(path, fill, force=False):
    """Create the HDF5 file ``path`` atomically: ``fill(h5py.File)`` builds the file in
    memory (HDF5's ``core`` driver, no backing store), then its image is checked against
    the free space of the folder, written to a temporary file in the same folder with plain
    ``os.write``, fsynced and renamed into place.  On any exception (or interruption) the
    temporary file is removed and ``path`` is untouched.  Without ``force`` an existing
    ``path`` raises :class:`FileExistsError`.

    HDF5 itself never writes to the disk: a full disk (or any I/O error) is an ``OSError``
    from ``os.write`` with one clear message, never an error inside h5py's flush (which
    printed pages of tracebacks, segfaulted at exit and could even let a truncated file be
    renamed into place).  The price is the file's size in memory while it is written.
    (Mechanics and the clean-up of temporary files of killed writers:
    :mod:`neurosim.io.atomic`; test hooks ``h5-fill`` / ``h5-rename``:
    :mod:`neurosim._testhooks`.)"""
    path = _atomic.check_destination(path, force)
    _atomic.remove_stale_temps(path)
    tmp = _atomic.new_temp(path)
    try:
        name = f"{tmp.name}.mem"
        with h5py.File(name, "w", driver="core", backing_store=False,
                       libver=("v110", "latest")) as f:
            fill(f)
            f.attrs[ATTRS_DIGEST] = np.bytes_(_attrs_digest(f).encode())
            f.flush()
            image = f.id.get_file_image()
        _atomic.check_free_space(path, len(image))
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        view = memoryview(image)        # halves without copies (neurosim/memory.py counts
        try:                            # the image once)
            half = len(image) // 2
            _atomic.write_all(fd, view[:half], tmp)
            _testhooks.pause("h5-fill")         # the temporary file half-written
            _atomic.write_all(fd, view[half:], tmp)
        finally:
            os.close(fd)
        view.release()
        del image
        _testhooks.pause("h5-rename")   # (commit fsyncs the file first)
        _atomic.commit(tmp, path, force)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


# ======================================================================================
# reading
# ======================================================================================
class Run:
    """A run file read back (see :func:`read_run`).

    Attributes
    ----------
    path : Path
    attrs : dict
        Root attributes (format, schema_version, neurosim_version, created, seed, dtype,
        command, ...).
    network : Network
        Rebuilt from ``/network`` (``network.metadata`` holds the model metadata).
    forward, backward : PhaseResult or None
        The stored results as PhaseResults (``program`` is None), so that
        :mod:`neurosim.counting` works on them.  ``backward`` is None without a backward
        phase.
    inputs, source_spikes, currents, masks : dict
        The forward stimulus as stored.
    grad, gate : dict
        The backward stimulus as stored.
    synapse_counts : dict
        ``{"forward": {projection: {dataset: array}}, "backward": ...}``: the stored
        per-synapse counts (``count``, ``count_pos``, ``count_neg``,
        ``count_per_kernel_weight*``).
    """

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __repr__(self):
        ph = "forward+backward" if self.backward is not None else "forward"
        return f"Run({str(self.path)!r}, {self.network!r}, {ph}, batch={self.forward.batch})"


class _Reader:
    def __init__(self, path, f):
        self.path = path
        self.f = f

    def fail(self, msg):
        raise RunFileError(f"run file {str(self.path)!r}: {msg}")

    def group(self, where, key):
        g = where.get(key) if isinstance(where, h5py.Group) else None
        if not isinstance(g, h5py.Group):
            self.fail(f"missing group {where.name.rstrip('/')}/{key}")
        return g

    def data(self, g, key, required=True):
        d = g.get(key)
        if d is None:
            if required:
                self.fail(f"missing dataset {g.name}/{key}")
            return None
        if not isinstance(d, h5py.Dataset):
            self.fail(f"{g.name}/{key} should be a dataset")
        return d[()]

    def attr(self, obj, key, kind=None):
        if key not in obj.attrs:
            self.fail(f"missing attribute {key!r} of {obj.name}")
        v = obj.attrs[key]
        if isinstance(v, bytes):
            v = v.decode()
        if kind == "json":
            try:
                return json.loads(v)
            except (TypeError, ValueError) as e:
                self.fail(f"attribute {key!r} of {obj.name} is not valid JSON: {e}")
        return v

    def arrays(self, g, key):
        h = g.get(key)
        if h is None:
            return {}
        if not isinstance(h, h5py.Group):
            self.fail(f"{g.name}/{key} should be a group")
        return {k: h[k][()] for k in h}


def _check_global_heaps(p):
    """Walk every global heap collection of the file before HDF5 does.

    Variable-length strings (h5py's ``str`` attributes) live in global heap collections
    ("GCOL"), which carry no checksum.  A damaged collection whose object walk does not
    advance (an object of size 0) sends the HDF5 library (2.0.0) into an endless loop
    inside ``H5HG__cache_heap_deserialize``; tests/test_fuzz.py found such a file.  The
    walk below follows the library's own (format spec III.E) and refuses what it would
    loop on or read past; a valid file always passes."""
    import mmap
    with open(p, "rb") as fh:
        try:
            m = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:                 # empty file: h5py reports it
            return
    with m:
        base = m.find(b"\x89HDF\r\n\x1a\n")
        if base < 0 or len(m) < base + 16:      # h5py reports those files itself
            return
        lengths = m[base + 10] if m[base + 8] >= 2 else m[base + 14]
        if lengths != 8:                   # not written by neurosim's h5py: not checked
            return
        i = m.find(b"GCOL")
        while i >= 0:
            if i + 16 <= len(m) and m[i + 4] == 1:
                size = int.from_bytes(m[i + 8:i + 16], "little")
                end = i + size
                if size < 16 or end > len(m):
                    raise RunFileError(f"run file {str(p)!r} is damaged: global heap at byte "
                                       f"{i} claims {size} bytes, the file has {len(m) - i}")
                q = i + 16
                while q + 16 <= end:
                    idx = int.from_bytes(m[q:q + 2], "little")
                    osize = int.from_bytes(m[q + 8:q + 16], "little")
                    need = 16 + (osize + 7) // 8 * 8 if idx else osize
                    if need == 0 or need > end - q:
                        raise RunFileError(
                            f"run file {str(p)!r} is damaged: global heap object at byte {q} "
                            f"has size {osize} (the collection ends at byte {end}); the HDF5 "
                            "library would loop on it, refusing to open the file")
                    q += need
            i = m.find(b"GCOL", i + 1)


def _open(path):
    p = Path(path)
    if not p.exists():
        raise RunFileError(f"run file {str(p)!r} does not exist")
    if not p.is_file():
        raise RunFileError(f"run file {str(p)!r} is not a regular file")
    _check_global_heaps(p)
    try:
        return h5py.File(p, "r")
    except OSError as e:
        try:
            sig = h5py.is_hdf5(p)
        except OSError:
            sig = False
        if not sig:
            raise RunFileError(f"{str(p)!r} is not an HDF5 file; expected a neurosim run file "
                               "written by neurosim.io.write_run or `neurosim simulate`") from e
        raise RunFileError(f"run file {str(p)!r} cannot be opened (truncated or corrupt HDF5 "
                           f"file): {e}") from e


def _check_header(r):
    f = r.f
    fmt = f.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt is None:
        r.fail(f"no root attribute 'format'; not a neurosim run file (expected format = {FORMAT!r})")
    if fmt != FORMAT:
        r.fail(f"root attribute format is {fmt!r}, expected {FORMAT!r}")
    ver = f.attrs.get("schema_version")
    if ver is None:
        r.fail("no root attribute 'schema_version'")
    if int(ver) != SCHEMA_VERSION:
        r.fail(f"schema_version {int(ver)} is not supported; this neurosim "
               f"{neurosim.__version__} reads schema_version {SCHEMA_VERSION}")


def _neuron(r, h, d):
    if not isinstance(d, dict) or "model" not in d:
        r.fail(f"attribute 'neuron' of {h.name} must be a JSON object with a 'model' key, got {d!r}")
    d = dict(d)
    model = d.pop("model")
    if model in ("input", "source"):
        return model
    if model in NEURON_KINDS:
        return NEURON_KINDS[model].from_dict(d)
    r.fail(f"{h.name}: unknown neuron model {model!r}; known: "
           f"{', '.join(['input', 'source', *NEURON_KINDS])}")


def _projection(r, h):
    kind = r.attr(h, "kind")
    cls = PROJECTION_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        r.fail(f"{h.name}: unknown projection kind {kind!r}; known: "
               f"{', '.join(PROJECTION_KINDS)}")
    geo = r.attr(h, "geometry", "json")
    delay, port = int(r.attr(h, "delay")), int(r.attr(h, "port"))
    arrays = {k: r.data(h, k) for k in cls.stored_arrays}
    bias = r.data(h, "bias", required=False)
    if bias is not None:
        arrays["bias"] = bias
    return cls.from_stored(geo, arrays, delay=delay, port=port)


def read_network(r):
    g = r.group(r.f, "network")
    gp = r.group(g, "populations")
    gq = r.group(g, "projections")
    pop_order = r.attr(g, "populations", "json")
    proj_order = r.attr(g, "projections", "json")
    dtype = r.attr(g, "dtype")
    try:
        net = Network(dtype=np.dtype(dtype).type, name=str(r.attr(g, "name")))
        for name in pop_order:
            h = r.group(gp, name)
            tern = r.attr(h, "ternary", "json")
            net.add_population(name, tuple(int(s) for s in r.attr(h, "shape")),
                               _neuron(r, h, r.attr(h, "neuron", "json")),
                               BACKWARD_MODEL.from_dict(tern) if tern else None)
        for name in proj_order:
            h = r.group(gq, name)
            net.add_projection(name, str(r.attr(h, "pre")), str(r.attr(h, "post")), _projection(r, h))
    except RunFileError:
        raise
    except (V.NeurosimError, TypeError, KeyError) as e:
        r.fail(f"the stored network is invalid: {e}")
    stored = r.attr(g, "schedule", "json")
    if stored != net.schedule():
        r.fail(f"stored schedule {stored} differs from the rebuilt network's {net.schedule()}")
    net.metadata = r.attr(g, "metadata", "json") if "metadata" in g.attrs else {}
    _verify_network(r, g)       # after the structural checks, which name what is wrong
    return net


def _spike_trains(r, h, B, T, n, signed):
    s = h.get("spikes")
    if s is None:
        return None
    b, t, j = (r.data(s, k).astype(np.int64) for k in ("sample", "step", "neuron"))
    # backward spikes are ternary: without their sign they would read as +1 (fuzz finding)
    sign = r.data(s, "sign", required=signed) if signed else None
    if not (b.shape == t.shape == j.shape) or (sign is not None and sign.shape != b.shape):
        r.fail(f"{s.name}: sample, step, neuron (and sign) must have the same length")
    if sign is not None and sign.size and not np.all((sign == 1) | (sign == -1)):
        r.fail(f"{s.name}/sign must hold -1 or +1")
    if b.size and (b.max() >= B or t.max() >= T or j.max() >= n or min(b.min(), t.min(), j.min()) < 0):
        r.fail(f"{s.name}: spike indices out of range for batch {B}, steps {T}, {n} neurons")
    out = np.zeros((B, T, n), np.int8)
    out[b, t, j] = 1 if sign is None else sign
    return out


def _read_phase(r, net, phase):
    g = r.f.get(phase)
    if g is None:
        if phase == "forward":
            r.fail("missing group /forward")
        return None, {}, {}
    fwd = phase == "forward"
    T, B = int(r.attr(g, "steps")), int(r.attr(g, "batch"))
    gp, gq = r.group(g, "populations"), r.group(g, "projections")
    kw = dict(counts={}, counts_neg={}, v_final={}, weighted_counts={}, neuron_updates={},
              sent={}, sent_neg={}, input_ops={})
    spikes = {}
    for name in gp:
        if name not in net.populations:
            r.fail(f"{gp.name}/{name} names no population of the stored network")
        h = gp[name]
        if fwd:
            c = r.data(h, "counts")
            kw["counts"][name], kw["counts_neg"][name] = c, np.zeros_like(c)
        else:
            kw["counts"][name], kw["counts_neg"][name] = r.data(h, "count_pos"), r.data(h, "count_neg")
        if kw["counts"][name].shape != (B, net.populations[name].n):
            r.fail(f"{h.name}: counts have shape {kw['counts'][name].shape}, expected "
                   f"({B}, {net.populations[name].n})")
        kw["v_final"][name] = r.data(h, "v_final")
        kw["weighted_counts"][name] = r.data(h, "weighted_counts", required=False)
        kw["neuron_updates"][name] = r.data(h, "neuron_updates")
        st = _spike_trains(r, h, B, T, net.populations[name].n, signed=not fwd)
        if st is not None:
            spikes[name] = st
    syn = {}
    for name in gq:
        if name not in net.projections:
            r.fail(f"{gq.name}/{name} names no projection of the stored network")
        h = gq[name]
        if bool(h.attrs.get("input_map", False)):
            kw["input_ops"][name] = r.data(h, "synaptic_operations")
            continue
        if fwd:
            s = r.data(h, "sent")
            kw["sent"][name], kw["sent_neg"][name] = s, np.zeros_like(s)
        else:
            kw["sent"][name], kw["sent_neg"][name] = r.data(h, "sent_pos"), r.data(h, "sent_neg")
        syn[name] = {k: h[k][()] for k in h if k.startswith("count")}
    if fwd:
        stim = {k: r.arrays(g, k) for k in ("inputs", "source_spikes", "currents", "masks")}
    else:
        stim = {k: r.arrays(g, k) for k in ("grad", "gate")}
    res = PhaseResult(phase=phase, steps=T, batch=B, network=net, program=None,
                      masks=None, spikes=spikes or None, wall_s=float(g.attrs.get("wall_s", 0.0)),
                      **kw)
    return res, stim, syn


@contextlib.contextmanager
def open_run_file(path, *, verify=True, name_errors=False):
    """Open a run file for reading; yields a reader (``r.f`` the h5py file; ``r.group``,
    ``r.data``, ``r.attr``, ``r.arrays`` fetch or fail, ``r.fail`` raises).

    The file must exist and be HDF5 of this format and schema version (checked before the
    body runs); with ``verify`` the attribute digest (:data:`ATTRS_DIGEST`) is compared
    after the body has read everything.  HDF5 and decoding errors inside the body become
    :class:`RunFileError` "corrupt or truncated" (``name_errors``: with the exception's
    type, e.g. ``OSError: ...``).  Used by :func:`read_run`, :func:`load_network` and the
    training checkpoints (:mod:`neurosim.training.checkpoint`)."""
    f = _open(path)
    r = _Reader(path, f)
    caught = (OSError, KeyError, RuntimeError, ValueError, TypeError, IndexError)
    try:
        with f:
            _check_header(r)
            yield r
            if verify:
                _verify_attrs(r)
    except RunFileError:
        raise
    except caught + ((AttributeError,) if name_errors else ()) as e:
        why = f"{type(e).__name__}: {e}" if name_errors else str(e)
        raise RunFileError(f"run file {str(path)!r} is corrupt or truncated: {why}") from e


def read_run(path):
    """Read and validate a run file; returns a :class:`Run`.

    Raises
    ------
    RunFileError
        The file does not exist, is not HDF5, is truncated or corrupt, has another
        ``format`` or ``schema_version``, or lacks a required group, dataset or attribute.
    """
    with open_run_file(path) as r:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in r.f.attrs.items()}
        net = read_network(r)
        fwd, stim, syn_f = _read_phase(r, net, "forward")
        bwd, bstim, syn_b = _read_phase(r, net, "backward")
    fwd.masks = dict(stim["masks"])
    if bwd is not None:
        bwd.masks = fwd.masks
    return Run(path=Path(path), attrs=attrs, network=net, forward=fwd, backward=bwd,
               inputs=stim["inputs"], source_spikes=stim["source_spikes"],
               currents=stim["currents"], masks=stim["masks"], grad=bstim.get("grad", {}),
               gate=bstim.get("gate", {}), synapse_counts={"forward": syn_f, "backward": syn_b})


def load_network(path):
    """The :class:`~neurosim.Network` stored in a run file (validated like :func:`read_run`)."""
    with open_run_file(path) as r:
        return read_network(r)
