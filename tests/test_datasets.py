"""neurosim.datasets: IDX, CIFAR pickles, event streams, digits, registry.

Every file is synthetic and written to ``tmp_path``; the only skip is the test that reads the
real Fashion-MNIST files of Debian's ``dataset-fashion-mnist`` when they are not installed.
"""
import gzip
import os
import pickle
import struct
from collections import OrderedDict

import numpy as np
import pytest

import neurosim.datasets as D
from neurosim.datasets import DataError
from neurosim.datasets.cifar import load_pickle
from neurosim.datasets.events import check_events, make_events


# --------------------------------------------------------------------------- helpers
def idx_bytes(arr, code=None):
    arr = np.asarray(arr)
    codes = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B,
             np.dtype("i4"): 0x0C, np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}
    code = codes[arr.dtype.newbyteorder("=")] if code is None else code
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write(path, data, gz=False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_idx_dir(folder, n_train=12, n_test=5, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    parts = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        sfx = ".gz" if gz else ""
        write(folder / f"{prefix}-images-idx3-ubyte{sfx}", idx_bytes(x), gz)
        write(folder / f"{prefix}-labels-idx1-ubyte{sfx}", idx_bytes(y), gz)
        parts[prefix] = (x, y)
    return parts


def py2_pickle(obj):
    """Protocol-2 pickle as Python 2's cPickle wrote the CIFAR files: byte strings as py2
    ``str`` opcodes and arrays through ``numpy.core.multiarray._reconstruct``."""
    out = bytearray(b"\x80\x02")

    def s(b):
        out.extend(b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b)

    def emit(o):
        if isinstance(o, dict):
            out.extend(b"}(")
            for k, v in o.items():
                emit(k)
                emit(v)
            out.extend(b"u")
        elif isinstance(o, list):
            out.extend(b"](")
            for v in o:
                emit(v)
            out.extend(b"e")
        elif isinstance(o, tuple):
            out.extend(b"(")
            for v in o:
                emit(v)
            out.extend(b"t")
        elif isinstance(o, bytes):
            s(o)
        elif o is None:
            out.extend(b"N")
        elif isinstance(o, bool):
            out.extend(b"\x88" if o else b"\x89")
        elif isinstance(o, int):
            out.extend(b"J" + struct.pack("<i", o))
        elif isinstance(o, np.ndarray):
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
            emit((0,))
            s(b"b")
            out.extend(b"\x87R")
            out.extend(b"(J\x01\x00\x00\x00")
            emit(tuple(o.shape))
            out.extend(b"cnumpy\ndtype\n")
            emit((o.dtype.str[1:].encode(), 0, 1))
            out.extend(b"R")
            emit((3, b"|", None, None, None, -1, -1, 0))
            out.extend(b"b\x89")
            s(o.tobytes())
            out.extend(b"tb")
        else:  # pragma: no cover - test helper
            raise TypeError(type(o))
    emit(obj)
    out.extend(b".")
    return bytes(out)


def cifar_batch(n, n_classes, label_key=b"labels", seed=0):
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"synthetic", label_key: [int(v) for v in rng.integers(0, n_classes, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [b"img%d.png" % i for i in range(n)]}


def make_cifar10_dir(folder, n=4, py2=True):
    folder.mkdir(parents=True, exist_ok=True)
    dump = py2_pickle if py2 else (lambda o: pickle.dumps(o, protocol=4))
    batches = {}
    for i, f in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batches[f] = cifar_batch(n, 10, seed=i)
        (folder / f).write_bytes(dump(batches[f]))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(dump({b"label_names": names, b"num_cases_per_batch": n}))
    return batches


# --------------------------------------------------------------------------- IDX
@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path, dtype, gz):
    a = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype)
    if dtype == "u1":
        a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) * 10
    p = write(tmp_path / ("a.idx.gz" if gz else "a.idx"), idx_bytes(a), gz)
    b = D.read_idx(p)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    np.testing.assert_array_equal(a, b)
    b[0, 0, 0] = 1                              # writable


