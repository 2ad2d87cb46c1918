"""Flat access to the embedded default data: scikit-learn's bundled 8x8 digits.

A thin view of :func:`neurosim.datasets.digits.load_digits_dataset` (one digits loader in
the project): the same seeded, stratified split (1438 train / 359 test samples with the
defaults), returned as float64 ``[N, 64]`` in [0, 1], row-major (``y * 8 + x``), which is
also neurosim's neuron order for a ``(1, 8, 8)`` population.
"""
import numpy as np

from . import _validate as V

DIGITS_SPLITS = ("train", "test", "all")


def load_digits(split="test", n=None):
    """(images float64 [N, 64] in [0, 1], labels int64 [N]) of the digits ``split``.

    Parameters
    ----------
    split : {"train", "test", "all"}
        "all" is train followed by test.
    n : int, optional
        Keep only the first ``n`` samples of the split.
    """
    from .datasets.digits import load_digits_dataset
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
