"""CIFAR-10 / CIFAR-100 from the "python version" pickles, and SPIDE's augmentation.

Layouts (as unpacked from the official archives):

* CIFAR-10 (``cifar-10-batches-py/``): ``data_batch_1`` .. ``data_batch_5``, ``test_batch``,
  each a dict with ``data`` (uint8 ``[10000, 3072]``, rows = 1024 red, 1024 green, 1024 blue
  values, each plane row-major 32x32) and ``labels`` (list of ints 0..9); ``batches.meta``
  with ``label_names``.
* CIFAR-100 (``cifar-100-python/``): ``train`` and ``test`` with ``data`` and
  ``fine_labels`` (0..99) (also ``coarse_labels``); ``meta`` with ``fine_label_names``.

The files were written by Python 2's cPickle, so keys are byte strings.  **Pickles are
untrusted input**: loading an arbitrary pickle can run any code.  They are read with
:class:`SafeUnpickler`, which resolves only the globals that a CIFAR file needs (numpy's
array reconstructors, ``numpy.ndarray`` and ``numpy.dtype`` restricted to plain numeric
dtypes, ``_codecs.encode`` restricted to latin-1, and a few builtin containers / scalars);
any other global (``os.system``, ``subprocess.Popen``, ``builtins.eval``, ...) raises
:class:`DataError` before anything is called.
"""
import codecs
import io
import pickle
import pickletools
from pathlib import Path

import numpy as np

from . import DataError, Dataset
from .._validate import NeurosimError

#: SPIDE's CIFAR normalisation (used for CIFAR-10 and CIFAR-100).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)

_SPECS = {
    "cifar10": dict(folders=("cifar-10-batches-py",),
                    train=tuple(f"data_batch_{i}" for i in range(1, 6)), test=("test_batch",),
                    meta="batches.meta", label_key="labels", names_key="label_names",
                    n_classes=10),
    "cifar100": dict(folders=("cifar-100-python",), train=("train",), test=("test",),
                     meta="meta", label_key="fine_labels", names_key="fine_label_names",
                     n_classes=100),
}


# --------------------------------------------------------------------------- unpickler
def _numpy_attr(modules, name):
    for m in modules:
        try:
            mod = __import__(m, fromlist=[name])
        except ImportError:
            continue
        if hasattr(mod, name):
            return getattr(mod, name)
    return None


class _Forbidden(pickle.UnpicklingError):
    """An allowed global was called with forbidden arguments."""


def _safe_dtype(*args, **kwargs):
    d = np.dtype(*args, **kwargs)
    if d.hasobject or d.kind not in "biuf" or d.fields is not None:
        raise _Forbidden(f"numpy dtype {d} is not allowed (plain numeric dtypes only)")
    return d


def _latin1_encode(obj, encoding="utf-8", errors="strict"):
    try:
        name = codecs.lookup(encoding).name
    except (LookupError, TypeError):
        name = None
    if name != "iso8859-1":
        raise _Forbidden(f"_codecs.encode with encoding {encoding!r} is not allowed (latin-1 "
                         f"only)")
    return codecs.encode(obj, "latin-1", errors)