def test_read_idx_1d(tmp_path):
    p = write(tmp_path / "l", idx_bytes(np.array([3, 1, 4], np.uint8)))
    np.testing.assert_array_equal(D.read_idx(p), [3, 1, 4])


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("mutate, match", [
    (lambda b: b"\x08\x03" + b[2:], "wrong magic number"),
    (lambda b: b[:2] + b"\x0a" + b[3:], r"unknown IDX type code 0x0A; allowed: 0x08"),
    (lambda b: b[:3] + b"\x00" + b[4:], "0 dimensions"),
    (lambda b: b[:-5], r"truncated data: dims \(2, 3, 4\) of uint8 need 24 bytes .* has 19"),
    (lambda b: b + b"\x00\x01", "2 trailing bytes after the 24 data bytes"),
    (lambda b: b[:2], "too short for the 4-byte IDX header"),
    (lambda b: b[:9], "truncated header: 3 dimensions need 16 header bytes"),
    (lambda b: b"", "too short"),
])
def test_read_idx_corrupt(tmp_path, gz, mutate, match):
    data = mutate(idx_bytes(np.zeros((2, 3, 4), np.uint8)))
    p = write(tmp_path / ("bad.gz" if gz else "bad"), data, gz)
    with pytest.raises(DataError, match=match) as e:
        D.read_idx(p)
    assert str(p) in str(e.value)


