"""IDX files (MNIST, Fashion-MNIST): reader, folder loader and normalisation.

IDX layout (LeCun's MNIST page): two zero bytes, one type-code byte, one byte with the number
of dimensions ``d``, then ``d`` big-endian uint32 sizes, then the data in C order, big-endian.
Type codes: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.
Gzip-compressed files (``.gz``, recognised by their content) are read transparently.
"""
import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from . import DataError, Dataset
from .._validate import NeurosimError

#: IDX type code -> big-endian numpy dtype
IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
             0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

#: Where Debian's package ``dataset-fashion-mnist`` installs the four ``.gz`` files.
FASHION_MNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"

#: SPIDE's MNIST normalisation (pixel/255 - mean) / std.
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
#: Fashion-MNIST training-set pixel mean / std (pixel/255, all 60000 x 784 pixels, float64,
#: population std), computed once from the Debian files; rounded to 4 digits.
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)

FASHION_MNIST_LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                        "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST_LABELS = tuple(str(i) for i in range(10))

_IDX_NAMES = ("mnist", "fashion-mnist")
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path):
    """The (decompressed) content of ``path``."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file; check the path (folder {p.parent} holds "
                        f"{_listing(p.parent)})")
    if p.is_dir():
        raise DataError(f"{p} is a folder, a file was expected")
    raw = p.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{p}: corrupt or truncated gzip data ({e}); the file is "
                            f"damaged, fetch it again") from e
    if p.suffix == ".gz":
        raise DataError(f"{p} is named .gz but is not gzip-compressed (first bytes "
                        f"{raw[:4].hex(' ')}, gzip starts with 1f 8b); rename it without .gz "
                        f"if it is a plain IDX file")
    return raw


def _listing(folder, limit=8):
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return "nothing readable"
    if not names:
        return "no files"
    more = f", ... ({len(names)} entries)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def read_idx(path):
    """Read one IDX file (plain or gzip-compressed) into a native-endian numpy array.

    Raises :class:`DataError` naming the file when the magic bytes, the type code or the
    dimensions are invalid, when the data are shorter than the header says (truncated) or
    when bytes follow the data (trailing bytes)."""
    p = Path(path)
    buf = _read_bytes(p)
    if len(buf) < 4:
        raise DataError(f"{p}: {len(buf)} bytes, too short for the 4-byte IDX header "
                        f"(truncated or empty file)")
    if buf[0] != 0 or buf[1] != 0:
        raise DataError(f"{p}: wrong magic number: the file starts with {buf[:4].hex(' ')}, "
                        f"an IDX file starts with two zero bytes (00 00 type ndim); is this "
                        f"an IDX file such as train-images-idx3-ubyte?")
    code, ndim = buf[2], buf[3]
    if code not in IDX_TYPES:
        allowed = ", ".join(f"0x{c:02X} ({d.name})" for c, d in IDX_TYPES.items())
        raise DataError(f"{p}: unknown IDX type code 0x{code:02X}; allowed: {allowed}")
    if ndim == 0:
        raise DataError(f"{p}: the header declares 0 dimensions; IDX files have at least one")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"{p}: truncated header: {ndim} dimensions need {header} header "
                        f"bytes, the file has {len(buf)}")
    dims = tuple(int(d) for d in np.frombuffer(buf, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    n = 1
    for d in dims:
        n *= d
    need = n * dtype.itemsize
    have = len(buf) - header
    if have < need:
        raise DataError(f"{p}: truncated data: dims {dims} of {dtype.name} need {need} bytes "
                        f"after the header, the file has {have}; the file is incomplete, "
                        f"fetch it again")
    if have > need:
        raise DataError(f"{p}: {have - need} trailing bytes after the {need} data bytes that "
                        f"dims {dims} of {dtype.name} need; the header does not match the "
                        f"content (wrong or concatenated file)")
    arr = np.frombuffer(buf, dtype=dtype, count=n, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))   # native byte order, writable copy


def _candidates(prefix, kind, d):
    base = f"{prefix}-{kind}-idx{d}-ubyte"
    dotted = f"{prefix}-{kind}.idx{d}-ubyte"       # as some archive tools unpack MNIST
    return (base, base + ".gz", dotted, dotted + ".gz")


def _find(folder, prefix, kind, d, name):
    names = _candidates(prefix, kind, d)
    for n in names:
        p = folder / n
        if p.is_file():
            return p
    raise DataError(f"{name}: missing file {names[0]}[.gz] in folder {folder} (looked for "
                    f"{', '.join(names)}; the folder holds {_listing(folder)}); put the four "
                    f"IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                    f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (optionally .gz) there")


def _resolve_dir(data_dir, name):
    if data_dir is None:
        if name == "fashion-mnist":
            if Path(FASHION_MNIST_DEFAULT_DIR).is_dir():
                return Path(FASHION_MNIST_DEFAULT_DIR)
            raise DataError(
                f"fashion-mnist: no data_dir given and the default folder "
                f"{FASHION_MNIST_DEFAULT_DIR} does not exist; install the Debian package "
                f"(apt-get install dataset-fashion-mnist) or pass data_dir=<folder with the "
                f"four IDX files>")
        raise DataError(
            f"{name}: no data_dir given and MNIST has no default folder; pass "
            f"data_dir=<folder with train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (optionally .gz)>")
    folder = Path(data_dir)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise DataError(f"{name}: data_dir {folder} {what}; pass the folder that holds the "
                        f"IDX files")
    return folder


def _load_split(folder, prefix, name):
    pimg = _find(folder, prefix, "images", 3, name)
    plab = _find(folder, prefix, "labels", 1, name)
    x = read_idx(pimg)
    y = read_idx(plab)
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
        raise DataError(f"{pimg}: expected uint8 images of shape (N, 28, 28), got "
                        f"{x.dtype.name} of shape {x.shape}; is this the right file?")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{plab}: expected a 1-D integer label vector, got {y.dtype.name} of "
                        f"shape {y.shape}; is this the right file?")
    if x.shape[0] == 0:
        raise DataError(f"{pimg}: the {prefix} split is empty (0 images)")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{name} {prefix}: image/label count mismatch: {pimg.name} has "
                        f"{x.shape[0]} images, {plab.name} has {y.shape[0]} labels; the files "
                        f"belong to different sets or one is damaged")
    bad = (y < 0) | (y > 9)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{plab}: label {int(y[i])} at index {i} is out of range; labels "
                        f"must lie in [0, 9] ({int(bad.sum())} bad labels)")
    return x[:, None, :, :], y.astype(np.int64)


def load_idx_dataset(data_dir=None, name="fashion-mnist"):
    """Load MNIST or Fashion-MNIST from a folder of IDX files as a :class:`Dataset`.

    Parameters
    ----------
    data_dir : str or path, optional
        Folder with ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each optionally gzipped
        (``.gz``).  Default for ``'fashion-mnist'``: :data:`FASHION_MNIST_DEFAULT_DIR` (Debian
        package ``dataset-fashion-mnist``).  MNIST has no default.
    name : {'fashion-mnist', 'mnist'}

    Returns
    -------
    Dataset
        ``x_train`` uint8 ``[60000, 1, 28, 28]``, ``y_train`` int64, ``x_test``, ``y_test``
        (sizes as in the files), ``label_names``, ``source`` (the folder).
    """
    if name not in _IDX_NAMES:
        raise NeurosimError(f"IDX data set name must be one of {list(_IDX_NAMES)}, got "
                            f"{name!r}")
    folder = _resolve_dir(data_dir, name)
    x_tr, y_tr = _load_split(folder, "train", name)
    x_te, y_te = _load_split(folder, "t10k", name)
    labels = FASHION_MNIST_LABELS if name == "fashion-mnist" else MNIST_LABELS
    return Dataset(name, x_tr, y_tr, x_te, y_te, labels, str(folder))


def normalize(x, mean, std):
    """``(x - mean) / std`` per channel, as float32.

    ``x`` is uint8 (scaled by 1/255 first, as torchvision's ``ToTensor``) or float (taken to
    be in [0, 1] already).  ``mean`` and ``std`` are scalars or sequences with one value per
    channel; with more than one value the channel axis is ``x.shape[-3]`` (``[..., C, H, W]``).
    Constants: :data:`MNIST_MEAN`/:data:`MNIST_STD`, :data:`FASHION_MNIST_MEAN`/
    :data:`FASHION_MNIST_STD`, :data:`neurosim.datasets.CIFAR_MEAN`/``CIFAR_STD``.
    """
    x = np.asarray(x)
    if x.dtype == np.uint8:
        xf = x.astype(np.float32) / np.float32(255.0)
    elif x.dtype.kind == "f":
        xf = x.astype(np.float32)
    else:
        raise TypeError(f"normalize: x must be uint8 (0..255) or float (0..1), got dtype "
                        f"{x.dtype}; convert with x.astype(np.uint8) or x / 255.0")
    m = np.atleast_1d(np.asarray(mean, dtype=np.float64))
    s = np.atleast_1d(np.asarray(std, dtype=np.float64))
    if m.ndim != 1 or s.ndim != 1 or m.shape != s.shape:
        raise NeurosimError(f"normalize: mean and std must be scalars or sequences of the same "
                            f"length, got mean {mean!r} and std {std!r}")
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(s)) and np.all(s > 0)):
        raise NeurosimError(f"normalize: mean must be finite and std finite and > 0, got "
                            f"mean {mean!r}, std {std!r}")
    c = m.shape[0]
    if c > 1:
        if x.ndim < 3 or x.shape[-3] != c:
            raise NeurosimError(f"normalize: {c} channel means need x of shape [..., {c}, H, "
                                f"W], got shape {x.shape}")
        m = m.reshape(c, 1, 1)
        s = s.reshape(c, 1, 1)
    return ((xf - m.astype(np.float32)) / s.astype(np.float32)).astype(np.float32)
