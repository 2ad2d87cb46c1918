"""Data sets that need no download.  For now: scikit-learn's bundled 8x8 digits.

Digits (UCI optical recognition of handwritten digits, as bundled with scikit-learn):
1797 grey images of 8x8 pixels with values 0..16, labels 0..9.  The split is fixed and
unshuffled: the **first 1437 samples are the training set, the last 360 the test set**
(80 % / 20 %, file order).  Images are returned as float64 ``[N, 64]`` scaled to [0, 1]
(pixel / 16), row-major (``y * 8 + x``), which is also neurosim's neuron order for a
``(1, 8, 8)`` population.
"""
import numpy as np

from . import _validate as V

#: number of digits samples in the training split (the rest is the test split).
DIGITS_N_TRAIN = 1437
DIGITS_SPLITS = ("train", "test", "all")


def load_digits(split="test", n=None):
    """(images float64 [N, 64] in [0, 1], labels int64 [N]) of the digits ``split``.

    Parameters
    ----------
    split : {"train", "test", "all"}
    n : int, optional
        Keep only the first ``n`` samples of the split.
    """
    V.check_choice(split, "digits split", set(DIGITS_SPLITS))
    try:
        from sklearn.datasets import load_digits as _sk_load
    except ImportError as e:  # pragma: no cover - sklearn is a test dependency
        raise V.NeurosimError("the digits data set needs scikit-learn (pip install scikit-learn)") from e
    d = _sk_load()
    x = d.data.astype(np.float64) / 16.0
    y = d.target.astype(np.int64)
    sl = {"train": slice(0, DIGITS_N_TRAIN), "test": slice(DIGITS_N_TRAIN, None),
          "all": slice(None)}[split]
    x, y = x[sl], y[sl]
    if n is not None:
        n = V.check_int(n, "n", low=1)
        if n > x.shape[0]:
            raise V.NeurosimError(f"the digits {split} split has {x.shape[0]} samples, {n} were asked for")
        x, y = x[:n], y[:n]
    return np.ascontiguousarray(x), y
