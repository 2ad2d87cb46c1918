"""Numba kernels: the only place in neurosim where code is jitted.

Kernels take arrays and scalars (never classes, dicts or files), update preallocated
outputs in place and return small integers.  Options come from :mod:`neurosim.config`.

Compilation cache.  Numba decides whether a cached function is stale from its own source
file only, so an edit of ``scatter.py`` would leave the cached ``engine.run_phase``
(which inlines the scatters) in use.  Importing this package therefore computes
:data:`CACHE_KEY`, a hash over every ``*.py`` file of this folder, ``config.py``, the
kernel options and the numba / numpy versions, and imports every kernel module with
Numba's cache pointed at a folder named by that key (:data:`CACHE_DIR`):

1. ``$NUMBA_CACHE_DIR/neurosim-<key>`` if ``NUMBA_CACHE_DIR`` is set (and writable);
2. else ``neurosim/kernels/__pycache__/nb-<key>`` if writable (a checkout or a virtualenv);
3. else ``$XDG_CACHE_HOME/neurosim/numba-<key>`` (``~/.cache`` by default);
4. else (nothing writable) a temporary ``neurosim-numba-<key>-*`` folder of this process,
   deleted at exit: every run compiles (:data:`CACHE_PERSISTENT` is False), but Numba's
   own, unkeyed locations, which could load a stale kernel, are never used.

Any change of a kernel or of the options selects a new, empty folder: nothing stale is
ever loaded.  Folders of other keys in the same place are deleted once there are more
than :data:`KEEP_OLD` of them and they were last used more than a day ago.
``NEUROSIM_NO_CACHE=1`` turns caching off (:data:`CACHE_DIR` is then None).  Numba's
global setting is restored after the imports, so other code's caching is unaffected.
"""
import atexit
import hashlib
import importlib
import os
import pkgutil
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numba
import numba.core.event
import numpy

from .. import config

#: folders of other cache keys kept (besides the current one) in the cache's parent folder.
KEEP_OLD = 3
_MAX_IDLE_S = 86400.0
_HERE = Path(__file__).resolve().parent


def cache_key():
    """The key of this version of the kernels.

    Returns
    -------
    str
        16 hex digits of a sha256 over the names and bytes of ``neurosim/kernels/*.py``
        and ``neurosim/config.py``, the Numba options of :mod:`neurosim.config`, the
        numba and numpy versions and whether the build is profiled (:data:`.config.PROFILE`).
    """
    h = hashlib.sha256()
    for p in sorted(_HERE.glob("*.py")) + [_HERE.parent / "config.py"]:
        data = p.read_bytes()
        h.update(f"{p.parent.name}/{p.name}:{len(data)}:".encode())
        h.update(data)
    opts = {k: sorted(getattr(config, k).items()) for k in ("NJIT", "NJIT_NORT", "NJIT_INLINE", "NJIT_PARALLEL")}
    h.update(repr((opts, numba.__version__, numpy.__version__)).encode())
    if config.PROFILE:              # the profiled build (config.PROFILE) is another build
        h.update(b"profile")
    return h.hexdigest()[:16]


def _writable(path):
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
        return True
    except OSError:
        return False


def _candidates(key):
    user = numba.config.CACHE_DIR
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return ([Path(user) / f"neurosim-{key}"] if user else []) + \
        [_HERE / "__pycache__" / f"nb-{key}", Path(home) / "neurosim" / f"numba-{key}"]


def _prune(current):
    """Delete the folders of other keys beyond the :data:`KEEP_OLD` most recently used."""
    prefix = current.name[:-16]
    pattern = re.compile(re.escape(prefix) + r"[0-9a-f]{16}")
    try:
        os.utime(current)                                  # marks the folder as used
        others = [p for p in current.parent.iterdir()
                  if p != current and pattern.fullmatch(p.name) and p.is_dir()]
        others.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    now = time.time()
    for p in others[KEEP_OLD:]:
        try:
            if now - p.stat().st_mtime > _MAX_IDLE_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _choose_cache_dir(key):
    if not config.CACHE:
        return None
    global CACHE_PERSISTENT
    for path in _candidates(key):
        if _writable(path):
            _prune(path)
            return path
    # nowhere to keep it: a keyed folder of this process only, never Numba's own (unkeyed)
    # locators, which could load a stale kernel
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f"neurosim-numba-{key}-"))
    except OSError:
        return None
    atexit.register(shutil.rmtree, tmp, True)
    CACHE_PERSISTENT = False
    return tmp


