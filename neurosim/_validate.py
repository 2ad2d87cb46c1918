"""Input checks shared by every public function.

Each helper raises :class:`ValueError` or :class:`TypeError` whose message says what
arrived, what is allowed and, where it helps, how to fix it.  Kernels never validate:
everything that reaches :mod:`neurosim.kernels` has passed through here.
"""
import math
import numbers

import numpy as np

from . import config


class NeurosimError(ValueError):
    """Base class of neurosim's input errors (a ``ValueError``)."""


class NeurosimTypeError(NeurosimError, TypeError):
    """A value of the wrong type (a ``TypeError`` and a :class:`NeurosimError`): the
    command line treats it as bad input (exit 2), like every other ``NeurosimError``."""


def check_environment():
    """Raise :class:`NeurosimError` (one line) if an environment variable that neurosim
    reads was malformed at import (:data:`neurosim.config.ENV_ERRORS`)."""
    if config.ENV_ERRORS:
        raise NeurosimError(next(iter(config.ENV_ERRORS.values())))


def check_steps(value, name):
    """``value`` as an int in [1, :data:`neurosim.config.MAX_STEPS`] (the number of steps of
    one phase: forward ``T``, backward ``T_b``, ``simulate --steps``)."""
    v = check_int(value, name, low=1)
    check_environment()
    if v > config.MAX_STEPS:
        raise NeurosimError(
            f"{name} = {v} steps is more than the {config.MAX_STEPS} a phase may run "
            f"(NEUROSIM_MAX_STEPS, default {config.DEFAULT_MAX_STEPS}); check the value, or set "
            f"NEUROSIM_MAX_STEPS={v} to allow it")
    return v


def check_delay(value, name):
    """``value`` as an int in [0, :data:`neurosim.config.MAX_DELAY`] (a projection delay in
    steps)."""
    v = check_int(value, name, low=0)
    check_environment()
    if v > config.MAX_DELAY:
        raise NeurosimError(
            f"{name} = {v} steps is more than the {config.MAX_DELAY} a projection may have "
            f"(NEUROSIM_MAX_DELAY, default {config.DEFAULT_MAX_DELAY}; every step of delay keeps a slot per "
            f"sending neuron); check the value, or set NEUROSIM_MAX_DELAY={v} to allow it")
    return v


def _describe(x):
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"


def check_real(value, name, *, positive=False, nonneg=False, finite=True, low=None, high=None):
    """Return ``value`` as a float after checking it is a real number in range."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise NeurosimTypeError(f"{name} must be a real number, got {_describe(value)}")
    v = float(value)
    if math.isnan(v) or (finite and math.isinf(v)):
        raise NeurosimError(f"{name} must be finite, got {v}")
    if positive and not v > 0:
        raise NeurosimError(f"{name} must be > 0, got {v}")
    if nonneg and not v >= 0:
        raise NeurosimError(f"{name} must be >= 0, got {v}")
    if low is not None and v < low:
        raise NeurosimError(f"{name} must be >= {low}, got {v}")
    if high is not None and v > high:
        raise NeurosimError(f"{name} must be <= {high}, got {v}")
    return v


#: the largest seed: run files store it as a signed 64-bit integer (checked up front, not
#: when the file is written after the work).
SEED_MAX = 2 ** 63 - 1


def check_int(value, name, *, low=None, high=None):
    """Return ``value`` as an int after checking it is an integer in [low, high]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise NeurosimTypeError(f"{name} must be an integer, got {_describe(value)}")
    v = int(value)
    if low is not None and v < low:
        raise NeurosimError(f"{name} must be >= {low}, got {v}")
    if high is not None and v > high:
        raise NeurosimError(f"{name} must be <= {high}, got {v}")
    return v


def check_choice(value, name, allowed):
    try:
        ok = value in allowed
    except TypeError:              # unhashable (a list from a model file)
        ok = False
    if not ok:
        raise NeurosimError(f"{name} must be one of {sorted(allowed)}, got {value!r}")
    return value


def check_dtype(dtype, name="dtype"):
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise NeurosimTypeError(f"{name}: {dtype!r} is not a numpy dtype") from e
    allowed = [np.dtype(d) for d in config.ALLOWED_DTYPES]
    if dt not in allowed:
        raise NeurosimError(f"{name} must be one of {[str(a) for a in allowed]}, got {dt}")
    return dt.type


def check_shape(shape, name):
    """A population / map shape: a tuple of 1 (n,) or 3 (C, H, W) positive ints."""
    if isinstance(shape, numbers.Integral):
        shape = (int(shape),)
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as e:
        raise NeurosimTypeError(f"{name} must be an int or a tuple of ints, got {shape!r}") from e
    if len(shape) not in (1, 3) or any(s < 1 for s in shape):
        raise NeurosimError(
            f"{name} must be (n,) or (C, H, W) with positive sizes, got {shape}")
    return shape


def check_array(a, name, *, shape=None, dtype=None, finite=True, ndim=None):
    """Return ``a`` as a C-contiguous array after checking shape and finiteness.

    ``shape`` may contain ``None`` for "any size"; ``dtype`` converts (a float
    array of another width is cast, an integer or boolean one too)."""
    if not isinstance(a, np.ndarray):
        try:
            a = np.asarray(a)
        except Exception as e:  # pragma: no cover - numpy raises many things
            raise NeurosimTypeError(f"{name} must be array-like, got {_describe(a)}") from e
    if a.dtype == object:
        raise NeurosimTypeError(f"{name} must be a numeric array, got an object array")
    if ndim is not None and a.ndim != ndim:
        raise NeurosimError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if shape is not None:
        if a.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, a.shape)):
            want = tuple("any" if s is None else s for s in shape)
            raise NeurosimError(f"{name} must have shape {want}, got {a.shape}")
    if finite and a.dtype.kind in "fc" and a.size and not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))[0]
        raise NeurosimError(
            f"{name} contains NaN or inf (first at index {tuple(int(i) for i in bad)}, "
            f"value {a[tuple(bad)]}); all values must be finite")
    if dtype is not None:
        a = a.astype(dtype, copy=False)
    return np.ascontiguousarray(a)