def _build_allowed():
    allowed = {}
    core = ("numpy._core.multiarray", "numpy.core.multiarray")
    numeric = ("numpy._core.numeric", "numpy.core.numeric")
    for mod in core:
        for nm in ("_reconstruct", "scalar"):
            fn = _numpy_attr(core, nm)
            if fn is not None:
                allowed[(mod, nm)] = fn
    for mod in numeric:
        fn = _numpy_attr(numeric, "_frombuffer")
        if fn is not None:
            allowed[(mod, "_frombuffer")] = fn
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = _safe_dtype
    for mod in ("builtins", "__builtin__"):
        for nm, obj in (("list", list), ("dict", dict), ("tuple", tuple), ("set", set),
                        ("frozenset", frozenset), ("bytes", bytes), ("bytearray", bytearray),
                        ("str", str), ("int", int), ("float", float)):
            allowed[(mod, nm)] = obj
    allowed[("_codecs", "encode")] = _latin1_encode
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a CIFAR pickle needs (see module doc).

    ``source`` names the file in error messages."""

    ALLOWED = _build_allowed()

    def __init__(self, file, source="<pickle>"):
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module, name):
        obj = self.ALLOWED.get((module, name))
        if obj is None:
            raise DataError(f"{self.source}: the pickle references {module}.{name}, which is "
                            f"not allowed (only numpy arrays, numeric dtypes, bytes and builtin "
                            f"containers may appear in a CIFAR file); the file is not a CIFAR "
                            f"batch or has been tampered with, do not load it with plain pickle")
        return obj

    def persistent_load(self, pid):
        raise DataError(f"{self.source}: the pickle uses persistent ids, which CIFAR files "
                        f"never do; refusing to load it")


#: largest memo index accepted (a real pickle numbers its memo entries 0, 1, 2, ...)
_MEMO_OPS = ("PUT", "BINPUT", "LONG_BINPUT")


def _check_opcodes(raw, p):
    """Walk the opcodes before unpickling (pure Python, no object is built).

    A memo index larger than the number of opcodes so far never occurs in a real pickle,
    and makes the C unpickler grow its memo table to that size: a damaged 70-byte file
    took 77 s and gigabytes of memory (found by tests/test_fuzz.py)."""
    n = 0
    try:
        for op, arg, pos in pickletools.genops(raw):
            n += 1
            if op.name in _MEMO_OPS and (not isinstance(arg, int) or not 0 <= arg <= n):
                raise DataError(f"{p}: the pickle stores memo index {arg} at byte {pos}, after "
                                f"only {n} opcodes; the file is damaged or crafted, refusing "
                                "to load it")
    except DataError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, UnicodeError,
            MemoryError, pickle.UnpicklingError) as e:
        raise DataError(f"{p}: not a readable CIFAR pickle ({type(e).__name__}: {e}); the "
                        f"file is truncated, damaged or of another format") from e


def load_pickle(path):
    """Load one CIFAR pickle with :class:`SafeUnpickler`; dict keys are returned as str."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise DataError(f"{p}: cannot read the file ({e.strerror})") from e
    _check_opcodes(raw, p)
    try:
        obj = SafeUnpickler(io.BytesIO(raw), source=str(p)).load()
    except DataError:
        raise
    except _Forbidden as e:
        raise DataError(f"{p}: forbidden content in the pickle: {e}; a CIFAR file holds only "
                        f"uint8 arrays, lists and byte strings, refusing to load it") from e
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, MemoryError, OverflowError, UnicodeError) as e:
        raise DataError(f"{p}: not a readable CIFAR pickle ({type(e).__name__}: {e}); the "
                        f"file is truncated, damaged or of another format") from e
    if not isinstance(obj, dict):
        raise DataError(f"{p}: a CIFAR pickle holds a dict, this one holds a "
                        f"{type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if isinstance(k, bytes):
            k = k.decode("latin-1")
        if not isinstance(k, str):      # e.g. a tuple key from a damaged file (fuzz finding)
            raise DataError(f"{p}: the pickled dict has a key of type {type(k).__name__} "
                            f"({k!r}); CIFAR files have string keys, the file is damaged")
        out[k] = v
    return out


# --------------------------------------------------------------------------- loader
def _resolve_dir(data_dir, name):
    spec = _SPECS[name]
    if data_dir is None:
        raise DataError(f"{name}: no data_dir given and CIFAR has no default folder; pass "
                        f"data_dir=<folder with {spec['test'][0]}> or its parent holding "
                        f"{spec['folders'][0]}/")
    folder = Path(data_dir)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise DataError(f"{name}: data_dir {folder} {what}; pass the folder with the CIFAR "
                        f"python pickles")
    if not (folder / spec["test"][0]).is_file():
        for sub in spec["folders"]:
            if (folder / sub / spec["test"][0]).is_file():
                return folder / sub
    return folder


def _labels(d, key, n_classes, p):
    raw = d[key]
    try:
        y = np.asarray(raw)
    except Exception as e:  # pragma: no cover - asarray of pickled lists does not fail
        raise DataError(f"{p}: '{key}' is not a label list ({e})") from e
    if y.ndim != 1 or (y.size and y.dtype.kind not in "iu"):
        raise DataError(f"{p}: '{key}' must be a 1-D list of integers, got "
                        f"{type(raw).__name__} giving shape {y.shape} dtype {y.dtype}")
    y = y.astype(np.int64)
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{p}: label {int(y[i])} at index {i} of '{key}' is out of range; "
                        f"labels must lie in [0, {n_classes - 1}] ({int(bad.sum())} bad)")
    return y


def _read_batch(p, spec, name):
    if not p.is_file():
        raise DataError(f"{name}: missing file {p.name} in folder {p.parent}; expected "
                        f"{', '.join(spec['train'] + spec['test'])} (and {spec['meta']}) "
                        f"from the CIFAR python archive")
    d = load_pickle(p)
    for key in ("data", spec["label_key"]):
        if key not in d:
            raise DataError(f"{p}: key '{key}' is missing (keys present: "
                            f"{sorted(map(str, d))}); a {name} batch has 'data' and "
                            f"'{spec['label_key']}'")
    x = d["data"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        got = (f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray)
               else type(x).__name__)
        raise DataError(f"{p}: 'data' must be a uint8 array of shape (N, 3072) (3 x 32 x 32 "
                        f"per row), got {got}")
    y = _labels(d, spec["label_key"], spec["n_classes"], p)
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{p}: image/label count mismatch: 'data' has {x.shape[0]} rows, "
                        f"'{spec['label_key']}' has {y.shape[0]} labels")
    return x.reshape(-1, 3, 32, 32), y


