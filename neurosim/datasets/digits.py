"""scikit-learn's bundled 8x8 digits as a :class:`~neurosim.datasets.Dataset` (no download).

1797 grey images of 8x8 pixels with values 0..16 (UCI optical recognition of handwritten
digits), labels 0..9.  Here: ``x`` float ``[N, 1, 8, 8]`` = pixel / 16 in [0, 1] (exact in
float32 and float64), and a deterministic **stratified** split: within each class the
samples are shuffled with ``np.random.default_rng(seed)`` and ``round(n_class *
test_fraction)`` of them go to the test set; both splits keep file order.

Flat access: :func:`load_digits` gives the same split (1438 train / 359 test samples with
the defaults) as float64 ``[N, 64]`` in [0, 1], row-major (``y * 8 + x``), which is also
neurosim's neuron order for a ``(1, 8, 8)`` population.
"""
import importlib.util
import numbers
from pathlib import Path

import numpy as np

from . import DataError, Dataset
from .. import _validate as V
from .._validate import NeurosimError

#: the splits :func:`load_digits` returns.
DIGITS_SPLITS = ("train", "test", "all")


def _bundled_digits():
    """(pixels float64 [1797, 64] in 0..16, labels int64 [1797]) from scikit-learn's bundled
    ``datasets/data/digits.csv.gz``, read directly: importing scikit-learn costs about
    0.5 s, which ``neurosim ops`` cannot afford.  Falls back to scikit-learn's loader
    when the file is not where it is expected or does not have that shape."""
    spec = importlib.util.find_spec("sklearn")
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(loc) / "datasets" / "data" / "digits.csv.gz"
        try:
            raw = np.loadtxt(path, delimiter=",")
        except (OSError, ValueError):
            continue
        if raw.shape == (1797, 65):
            return raw[:, :-1], raw[:, -1].astype(np.int64)
    try:
        from sklearn.datasets import load_digits as _sk_load
    except ImportError as e:  # pragma: no cover - scikit-learn is a dependency
        raise DataError("the digits data set is bundled with scikit-learn, which is not "
                        "installed; pip install scikit-learn") from e
    d = _sk_load()
    return np.asarray(d.data, np.float64), np.asarray(d.target, np.int64)


def load_digits_dataset(test_fraction=0.2, seed=0, dtype=np.float32):
    """The digits as a :class:`Dataset` with a stratified, seeded train/test split.

    Parameters
    ----------
    test_fraction : float in (0, 1)
        Fraction of each class put in the test set (rounded per class).
    seed : int
        Seed of the per-class shuffles; the same seed gives the same split.
    dtype : float32 or float64
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) or not (
            0.0 < float(test_fraction) < 1.0):
        raise NeurosimError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise NeurosimError(f"seed must be a non-negative int, got {seed!r}")
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise NeurosimError(f"dtype must be float32 or float64, got {dt}")
    data, target = _bundled_digits()
    x = (data / 16.0).astype(dt).reshape(-1, 1, 8, 8)
    y = target
    rng = np.random.default_rng(int(seed))
    test = np.zeros(y.shape[0], bool)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        k = int(round(idx.size * float(test_fraction)))
        if k == 0 or k == idx.size:
            raise NeurosimError(f"test_fraction {test_fraction} leaves class {c} "
                                f"({idx.size} samples) with an empty train or test part; use "
                                f"a fraction between {0.5 / idx.size:.3g} and "
                                f"{1 - 0.5 / idx.size:.3g}")
        test[rng.permutation(idx)[:k]] = True
    return Dataset("digits", np.ascontiguousarray(x[~test]), y[~test],
                   np.ascontiguousarray(x[test]), y[test], tuple(str(i) for i in range(10)),
                   None)


def load_digits(split="test", n=None):
    """(images float64 [N, 64] in [0, 1], labels int64 [N]) of the digits ``split`` of
    :func:`load_digits_dataset` with its defaults.

    Parameters
    ----------
    split : {"train", "test", "all"}
        "all" is train followed by test.
    n : int, optional
        Keep only the first ``n`` samples of the split.
    """
    V.check_choice(split, "digits split", set(DIGITS_SPLITS))
    d = load_digits_dataset()
    parts = {"train": [(d.x_train, d.y_train)], "test": [(d.x_test, d.y_test)],
             "all": [(d.x_train, d.y_train), (d.x_test, d.y_test)]}[split]
    x = np.concatenate([p[0].reshape(p[0].shape[0], -1) for p in parts]).astype(np.float64)
    y = np.concatenate([p[1] for p in parts]).astype(np.int64)
    if n is not None:
        n = V.check_int(n, "n", low=1)
        if n > x.shape[0]:
            raise V.NeurosimError(f"the digits {split} split has {x.shape[0]} samples, {n} were asked for")
        x, y = x[:n], y[:n]
    return np.ascontiguousarray(x), y
