"""Numba's cache is keyed by every kernel source: an edit anywhere in kernels/ invalidates.

Each test runs a copy of the package in a subprocess (``PYTHONPATH`` = a temporary
folder) so that it can edit the kernels freely.  A tiny probe kernel added to the copy
shows where Numba writes and whether it loads from the cache.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numba
import pytest

import neurosim
import neurosim.kernels as K

PACKAGE = Path(neurosim.__file__).resolve().parent
PROBE = '''"""Test probe (tests/test_cache_key.py)."""
import numba

from ..config import NJIT


@numba.njit(**NJIT)
def probe(x):
    return x + 1
'''
REPORT = """
import json, numba, neurosim, neurosim.kernels as k
from neurosim.kernels import _probe
assert _probe.probe(1) == 2
print(json.dumps(dict(file=neurosim.__file__, key=k.CACHE_KEY,
                      dir=None if k.CACHE_DIR is None else str(k.CACHE_DIR),
                      numba_dir=numba.config.CACHE_DIR,
                      hits=sum(_probe.probe.stats.cache_hits.values()))))
"""


@pytest.fixture
def copy(tmp_path):
    """A copy of the package with the probe kernel, and a runner reporting on it."""
    root = tmp_path / "src"
    shutil.copytree(PACKAGE, root / "neurosim",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (root / "neurosim" / "kernels" / "_probe.py").write_text(PROBE)
    base = {k: v for k, v in os.environ.items()
            if k not in ("NUMBA_CACHE_DIR", "NEUROSIM_NO_CACHE", "NUMBA_DISABLE_JIT")}
    base.update(PYTHONPATH=str(root), XDG_CACHE_HOME=str(tmp_path / "xdg"))

    def run(**env):
        res = subprocess.run([sys.executable, "-c", REPORT], cwd=tmp_path, text=True,
                             capture_output=True, env=dict(base, **env))
        assert res.returncode == 0, res.stderr
        d = json.loads(res.stdout.strip().splitlines()[-1])
        assert Path(d["file"]).resolve().is_relative_to(root.resolve()), d["file"]
        return d

    return root / "neurosim", run


def _index_files(d):
    return sorted(p.name for p in Path(d).rglob("*.nbi"))


def test_key_is_16_hex_digits_and_the_cache_is_in_the_package():
    assert re.fullmatch(r"[0-9a-f]{16}", K.CACHE_KEY)
    assert K.CACHE_KEY == K.cache_key()
    if K.CACHE_DIR is not None and not os.environ.get("NUMBA_CACHE_DIR"):
        assert K.CACHE_DIR.name.endswith(K.CACHE_KEY)


def test_numba_global_setting_is_restored():
    assert numba.config.CACHE_DIR == os.environ.get("NUMBA_CACHE_DIR", "")


def test_unchanged_sources_reuse_the_cache_and_an_edited_kernel_invalidates_it(copy):
    pkg, run = copy
    first = run()
    cache = Path(first["dir"])
    assert cache == pkg.resolve() / "kernels" / "__pycache__" / f"nb-{first['key']}"
    assert first["hits"] == 0 and any(n.startswith("_probe.probe") for n in _index_files(cache))
    assert first["numba_dir"] == ""
    again = run()
    assert (again["key"], again["dir"], again["hits"]) == (first["key"], first["dir"], 1)
    # an edit of another kernel file (the probe's own file is unchanged)
    with open(pkg / "kernels" / "scatter.py", "a") as fh:
        fh.write("# an edit\n")
    edited = run()
    assert edited["key"] != first["key"] and edited["dir"] != first["dir"]
    assert edited["hits"] == 0, "a kernel edit must not load code compiled before it"
    assert run()["hits"] == 1
    # config.py (the NJIT options) is part of the key too
    with open(pkg / "config.py", "a") as fh:
        fh.write("# an edit\n")
    assert run()["key"] not in (first["key"], edited["key"])


def test_fastmath_changes_the_key(copy):
    _, run = copy
    assert run()["key"] != run(NEUROSIM_FASTMATH="1")["key"]


def test_profiled_build_has_its_own_key(copy):
    """NEUROSIM_PROFILE=1 compiles other kernels (decision 75): never the default's cache."""
    _, run = copy
    plain, prof = run(), run(NEUROSIM_PROFILE="1")
    assert prof["key"] != plain["key"] and prof["dir"] != plain["dir"]
    assert run(NEUROSIM_PROFILE="0")["key"] == plain["key"]


def test_numba_cache_dir_and_no_cache(copy, tmp_path):
    _, run = copy
    d = run(NUMBA_CACHE_DIR=str(tmp_path / "nb"))
    assert Path(d["dir"]) == tmp_path / "nb" / f"neurosim-{d['key']}"
    assert d["numba_dir"] == str(tmp_path / "nb")
    assert _index_files(d["dir"])
    off = run(NEUROSIM_NO_CACHE="1")
    assert off["dir"] is None and off["hits"] == 0


def test_unwritable_package_falls_back_to_the_user_cache(copy, tmp_path):
    pkg, run = copy
    (pkg / "kernels" / "__pycache__").write_text("")   # a file: no folder can be made there
    d = run()
    assert Path(d["dir"]) == tmp_path / "xdg" / "neurosim" / f"numba-{d['key']}"
    assert _index_files(d["dir"])
    assert run()["hits"] == 1


def test_old_keys_are_pruned(tmp_path):
    now = time.time()
    old = []
    for i in range(6):
        p = tmp_path / f"nb-{i:016x}"
        p.mkdir()
        age = 10 * 86400 + i * 60 if i < 5 else 60        # the last one was used a minute ago
        os.utime(p, (now - age, now - age))
        old.append(p)
    other = tmp_path / "nb-not-a-key"
    other.mkdir()
    os.utime(other, (now - 30 * 86400,) * 2)
    current = tmp_path / f"nb-{'f' * 16}"
    current.mkdir()
    K._prune(current)
    left = sorted(p.name for p in tmp_path.iterdir())
    # kept: the current key, the 3 most recently used others, anything used within a day,
    # and folders that are not cache keys
    assert left == sorted([current.name, other.name, old[5].name, old[0].name, old[1].name])
