"""Model files (TOML): finding, parsing and the checks shared by every table.

The format is documented key by key in ``docs/model-format.md``.  This module finds a
model file (a path, or a name in :func:`models_dir`), parses it (:func:`read_model_file`)
and holds the allowed keys and the checking helpers that raise :class:`ModelError` naming
the file, the table and the key; :mod:`neurosim.models` builds the network from the parsed
dict with them.
"""
import math
import os
import re
import tomllib
from pathlib import Path

from .. import _validate as V
from .. import config
from ..neurons import NEURON_KINDS

#: value of the ``format`` key this version reads.
FORMAT = "neurosim-model/1"

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")

TOP_KEYS = {"format", "name", "description", "dtype", "populations", "projections", "training"}
POP_COMMON = {"name", "shape", "kind"}
#: population kind -> its keys besides the common ones (a neuron model's parameters and
#: the ``ternary`` table of its backward couples).
POP_KINDS = {"input": set(), "source": set(),
              **{k: set(c.keys()) | {"ternary"} for k, c in NEURON_KINDS.items()}}
PROJ_COMMON = {"name", "pre", "post", "kind", "delay", "port"}
_WEIGHTED = {"bias", "bias_value", "init", "init_scale"}
PROJ_KINDS = {
    "dense": _WEIGHTED,
    "sparse": _WEIGHTED | {"p", "fan_in", "allow_self"},
    "conv2d": _WEIGHTED | {"kernel", "stride", "padding"},
    "conv_transpose2d": _WEIGHTED | {"kernel", "stride", "padding", "output_padding"},
    "avgpool2d": {"kernel", "stride"},
    "sumpool2d": {"kernel", "stride"},
}
INITS = ("kaiming_normal", "uniform_unit_norm", "normal", "constant", "zeros")


class ModelError(V.NeurosimError):
    """A model file or model dict is malformed (a ``ValueError``)."""


#: the model files shipped with neurosim (package data: in the wheel, the sdist and an
#: editable install alike; see ``models/README.md`` and ``docs/decisions.md``).
SHIPPED_MODELS_DIR = Path(__file__).resolve().parents[1] / "data" / "models"


def models_dir():
    """The directory of named models.

    Returns
    -------
    Path
        ``$NEUROSIM_MODELS`` if set (and not empty), else :data:`SHIPPED_MODELS_DIR`
        (``neurosim/data/models/`` inside the installed package).
    """
    env = os.environ.get("NEUROSIM_MODELS")
    if env:
        return Path(env)
    return SHIPPED_MODELS_DIR


def list_models():
    """Sorted names (file stems) of the ``*.toml`` files in :func:`models_dir`."""
    d = models_dir()
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.toml"))


def _shipped():
    return sorted(p.stem for p in SHIPPED_MODELS_DIR.glob("*.toml"))


def resolve_model_path(path_or_name):
    """Path of a model file given as a path or as a name from :func:`list_models`."""
    s = os.fspath(path_or_name)
    p = Path(s)
    if p.suffix == ".toml" or os.sep in s or (os.altsep and os.altsep in s) or p.exists():
        if not p.exists():
            hint = ""
            if p.suffix == ".toml" and p.parent.name == "models" and \
                    (models_dir() / p.name).is_file():
                hint = (f"; the named model {p.stem!r} is shipped with neurosim: give its name "
                        f"(--model {p.stem}) or the file {str(models_dir() / p.name)!r}")
            raise ModelError(f"model file {s!r} does not exist{hint}")
        if not p.is_file():
            raise ModelError(f"model file {s!r} is not a regular file")
        return p
    cand = models_dir() / f"{s}.toml"
    if cand.is_file():
        return cand
    env = os.environ.get("NEUROSIM_MODELS")
    if env and not Path(env).is_dir():
        why = "is not a folder" if Path(env).exists() else "does not exist"
        raise ModelError(f"unknown model {s!r}: the models folder NEUROSIM_MODELS={env!r} {why}; "
                         "point NEUROSIM_MODELS at a folder of model files, or unset it to use "
                         f"the models shipped with neurosim ({', '.join(_shipped())})")
    raise ModelError(f"unknown model {s!r}: not a file, and not a model name; known names: "
                     f"{list_models()} (in {models_dir()}; set NEUROSIM_MODELS to use another "
                     "directory)")


