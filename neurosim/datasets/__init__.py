"""Data-set readers for neurosim: local files only, pure numpy, nothing is downloaded.

* ``digits``: :func:`load_digits_dataset`, bundled with scikit-learn;
* ``mnist``: :func:`load_idx_dataset` (IDX files) from a folder the user gives;
* ``fashion-mnist``: :func:`load_idx_dataset`, by default from Debian's
  ``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist), or a folder the user gives;
* ``cifar10``, ``cifar100``: :func:`load_cifar` (python pickles, read with a restricted
  unpickler) from a folder the user gives.

:func:`load` picks the reader by name.  Event streams (tonic structured arrays) are handled
by :mod:`neurosim.datasets.events`.  Every problem with a file raises :class:`DataError`,
naming the file, what is wrong and how to fix it.  See ``docs/datasets.md``.
"""
from typing import NamedTuple, Optional, Tuple

import numpy as np

from .._validate import NeurosimError


class DataError(NeurosimError):
    """A data file or folder is missing, corrupt or not in the expected format.

    A ``ValueError`` (through :class:`neurosim._validate.NeurosimError`).  The message names
    the file, says what was found, what is allowed and how to fix it."""


class Dataset(NamedTuple):
    """A labelled image data set split into train and test parts.

    ``x_*`` are ``[N, C, H, W]`` arrays (uint8 for the file-based sets, float for digits),
    ``y_*`` int64 class indices.  ``label_names`` holds one name per class, ``source`` the
    folder the data came from (``None`` for bundled data)."""
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    label_names: Tuple[str, ...]
    source: Optional[str]

    @property
    def n_classes(self):
        return len(self.label_names)

    def normalised(self):
        """(x_train, y_train, x_test, y_test), the images as SPIDE normalises this data set:
        digits by the mean and standard deviation of its training images (float32), MNIST
        and Fashion-MNIST by their published channel statistics, CIFAR (uint8) by
        :data:`CIFAR_MEAN` / :data:`CIFAR_STD`; float CIFAR images are taken as they are."""
        if self.name == "digits":
            mu, sd = float(self.x_train.mean()), float(self.x_train.std())
            f = lambda x: ((x - mu) / sd).astype(np.float32)
        elif self.name in _NORMALISATION:
            f = lambda x: normalize(x, *_NORMALISATION[self.name])
        else:
            f = lambda x: x if x.dtype != np.uint8 else normalize(x, CIFAR_MEAN, CIFAR_STD)
        return f(self.x_train), self.y_train, f(self.x_test), self.y_test

    @property
    def augmented(self):
        """Whether training batches of this data set are augmented (:meth:`augment`):
        CIFAR-10 and CIFAR-100, as SPIDE's scripts do."""
        return self.name in ("cifar10", "cifar100")

    def augment(self, idx, rng):
        """The training images ``idx`` augmented with ``rng`` and normalised (CIFAR:
        :func:`augment_cifar`, then :data:`CIFAR_MEAN` / :data:`CIFAR_STD`); a data set
        that is not :attr:`augmented` refuses."""
        if not self.augmented:
            raise NeurosimError(f"data set {self.name!r} has no training augmentation; "
                                "augmented: cifar10, cifar100")
        return normalize(augment_cifar(self.x_train[idx], rng), CIFAR_MEAN, CIFAR_STD)


from .idx import (FASHION_MNIST_DEFAULT_DIR, FASHION_MNIST_MEAN, FASHION_MNIST_STD,  # noqa: E402
                  MNIST_MEAN, MNIST_STD, load_idx_dataset, normalize, read_idx)
from .cifar import (CIFAR_MEAN, CIFAR_STD, augment_cifar, load_cifar, random_crop,  # noqa: E402
                    random_flip)
from .digits import load_digits_dataset  # noqa: E402

#: per-channel (mean, std) of the data sets normalised by published statistics.
_NORMALISATION = {"mnist": (MNIST_MEAN, MNIST_STD),
                  "fashion-mnist": (FASHION_MNIST_MEAN, FASHION_MNIST_STD)}
from . import events  # noqa: E402
from .events import load_events, resize_frames, save_events, to_frames  # noqa: E402

#: the names :func:`load` accepts (case-insensitive, ``_`` and ``-`` interchangeable;
#: also ``cifar-10``, ``cifar-100``, ``fashionmnist``, ``fmnist``).
DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100")
_ALIASES = {"fashion-mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
            "fmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}


def load(name, data_dir=None, **kwargs):
    """Load the data set ``name`` (one of :data:`DATASETS`) as a :class:`Dataset`.

    Parameters
    ----------
    name : str
        ``'digits'``, ``'mnist'``, ``'fashion-mnist'``, ``'cifar10'`` or ``'cifar100'``.
    data_dir : str or path, optional
        Folder with the files.  Not used by ``'digits'`` (bundled with scikit-learn).
        Optional for ``'fashion-mnist'`` when the Debian package is installed; required
        for ``'mnist'``, ``'cifar10'`` and ``'cifar100'``.
    **kwargs
        Passed to the reader (``test_fraction``, ``seed``, ``dtype`` for digits).
    """
    if not isinstance(name, str):
        raise TypeError(f"data set name must be a str, got {type(name).__name__} {name!r}; "
                        f"known names: {', '.join(DATASETS)}")
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise NeurosimError(f"unknown data set {name!r}; known names: {', '.join(DATASETS)}")
    if key == "digits":
        if data_dir is not None:
            raise NeurosimError(
                f"the digits data set is bundled with scikit-learn and reads no folder, got "
                f"data_dir={str(data_dir)!r}; call load('digits') without data_dir")
        return load_digits_dataset(**kwargs)
    if kwargs:
        raise TypeError(f"load({key!r}) takes no extra options, got {sorted(kwargs)}")
    if key in ("mnist", "fashion-mnist"):
        return load_idx_dataset(data_dir, name=key)
    return load_cifar(data_dir, name=key)


__all__ = ["DataError", "Dataset", "DATASETS", "load", "read_idx", "load_idx_dataset",
           "normalize", "MNIST_MEAN", "MNIST_STD", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD",
           "FASHION_MNIST_DEFAULT_DIR", "load_cifar", "CIFAR_MEAN", "CIFAR_STD",
           "random_crop", "random_flip", "augment_cifar", "load_digits_dataset", "events",
           "to_frames", "resize_frames", "load_events", "save_events"]