def test_read_idx_bad_gzip_and_missing(tmp_path):
    good = gzip.compress(idx_bytes(np.zeros((50, 50), np.uint8)))
    p = write(tmp_path / "cut.gz", good[: len(good) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        D.read_idx(p)
    p = write(tmp_path / "plain.gz", idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(DataError, match="named .gz but is not gzip"):
        D.read_idx(p)
    with pytest.raises(DataError, match="no such file"):
        D.read_idx(tmp_path / "nope")
    with pytest.raises(DataError, match="is a folder"):
        D.read_idx(tmp_path)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_load_idx_dataset(tmp_path, gz, name):
    parts = make_idx_dir(tmp_path / "d", gz=gz)
    ds = D.load_idx_dataset(tmp_path / "d", name=name)
    assert ds.name == name and ds.source == str(tmp_path / "d") and ds.n_classes == 10
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (5, 1, 28, 28)
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    np.testing.assert_array_equal(ds.x_train[:, 0], parts["train"][0])
    np.testing.assert_array_equal(ds.y_test, parts["t10k"][1])
    ds2 = D.load(name, tmp_path / "d")
    np.testing.assert_array_equal(ds2.x_test, ds.x_test)


def test_load_idx_dataset_dotted_names(tmp_path):
    make_idx_dir(tmp_path)
    for f in list(tmp_path.iterdir()):
        f.rename(tmp_path / f.name.replace("s-idx", "s.idx"))
    assert D.load_idx_dataset(tmp_path, "mnist").x_train.shape[0] == 12


def _rewrite(folder, name, arr):
    write(folder / name, idx_bytes(arr))


def test_load_idx_dataset_errors(tmp_path):
    d = tmp_path / "d"
    make_idx_dir(d)
    (d / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"missing file t10k-labels-idx1-ubyte\[\.gz\] in folder "
                       + str(d).replace("\\", "\\\\")):
        D.load_idx_dataset(d, "mnist")

    make_idx_dir(d)
    _rewrite(d, "train-labels-idx1-ubyte", np.array([0, 1, 2, 12] + [0] * 8, np.uint8))
    with pytest.raises(DataError, match=r"label 12 at index 3 is out of range; labels must lie in \[0, 9\]"):
        D.load_idx_dataset(d, "mnist")

    make_idx_dir(d)
    _rewrite(d, "train-labels-idx1-ubyte", np.zeros(11, np.uint8))
    with pytest.raises(DataError, match="image/label count mismatch: .* 12 images, .* 11 labels"):
        D.load_idx_dataset(d, "mnist")

    make_idx_dir(d)
    _rewrite(d, "t10k-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8))
    _rewrite(d, "t10k-labels-idx1-ubyte", np.zeros(0, np.uint8))
    with pytest.raises(DataError, match="split is empty"):
        D.load_idx_dataset(d, "mnist")

    make_idx_dir(d)
    _rewrite(d, "train-images-idx3-ubyte", np.zeros((12, 32, 32), np.uint8))
    with pytest.raises(DataError, match=r"expected uint8 images of shape \(N, 28, 28\), got uint8 of shape \(12, 32, 32\)"):
        D.load_idx_dataset(d, "mnist")

    make_idx_dir(d)
    _rewrite(d, "train-images-idx3-ubyte", np.zeros((12, 28, 28), np.float32))
    with pytest.raises(DataError, match="expected uint8 images"):
        D.load_idx_dataset(d, "mnist")

    make_idx_dir(d)
    _rewrite(d, "train-labels-idx1-ubyte", np.zeros((12, 1), np.uint8))
    with pytest.raises(DataError, match="1-D integer label vector"):
        D.load_idx_dataset(d, "mnist")


def test_load_idx_dataset_folder_errors(tmp_path):
    with pytest.raises(DataError, match="MNIST has no default folder; pass data_dir="):
        D.load_idx_dataset(None, "mnist")
    with pytest.raises(DataError, match="data_dir .*missing.* does not exist"):
        D.load_idx_dataset(tmp_path / "missing", "mnist")
    f = write(tmp_path / "file", b"x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        D.load_idx_dataset(f, "mnist")
    with pytest.raises(DataError, match=r"missing file train-images-idx3-ubyte\[\.gz\] .* holds no files"):
        D.load_idx_dataset(_empty(tmp_path), "mnist")
    with pytest.raises(ValueError, match=r"must be one of \['mnist', 'fashion-mnist'\]"):
        D.load_idx_dataset(tmp_path, "kmnist")


def _empty(tmp_path):
    e = tmp_path / "empty"
    e.mkdir()
    return e


def test_fashion_default_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(D.idx, "FASHION_MNIST_DEFAULT_DIR", str(tmp_path / "absent"))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        D.load_idx_dataset(None, "fashion-mnist")


@pytest.mark.skipif(not os.path.isdir(D.FASHION_MNIST_DEFAULT_DIR),
                    reason=f"Debian package dataset-fashion-mnist not installed "
                           f"({D.FASHION_MNIST_DEFAULT_DIR} absent)")
def test_fashion_mnist_debian_files():
    ds = D.load("fashion-mnist")
    assert ds.source == D.FASHION_MNIST_DEFAULT_DIR
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    np.testing.assert_array_equal(np.bincount(ds.y_train, minlength=10), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(ds.y_test, minlength=10), [1000] * 10)
    assert ds.label_names[9] == "Ankle boot"
    x = ds.x_train.astype(np.float64) / 255
    assert round(x.mean(), 4) == D.FASHION_MNIST_MEAN[0]
    assert round(x.std(), 4) == D.FASHION_MNIST_STD[0]


# --------------------------------------------------------------------------- normalize
def test_normalize():
    x = np.array([[[[0, 255]]]], np.uint8)
    z = D.normalize(x, D.MNIST_MEAN, D.MNIST_STD)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z[0, 0, 0], [-0.1307 / 0.3081, (1 - 0.1307) / 0.3081], rtol=1e-6)
    xc = np.full((2, 3, 2, 2), 255, np.uint8)
    zc = D.normalize(xc, D.CIFAR_MEAN, D.CIFAR_STD)
    np.testing.assert_allclose(zc[1, :, 0, 0], (1 - np.array(D.CIFAR_MEAN)) / D.CIFAR_STD, rtol=1e-6)
    np.testing.assert_allclose(D.normalize(xc / 255.0, D.CIFAR_MEAN, D.CIFAR_STD), zc, rtol=1e-6)
    with pytest.raises(ValueError, match=r"3 channel means need x of shape \[\.\.\., 3, H, W\]"):
        D.normalize(np.zeros((2, 1, 4, 4), np.uint8), D.CIFAR_MEAN, D.CIFAR_STD)
    with pytest.raises(ValueError, match="std finite and > 0"):
        D.normalize(x, 0.5, 0.0)
    with pytest.raises(TypeError, match="uint8 .* or float"):
        D.normalize(x.astype(np.int32), 0.5, 0.5)


# --------------------------------------------------------------------------- CIFAR
@pytest.mark.parametrize("py2", [True, False])
def test_load_cifar10(tmp_path, py2):
    batches = make_cifar10_dir(tmp_path / "cifar-10-batches-py", py2=py2)
    ds = D.load("cifar10", tmp_path)              # the parent folder works too
    assert ds.source == str(tmp_path / "cifar-10-batches-py")
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (4, 3, 32, 32) and ds.y_test.dtype == np.int64
    assert ds.label_names[0] == "airplane" and ds.n_classes == 10
    b = batches["data_batch_2"]
    np.testing.assert_array_equal(ds.x_train[4:8].reshape(4, -1), b[b"data"])
    np.testing.assert_array_equal(ds.y_train[4:8], b[b"labels"])
    # channel planes: first 1024 values are red, row-major
    np.testing.assert_array_equal(ds.x_train[4, 0, 1, :], b[b"data"][0, 32:64])
    np.testing.assert_array_equal(ds.x_train[4, 2, 0, :], b[b"data"][0, 2048:2080])


def test_load_cifar100(tmp_path):
    for f, seed in (("train", 0), ("test", 1)):
        b = cifar_batch(6, 100, label_key=b"fine_labels", seed=seed)
        b[b"coarse_labels"] = [0] * 6
        (tmp_path / f).write_bytes(py2_pickle(b))
    (tmp_path / "meta").write_bytes(py2_pickle({b"fine_label_names": [b"c%d" % i for i in range(100)],
                                                b"coarse_label_names": [b"s"] * 20}))
    ds = D.load("cifar-100", tmp_path)
    assert ds.x_train.shape == (6, 3, 32, 32) and ds.n_classes == 100 and ds.label_names[99] == "c99"
    (tmp_path / "meta").unlink()                  # meta is optional
    assert D.load_cifar(tmp_path, "cifar100").label_names[5] == "5"


def test_cifar_errors(tmp_path):
    d = tmp_path / "c"
    make_cifar10_dir(d)

    def put(name, obj):
        (d / name).write_bytes(py2_pickle(obj) if isinstance(obj, dict) else obj)

    b = cifar_batch(4, 10)
    del b[b"labels"]
    put("data_batch_3", b)
    with pytest.raises(DataError, match=r"data_batch_3: key 'labels' is missing \(keys present: "):
        D.load_cifar(d)

    b = cifar_batch(4, 10)
    b[b"data"] = np.zeros((4, 3072 - 1), np.uint8)
    put("data_batch_3", b)
    with pytest.raises(DataError, match=r"'data' must be a uint8 array of shape \(N, 3072\).*got uint8 array of shape \(4, 3071\)"):
        D.load_cifar(d)

    b = cifar_batch(4, 10)
    b[b"data"] = np.zeros((4, 3072), np.float32)
    put("data_batch_3", b)
    with pytest.raises(DataError, match="got float32 array"):
        D.load_cifar(d)

    b = cifar_batch(4, 10)
    b[b"labels"][2] = 10
    put("data_batch_3", b)
    with pytest.raises(DataError, match=r"label 10 at index 2 of 'labels' is out of range; labels must lie in \[0, 9\]"):
        D.load_cifar(d)

    b = cifar_batch(4, 10)
    b[b"labels"] = b[b"labels"][:3]
    put("data_batch_3", b)
    with pytest.raises(DataError, match="count mismatch: 'data' has 4 rows, 'labels' has 3"):
        D.load_cifar(d)

    put("data_batch_3", py2_pickle(cifar_batch(4, 10))[:200])
    with pytest.raises(DataError, match="data_batch_3: not a readable CIFAR pickle"):
        D.load_cifar(d)

    put("data_batch_3", pickle.dumps([1, 2]))
    with pytest.raises(DataError, match="holds a dict, this one holds a list"):
        D.load_cifar(d)

    (d / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"missing file data_batch_3 in folder .*c; expected data_batch_1"):
        D.load_cifar(d)

    make_cifar10_dir(d, n=0)
    with pytest.raises(DataError, match="is empty"):
        D.load_cifar(d)

    make_cifar10_dir(d)
    put("batches.meta", {b"label_names": [b"a"] * 9})
    with pytest.raises(DataError, match="'label_names' must be a list of 10 strings"):
        D.load_cifar(d)

    with pytest.raises(DataError, match="CIFAR has no default folder"):
        D.load("cifar10")
    with pytest.raises(DataError, match="does not exist"):
        D.load_cifar(tmp_path / "nope")


@pytest.mark.parametrize("payload, what", [
    (b"cos\ngetcwd\n)R.", "os.getcwd"),                          # never called
    (b"\x80\x02cbuiltins\neval\nX\x03\x00\x00\x001+1\x85R.", "builtins.eval"),
    (pickle.dumps({"data": OrderedDict()}, protocol=2), "collections.OrderedDict"),
    (pickle.dumps({"data": np.zeros(2, object)}, protocol=4), None),
    (pickle.dumps({"data": np.zeros(2, [("a", "u1")])}, protocol=2), None),
])
def test_cifar_forbidden_globals(tmp_path, payload, what):
    p = tmp_path / "test_batch"
    p.write_bytes(payload)
    with pytest.raises(DataError) as e:
        load_pickle(p)
    msg = str(e.value)
    assert str(p) in msg
    if what is not None:
        assert f"references {what}, which is not allowed" in msg
    else:
        assert "forbidden content in the pickle: numpy dtype" in msg and "not allowed" in msg


def test_cifar_forbidden_codec(tmp_path):
    p = tmp_path / "b"
    p.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x06\x00\x00\x00base64\x86R.")
    with pytest.raises(DataError, match="forbidden content.*latin-1 only"):
        load_pickle(p)


def test_safe_unpickler_reads_modern_pickles(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for proto in (2, 3, 4, 5):
        p = tmp_path / f"p{proto}"
        p.write_bytes(pickle.dumps({b"data": a, "labels": [1, 2, 3], b"n": np.int64(3)},
                                   protocol=proto))
        d = load_pickle(p)
        np.testing.assert_array_equal(d["data"], a)
        assert d["labels"] == [1, 2, 3] and d["n"] == 3


# --------------------------------------------------------------------------- augmentation
def test_random_crop_and_flip():
    x = np.arange(2 * 3 * 32 * 32, dtype=np.uint8).reshape(2, 3, 32, 32)
    a = D.random_crop(x, np.random.default_rng(7))
    b = D.random_crop(x, np.random.default_rng(7))
    assert a.shape == x.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    # each crop is a window of the zero-padded image, shared by all channels
    xp = np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4)))
    for i in range(2):
        hits = [(oy, ox) for oy in range(9) for ox in range(9)
                if np.array_equal(xp[i, :, oy:oy + 32, ox:ox + 32], a[i])]
        assert hits
    assert D.random_crop(x, np.random.default_rng(0), size=(20, 24), padding=0).shape == (2, 3, 20, 24)

    f = D.random_flip(x, np.random.default_rng(3))
    assert f.shape == x.shape
    np.testing.assert_array_equal(f, D.random_flip(x, np.random.default_rng(3)))
    for i in range(2):
        assert np.array_equal(f[i], x[i]) or np.array_equal(f[i], x[i, :, :, ::-1])
    np.testing.assert_array_equal(D.random_flip(x, np.random.default_rng(0), p=1.0), x[..., ::-1])
    np.testing.assert_array_equal(D.random_flip(x, np.random.default_rng(0), p=0.0), x)

    big = np.random.default_rng(0).integers(0, 256, (64, 3, 32, 32), dtype=np.uint8)
    aug = D.augment_cifar(big, np.random.default_rng(1))
    assert aug.shape == big.shape
    np.testing.assert_array_equal(aug, D.augment_cifar(big, np.random.default_rng(1)))
    assert not np.array_equal(aug, D.augment_cifar(big, np.random.default_rng(2)))

    clip = np.random.default_rng(0).random((2, 5, 2, 48, 48))   # [N, T, P, H, W]: one offset per clip
    c = D.random_crop(clip, np.random.default_rng(0), 48, 4)
    for i in range(2):
        pad = np.pad(clip[i], ((0, 0), (0, 0), (4, 4), (4, 4)))
        assert any(np.array_equal(pad[..., oy:oy + 48, ox:ox + 48], c[i])
                   for oy in range(9) for ox in range(9))


def test_augmentation_errors():
    x = np.zeros((2, 3, 32, 32), np.uint8)
    with pytest.raises(TypeError, match="numpy Generator"):
        D.random_crop(x, 0)
    with pytest.raises(TypeError, match="numpy Generator"):
        D.random_flip(x, np.random.RandomState(0))
    with pytest.raises(ValueError, match="add a batch axis"):
        D.random_crop(x[0, 0], np.random.default_rng())
    with pytest.raises(ValueError, match="does not fit"):
        D.random_crop(x, np.random.default_rng(), size=41, padding=4)
    with pytest.raises(ValueError, match=r"p must lie in \[0, 1\]"):
        D.random_flip(x, np.random.default_rng(), p=1.5)


# --------------------------------------------------------------------------- events
def random_events(n, W=16, H=12, P=2, seed=0):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 100_000, n)).astype(np.int64)
    return make_events(x=rng.integers(0, W, n), y=rng.integers(0, H, n), t=t,
                       p=rng.integers(0, P, n).astype(bool) if P == 2 else rng.integers(0, P, n))