def read_model_file(path):
    """Parse a model file into a dict (no validation beyond TOML syntax)."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ModelError(f"model file {str(p)!r} is not valid TOML: {e}") from e
    except UnicodeDecodeError as e:
        raise ModelError(f"model file {str(p)!r} is not UTF-8 text: {e}") from e
    except OSError as e:
        raise ModelError(f"cannot read model file {str(p)!r}: {e.strerror or e}") from e


# -- validation helpers ----------------------------------------------------------------
def fail(ctx, msg):
    raise ModelError(f"{ctx['source']}: {msg}")


def check_keys(ctx, table, allowed, where):
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        fail(ctx, f"unknown key {unknown[0]!r} in {where}; allowed keys: {sorted(allowed)}")


def get_str(ctx, table, key, where, required=True, default=None):
    if key not in table:
        if required:
            fail(ctx, f"{where} is missing the required key {key!r}")
        return default
    v = table[key]
    if not isinstance(v, str):
        fail(ctx, f"{where}: {key} must be a string, got {type(v).__name__} {v!r}")
    return v


def get_int(ctx, table, key, where, default, low=None):
    v = table.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        fail(ctx, f"{where}: {key} must be an integer, got {type(v).__name__} {v!r}")
    if low is not None and v < low:
        fail(ctx, f"{where}: {key} must be >= {low}, got {v}")
    return v


def get_real(ctx, table, key, where, default):
    v = table.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        fail(ctx, f"{where}: {key} must be a number, got {type(v).__name__} {v!r}")
    if not math.isfinite(v):
        fail(ctx, f"{where}: {key} must be finite, got {v}")
    return float(v)


def get_pair(ctx, table, key, where, default=None):
    """An int or a pair [a, b] of ints (kernel sizes)."""
    v = table.get(key, default)
    if v is None:
        fail(ctx, f"{where} is missing the required key {key!r}")
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v, v]
    if (not isinstance(v, list) or len(v) != 2
            or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in v)):
        fail(ctx, f"{where}: {key} must be a positive integer or a pair [h, w] of them, got {v!r}")
    return tuple(v)


def _human(nbytes):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024


def reserve(ctx, where, nbytes, what):
    """Count the memory a model needs before allocating it (``config.MAX_MODEL_BYTES``)."""
    V.check_environment()                       # NEUROSIM_MAX_MODEL_MB=abc: say so
    ctx["bytes"] = ctx.get("bytes", 0) + int(nbytes)
    if ctx["bytes"] > config.MAX_MODEL_BYTES:
        fail(ctx, f"{where}: {what} would bring the model to about {_human(ctx['bytes'])}, more "
                   f"than the {_human(config.MAX_MODEL_BYTES)} a model may use (by default half of "
                   "this machine's memory; NEUROSIM_MAX_MODEL_MB sets it); check the shapes "
                   "and kernel sizes")


def wrap(ctx, where, fn, *a, **kw):
    """Call a neurosim constructor; re-raise its errors with the model context."""
    try:
        return fn(*a, **kw)
    except ModelError:
        raise
    except (V.NeurosimError, TypeError) as e:
        fail(ctx, f"{where}: {e}")


def check_name(ctx, table, where, used):
    n = get_str(ctx, table, "name", where)
    if not _NAME_RE.match(n):
        fail(ctx, f"{where}: name {n!r} must start with a letter or '_' and contain only "
                   "letters, digits, '_', '.' and '-'")
    if n in used:
        fail(ctx, f"{where}: name {n!r} is already used by another population or projection")
    used.add(n)
    return n


def check_table(ctx, t, section, i, used, common, kinds):
    """The checks every ``[[section]]`` table starts with: a table, a new valid name, a
    known ``kind`` and only that kind's keys.  Returns (name, kind, where)."""
    where = f"[[{section}]] #{i + 1}"
    if not isinstance(t, dict):
        fail(ctx, f"{where} must be a table, got {type(t).__name__}")
    name = check_name(ctx, t, where, used)
    where = f"[[{section}]] {name!r}"
    kind = get_str(ctx, t, "kind", where)
    if kind not in kinds:
        fail(ctx, f"{where}: unknown kind {kind!r}; allowed kinds: {sorted(kinds)}")
    check_keys(ctx, t, common | kinds[kind], f"{where} (kind {kind!r})")
    return name, kind, where