#: False when no cache folder is writable and :data:`CACHE_DIR` is a temporary folder of
#: this process (every run compiles).
CACHE_PERSISTENT = True
#: key of this version of the kernels (see the module docstring).
CACHE_KEY = cache_key()
#: the folder Numba caches the kernels in (a Path), or None (caching off or impossible).
CACHE_DIR = _choose_cache_dir(CACHE_KEY)


def cache_warm(*kernels, cuba=None):
    """Whether the on-disk cache already holds the named kernels (``"engine.run_phase"``,
    ``"module.function"``): False means their first call compiles them (30-50 s for the
    engine on 2 cores).  Always False when caching is off.

    ``cuba`` selects a specialisation of ``engine.run_phase`` (decision 43): False asks
    for the one compiled for networks without a CubaLIF population (what training runs),
    True for the one with, None for either.  A kernel counts as cached when Numba's index
    holds an entry for it that Numba would load now (same source, same CPU and options);
    where that index cannot be read (another Numba version's layout), the presence of
    the index file decides, as before."""
    if CACHE_DIR is None:
        return False
    for k in kernels:
        sigs = _cached_signatures(k)
        if sigs is None:                     # unreadable index: the file decides
            if not any(CACHE_DIR.rglob(f"{k}-*.nbi")):
                return False
            continue
        want = None if cuba is None or k != "engine.run_phase" else bool(cuba)
        if not any(want is None or (s[-1] != numba.types.none) == want for s in sigs):
            return False
    return True


def _cached_signatures(name):
    """Argument types of the entries of ``name``'s cache index that Numba would load in
    this process, or None where the index cannot be read (Numba's private layout)."""
    mod, _, fn = name.partition(".")
    try:
        disp = getattr(importlib.import_module(f"{__name__}.{mod}"), fn)
        cache = disp._cache
        codegen = disp.targetctx.codegen()
        index = cache._cache_file._load_index()
        return [key[0] for key in index if cache._index_key(key[0], codegen) == key]
    except Exception:      # noqa: BLE001 - any layout change of Numba's internals
        return None


def _import_kernels():
    """Import every kernel module with Numba's cache at :data:`CACHE_DIR`."""
    saved = numba.config.CACHE_DIR
    if CACHE_DIR is not None:
        numba.config.CACHE_DIR = str(CACHE_DIR)   # read by the caching njit at decoration
    try:
        for m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            importlib.import_module(f"{__name__}.{m.name}")
    finally:
        numba.config.CACHE_DIR = saved



class _CompileCounter(numba.core.event.Listener):
    """Counts the Numba compilations in progress in this process, in any thread (Numba's
    ``numba:compile`` event: a real compilation, not a load from the cache)."""

    def __init__(self):
        self.n = 0
        self._lock = threading.Lock()
        #: called (no arguments) as a compilation starts, if set
        #: (:func:`neurosim._interrupt.exit_while_compiling`)
        self.on_compile = None

    def on_start(self, event):
        with self._lock:
            self.n += 1
        f = self.on_compile
        if f is not None:
            f()

    def on_end(self, event):
        with self._lock:
            self.n -= 1


_COMPILES = _CompileCounter()
numba.core.event.register("numba:compile", _COMPILES)


def compiling():
    """Whether a Numba compilation is in progress in this process (any thread).  A kernel's
    first call compiles it (30-60 s for the engine); no stop word is read meanwhile, so
    the command line ends the process on SIGINT / SIGTERM instead
    (:mod:`neurosim._interrupt`)."""
    return _COMPILES.n > 0


_import_kernels()