def _read_names(folder, spec, name):
    p = folder / spec["meta"]
    if not p.is_file():      # the meta file only names the classes: optional
        return tuple(str(i) for i in range(spec["n_classes"]))
    d = load_pickle(p)
    key = spec["names_key"]
    if key not in d:
        raise DataError(f"{p}: key '{key}' is missing (keys present: {sorted(map(str, d))})")
    names = d[key]
    if not isinstance(names, (list, tuple)) or len(names) != spec["n_classes"] or not all(
            isinstance(s, (bytes, str)) for s in names):
        raise DataError(f"{p}: '{key}' must be a list of {spec['n_classes']} strings, got "
                        f"{type(names).__name__} of length "
                        f"{len(names) if hasattr(names, '__len__') else '?'}")
    return tuple(s.decode("utf-8", "replace") if isinstance(s, bytes) else s for s in names)


def load_cifar(data_dir, name="cifar10"):
    """Load CIFAR-10 or CIFAR-100 from the python pickles as a :class:`Dataset`.

    ``data_dir`` is the folder with the batch files, or its parent holding
    ``cifar-10-batches-py/`` / ``cifar-100-python/``.  Returns ``x`` uint8 ``[N, 3, 32, 32]``
    and int64 labels (CIFAR-100: the 100 fine labels).  The meta file (class names) is
    optional; without it the names are ``'0'``, ``'1'``, ...
    """
    if name not in _SPECS:
        raise NeurosimError(f"CIFAR data set name must be one of {sorted(_SPECS)}, got {name!r}")
    spec = _SPECS[name]
    folder = _resolve_dir(data_dir, name)
    parts = []
    for files in (spec["train"], spec["test"]):
        xs, ys = zip(*(_read_batch(folder / f, spec, name) for f in files))
        x, y = np.concatenate(xs), np.concatenate(ys)
        if x.shape[0] == 0:
            raise DataError(f"{name}: the split made of {', '.join(files)} in {folder} is empty "
                            f"(0 images)")
        parts += [x, y]
    return Dataset(name, *parts, _read_names(folder, spec, name), str(folder))


# --------------------------------------------------------------------------- augmentation
def _check_rng(rng, fn):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{fn}: rng must be a numpy Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")


def random_crop(x, rng, size=32, padding=4):
    """Zero-pad the last two axes by ``padding`` and crop ``size x size`` at a random offset.

    ``x`` is ``[N, ..., H, W]``: one offset is drawn per item of axis 0 and applied to all
    its inner axes (channels, and frames for ``[N, T, C, H, W]`` event clips, as SPIDE's
    "consistent" DVS crop).  ``size`` is an int or ``(h, w)``.  Returns a new array of the
    input dtype.  torchvision's ``RandomCrop(32, padding=4)`` applied per image.
    """
    _check_rng(rng, "random_crop")
    x = np.asarray(x)
    if x.ndim < 3:
        raise NeurosimError(f"random_crop: x must be [N, ..., H, W] with N the batch axis, got "
                            f"shape {x.shape}; add a batch axis with x[None]")
    h, w = (size, size) if np.isscalar(size) else tuple(size)
    h, w, padding = int(h), int(w), int(padding)
    H, W = x.shape[-2] + 2 * padding, x.shape[-1] + 2 * padding
    if padding < 0 or not (0 < h <= H and 0 < w <= W):
        raise NeurosimError(f"random_crop: crop {h}x{w} with padding {padding} does not fit "
                            f"images of {x.shape[-2]}x{x.shape[-1]} (padded {H}x{W}); need "
                            f"padding >= 0 and 0 < size <= padded size")
    pad = [(0, 0)] * (x.ndim - 2) + [(padding, padding), (padding, padding)]
    xp = np.pad(x, pad)
    n = x.shape[0]
    oy = rng.integers(0, H - h + 1, size=n)
    ox = rng.integers(0, W - w + 1, size=n)
    out = np.empty(x.shape[:-2] + (h, w), dtype=x.dtype)
    for i in range(n):
        out[i] = xp[i, ..., oy[i]:oy[i] + h, ox[i]:ox[i] + w]
    return out


def random_flip(x, rng, p=0.5):
    """Mirror each item of axis 0 left-right (last axis) with probability ``p``."""
    _check_rng(rng, "random_flip")
    x = np.asarray(x)
    if x.ndim < 3:
        raise NeurosimError(f"random_flip: x must be [N, ..., H, W], got shape {x.shape}")
    if not 0.0 <= float(p) <= 1.0:
        raise NeurosimError(f"random_flip: p must lie in [0, 1], got {p}")
    flip = rng.random(x.shape[0]) < p
    out = x.copy()
    out[flip] = x[flip][..., ::-1]
    return out


def augment_cifar(x, rng):
    """SPIDE's CIFAR training augmentation: random crop 32 with padding 4, then horizontal
    flip with probability 0.5 (torchvision order).  Normalise afterwards with
    ``normalize(x, CIFAR_MEAN, CIFAR_STD)``."""
    return random_flip(random_crop(x, rng, 32, 4), rng)