@pytest.mark.parametrize("mode", ["equal_count", "equal_time"])
@pytest.mark.parametrize("n, n_frames", [(1000, 30), (29, 30), (31, 30), (0, 5), (1, 1)])
def test_to_frames_conserves_events(mode, n, n_frames):
    ev = random_events(n)
    fr = D.to_frames(ev, (16, 12, 2), n_frames, mode=mode)
    assert fr.shape == (n_frames, 2, 12, 16) and fr.dtype == np.float32
    for pol in (0, 1):
        assert fr[:, pol].sum() == np.count_nonzero(ev["p"].astype(int) == pol)
    # per-pixel totals equal a direct count
    direct = np.zeros((2, 12, 16))
    np.add.at(direct, (ev["p"].astype(int), ev["y"], ev["x"]), 1)
    np.testing.assert_array_equal(fr.sum(0), direct)


def test_to_frames_equal_count_split():
    ev = random_events(1000)
    fr = D.to_frames(ev, (16, 12, 2), 30)
    per = fr.sum(axis=(1, 2, 3))
    np.testing.assert_array_equal(per[:-1], 1000 // 30)        # SpikingJelly: d = N // T
    assert per[-1] == 1000 - 29 * (1000 // 30)
    few = D.to_frames(random_events(7), (16, 12, 2), 10)        # N < T: all in the last frame
    assert few[-1].sum() == 7 and few[:-1].sum() == 0


def test_to_frames_equal_time_bins():
    ev = make_events(x=[0, 1, 2, 3, 4], y=[0] * 5, t=[100, 109, 110, 150, 199], p=[0, 1, 0, 1, 1])
    fr = D.to_frames(ev, (5, 1, 2), 10, mode="equal_time")     # 10 bins of 10 µs from t=100
    frames_of = [int(np.argwhere(fr[:, :, 0, x])[0, 0]) for x in range(5)]
    assert frames_of == [0, 0, 1, 5, 9]


def test_to_frames_audio_and_single_polarity():
    ev = make_events(x=[0, 3, 3, 6], t=[0, 5, 6, 9], p=[1, 0, 1, 1])      # (t, x, p) form
    assert ev.dtype.names == ("t", "x", "p")
    fr = D.to_frames(ev, (7, 1, 2), 2)
    assert fr.shape == (2, 2, 1, 7) and fr.sum() == 4
    merged = D.to_frames(ev, (7, 1, 1), 1)                      # P = 1 merges polarities
    np.testing.assert_array_equal(merged[0, 0, 0], [1, 0, 0, 2, 0, 0, 1])


def test_event_validation_errors():
    ss = (16, 12, 2)
    ev = random_events(10)
    with pytest.raises(DataError, match="structured numpy array"):
        D.to_frames(np.zeros((10, 4)), ss, 3)
    with pytest.raises(ValueError, match=r"sensor_size must be \(W, H, P\)"):
        D.to_frames(ev, (16, 12), 3)
    with pytest.raises(DataError, match=r"lack field\(s\) \['p'\].*use P = 1"):
        D.to_frames(ev[["x", "y", "t"]], ss, 3)
    bad = ev.copy()
    bad["x"][4] = 16
    with pytest.raises(DataError, match=r"x = 16 at event 4 is outside \[0, 16\) given by sensor_size W = 16"):
        D.to_frames(bad, ss, 3)
    bad = ev.copy()
    bad["y"][0] = -1
    with pytest.raises(DataError, match=r"y = -1 at event 0 is outside \[0, 12\)"):
        D.to_frames(bad, ss, 3)
    signed = make_events(x=[0, 1], y=[0, 0], t=[0, 1], p=[0, 0])
    signed = signed.astype([("x", "i2"), ("y", "i2"), ("t", "i8"), ("p", "i1")])
    signed["p"] = [-1, 1]
    with pytest.raises(DataError, match=r"p = -1 .* map -1/\+1 polarities to 0/1"):
        D.to_frames(signed, ss, 3)
    ft = ev.astype([("x", "i2"), ("y", "i2"), ("t", "f8"), ("p", "?")])
    with pytest.raises(DataError, match="'t' must hold integer microseconds"):
        D.to_frames(ft, ss, 3)
    unsorted = ev[::-1].copy()
    with pytest.raises(DataError, match="times must be non-decreasing .* sort with"):
        D.to_frames(unsorted, ss, 3)
    D.to_frames(unsorted, ss, 3, mode="equal_time")            # order does not matter there
    with pytest.raises(ValueError, match="mode must be one of"):
        D.to_frames(ev, ss, 3, mode="equal")
    with pytest.raises(ValueError, match="n_frames must be a positive int"):
        D.to_frames(ev, ss, 0)
    with pytest.raises(DataError, match=r"audio-form events \(t, x, p\) need sensor_size \(W, 1, P\)"):
        D.to_frames(make_events(x=[0], t=[0], p=[0]), (4, 4, 2), 1)


def test_check_events_returns_input():
    ev = random_events(5)
    out, ss = check_events(ev, [16, 12, 2])
    assert out is ev and ss == (16, 12, 2)
    with pytest.raises(DataError, match="my.file: field 'x' must be an integer pixel index"):
        check_events(ev.astype([("x", "f4"), ("y", "i2"), ("t", "i8"), ("p", "?")]), ss,
                     source="my.file")


def test_events_file_roundtrip(tmp_path):
    ev = random_events(50)
    D.save_events(tmp_path / "e.npz", ev, (16, 12, 2))
    back, ss = D.load_events(tmp_path / "e.npz")
    assert ss == (16, 12, 2)
    np.testing.assert_array_equal(back, ev)
    np.save(tmp_path / "e.npy", ev)                             # tonic-style .npy
    back, ss = D.load_events(tmp_path / "e.npy", (16, 12, 2))
    np.testing.assert_array_equal(back, ev)
    with pytest.raises(DataError, match="stores no sensor_size; pass sensor_size"):
        D.load_events(tmp_path / "e.npy")
    with pytest.raises(DataError, match="differs from the sensor_size"):
        D.load_events(tmp_path / "e.npz", (16, 12, 1))
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="o.npy: cannot read it without pickle"):
        D.load_events(tmp_path / "o.npy", (16, 12, 2))
    np.savez(tmp_path / "k.npz", other=np.zeros(3))
    with pytest.raises(DataError, match="key 'events' is missing"):
        D.load_events(tmp_path / "k.npz")
    write(tmp_path / "junk.npy", b"not numpy")
    with pytest.raises(DataError, match="junk.npy"):
        D.load_events(tmp_path / "junk.npy", (16, 12, 2))
    with pytest.raises(DataError, match="no such file"):
        D.load_events(tmp_path / "absent.npz")
    bad = ev.copy()
    bad["x"][0] = 99
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(DataError, match=r"bad.npy: x = 99 at event 0"):
        D.load_events(tmp_path / "bad.npy", (16, 12, 2))


def test_resize_frames():
    f = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    half = D.resize_frames(f, 2, antialias=False)              # 2x2 means
    np.testing.assert_allclose(half[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    aa = D.resize_frames(f, 2)                                  # PIL-style triangle of width 2
    w = np.array([0.75, 0.75, 0.25, 0]) / 1.75
    np.testing.assert_allclose(aa[0, 0, 0, 0], w @ f[0, 0] @ w, rtol=1e-6)
    const = np.full((3, 2, 128, 128), 2.5, np.float32)
    r = D.resize_frames(const, 48)
    assert r.shape == (3, 2, 48, 48) and r.dtype == np.float32
    np.testing.assert_allclose(r, 2.5, rtol=1e-6)
    up = D.resize_frames(np.array([[0.0, 1.0]]), (1, 4))
    np.testing.assert_allclose(up, [[0, 0.25, 0.75, 1]])
    assert up.dtype == np.float64
    ramp = np.tile(np.arange(128, dtype=np.float64), (2, 1))   # linear ramps stay linear inside
    r = D.resize_frames(ramp, (2, 48), antialias=False)
    np.testing.assert_allclose(np.diff(r[0, 2:-2]), 128 / 48)
    with pytest.raises(ValueError, match="size must be an int or"):
        D.resize_frames(const, "big")
    with pytest.raises(ValueError, match="sizes must be positive"):
        D.resize_frames(const, 0)


# --------------------------------------------------------------------------- digits + registry
def test_digits_dataset():
    ds = D.load_digits_dataset()
    assert ds.x_train.shape[1:] == (1, 8, 8) and ds.x_train.dtype == np.float32
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == 1797
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0 and ds.x_train.max() == 1.0
    full = np.bincount(np.concatenate([ds.y_train, ds.y_test]))
    np.testing.assert_array_equal(np.bincount(ds.y_test), np.round(full * 0.2).astype(int))
    again = D.load("digits")
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    other = D.load("digits", seed=1)
    assert not np.array_equal(other.y_test, ds.y_test) or not np.array_equal(other.x_test, ds.x_test)
    d64 = D.load_digits_dataset(test_fraction=0.5, seed=3, dtype=np.float64)
    assert d64.x_test.dtype == np.float64
    from sklearn.datasets import load_digits
    sk = load_digits()
    # train + test are the whole set (nothing lost or duplicated)
    allx = np.concatenate([ds.x_train, ds.x_test]).reshape(-1, 64) * 16
    assert sorted(map(bytes, allx.astype(np.uint8))) == sorted(map(bytes, sk.data.astype(np.uint8)))
    with pytest.raises(ValueError, match=r"test_fraction must be a number in \(0, 1\)"):
        D.load_digits_dataset(test_fraction=1.0)
    with pytest.raises(ValueError, match="empty train or test part"):
        D.load_digits_dataset(test_fraction=0.001)
    with pytest.raises(ValueError, match="float32 or float64"):
        D.load_digits_dataset(dtype=np.int32)


def test_registry():
    with pytest.raises(ValueError, match="unknown data set 'imagenet'; known names: digits, mnist, "
                                         "fashion-mnist, cifar10, cifar100"):
        D.load("imagenet")
    with pytest.raises(ValueError, match="reads no folder"):
        D.load("digits", "/tmp")
    with pytest.raises(TypeError, match="takes no extra options"):
        D.load("mnist", "/tmp", seed=1)
    with pytest.raises(TypeError, match="must be a str"):
        D.load(3)
    assert issubclass(DataError, ValueError)
