"""Fuzzing the file readers with hypothesis (docs/reliability.md, "Fuzzing").

Random and mutated inputs for every reader of user files: model files (TOML text mutations
and value mutations of the parsed tables, plus the ``[training]`` table), IDX files and
folders, CIFAR pickles and folders, event files, run files and training checkpoints (byte
mutations, truncations, deleted groups, datasets and attributes).  Each reader must either
work -- and then return exactly what an independent oracle says the bytes contain, with the
right shapes -- or raise its documented error (a ``NeurosimError`` subclass: ``ModelError``,
``TrainingError``, ``DataError``, ``RunFileError``).  Any other exception, a crash or a hang
(deadline 20 s per example) fails.

The default suite runs a fixed, derandomised set of examples (well under a minute).  A long
run: ``python -m pytest -m fuzz`` (2000 random examples per test, a few minutes on 2 cores;
``NEUROSIM_FUZZ_EXAMPLES=<n>`` sets another count; failures are stored in ``.hypothesis/``
and replayed first next time).
"""
import atexit
import gzip
import io
import os
import re
import shutil
import struct
import tempfile
import tomllib
from datetime import timedelta
from pathlib import Path
from unittest import mock

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import neurosim as ns
from neurosim import config
from neurosim._validate import NeurosimError
from neurosim.datasets import DataError
from neurosim.datasets import cifar as C
from neurosim.datasets import events as E
from neurosim.datasets import idx as I
from neurosim.io import RunFileError, read_run, write_run
from neurosim.io.model_file import ModelError, models_dir
from neurosim.models import load_model, model_from_dict
from neurosim.training.checkpoint import load_checkpoint

from test_datasets import cifar_batch, idx_bytes, py2_pickle

pytestmark = pytest.mark.fuzz

_LONG = int(os.environ.get("NEUROSIM_FUZZ_EXAMPLES", "0") or 0)
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
          HealthCheck.function_scoped_fixture]


def fuzz(examples):
    """Settings: fixed examples in the default suite, ``$NEUROSIM_FUZZ_EXAMPLES`` random
    ones in a long run."""
    if _LONG:
        return settings(max_examples=_LONG, deadline=timedelta(seconds=20),
                        suppress_health_check=_QUIET)
    return settings(max_examples=examples, derandomize=True, database=None,
                    deadline=timedelta(seconds=20), suppress_health_check=_QUIET)


#: a small model budget while fuzzing, so that a mutated size fails fast (ModelError)
FUZZ_MODEL_BYTES = 8 * 2 ** 20
_TMP = Path(tempfile.mkdtemp(prefix="neurosim-fuzz-"))
atexit.register(shutil.rmtree, _TMP, True)


def _tmpfile(name, data):
    p = _TMP / name
    p.write_bytes(data)
    return p


# ======================================================================================
# mutation strategies
# ======================================================================================
def byte_ops(hot=64):
    """Edits of a byte string; positions are taken modulo the current length.  ``hot``
    bytes at the start (headers) get extra attention."""
    pos = st.integers(0, 2 ** 31)
    return st.lists(st.one_of(
        st.tuples(st.just("set"), pos, st.integers(0, 255)),
        st.tuples(st.just("set"), st.integers(0, hot - 1), st.integers(0, 255)),
        st.tuples(st.just("xor"), pos, st.integers(1, 255)),
        st.tuples(st.just("del"), pos, st.integers(1, 64)),
        st.tuples(st.just("ins"), pos, st.binary(min_size=1, max_size=16)),
        st.tuples(st.just("trunc"), pos, st.just(0)),
    ), min_size=1, max_size=4)


def mutate_bytes(data, ops):
    b = bytearray(data)
    for op, p, v in ops:
        n = len(b)
        if op == "ins":
            i = p % (n + 1)
            b[i:i] = v
            continue
        if n == 0:
            continue
        i = p % n
        if op == "set":
            b[i] = v
        elif op == "xor":
            b[i] ^= v
        elif op == "del":
            del b[i:i + v]
        else:
            del b[i:]
    return bytes(b)


_TOKENS = ["0", "-1", "1", "2", "3", "7", "0.0", "-0.5", "1e308", "-1e308", "nan", "inf", "-inf",
           "100000000", "99999999999", '"x"', '"l0"', '"F"', "[]", "[0]", "[1, 2]", "[4, 8, 8]",
           "{}", "true", "false", '"lif"', '"dense"', '"conv2d"', '"input"', '"zeros"']


def text_ops():
    pos = st.integers(0, 2 ** 31)
    return st.lists(st.one_of(
        st.tuples(st.just("number"), pos, st.one_of(st.sampled_from(_TOKENS),
                                                     st.integers(-10, 10 ** 9).map(str))),
        st.tuples(st.just("insert"), pos, st.text("[]{}=\"',.-+0123456789\n #_axl", max_size=6)),
        st.tuples(st.just("delete"), pos, st.integers(1, 12)),
        st.tuples(st.just("drop_line"), pos, st.just("")),
        st.tuples(st.just("dup_line"), pos, st.just("")),
        st.tuples(st.just("swap_lines"), pos, st.integers(0, 2 ** 31)),
    ), min_size=1, max_size=4)


_NUM = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e-?\d+)?(?![\w.])")


def mutate_text(text, ops):
    for op, p, v in ops:
        if op == "number":
            nums = list(_NUM.finditer(text))
            if nums:
                m = nums[p % len(nums)]
                text = text[:m.start()] + v + text[m.end():]
        elif op == "insert":
            i = p % (len(text) + 1)
            text = text[:i] + v + text[i:]
        elif op == "delete" and text:
            i = p % len(text)
            text = text[:i] + text[i + v:]
        else:
            lines = text.split("\n")
            i = p % len(lines)
            if op == "drop_line":
                del lines[i]
            elif op == "dup_line":
                lines.insert(i, lines[i])
            else:
                j = v % len(lines)
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
    return text


# ======================================================================================
# model files
# ======================================================================================
SEED_MODELS = ["fsnn_mlp", "fsnn_mlp_spiking", "test_conv", "test_sparse"]
_MODEL_TEXT = {n: (models_dir() / f"{n}.toml").read_text() for n in SEED_MODELS}


def check_network(net):
    """Invariants of a network a model file produced."""
    assert isinstance(net, ns.Network)
    for p in net.populations.values():
        assert p.n == int(np.prod(p.shape)) >= 1 and len(p.shape) in (1, 3)
    for q in net.projections.values():
        P, Q = net.populations[q.pre], net.populations[q.post]
        assert (q.n_pre, q.n_post) == (P.n, Q.n)
        for a in q.weight_arrays().values():
            assert np.all(np.isfinite(a))
        if q.kind == "dense":
            assert q.weight.shape == (P.n, Q.n)
        if q.bias is not None:
            assert np.all(np.isfinite(q.bias))
    assert sorted(net.schedule()) == sorted(net.populations)


def _load_or_model_error(fn, *a, **kw):
    with mock.patch.object(config, "MAX_MODEL_BYTES", FUZZ_MODEL_BYTES):
        try:
            net = fn(*a, **kw)
        except ModelError:
            return None
    check_network(net)
    _training_table(net)
    return net


def _training_table(net):
    from neurosim.training.trainer import TrainingError, config_for
    try:
        cfg, meta = config_for(net, {})
    except TrainingError:
        return
    assert cfg.T >= 1 and cfg.T_b >= 1 and cfg.batch_size >= 1
    assert set(cfg.dropout) <= set(net.projections) and set(cfg.norm_cap) <= set(net.projections)


@fuzz(150)
@given(st.sampled_from(SEED_MODELS), text_ops())
def test_model_file_text_mutations(name, ops):
    text = mutate_text(_MODEL_TEXT[name], ops)
    p = _TMP / "mutated.toml"
    p.write_bytes(text.encode("utf-8", "surrogatepass"))
    _load_or_model_error(load_model, p)


def _value():
    return st.one_of(
        st.integers(-3, 12), st.integers(-10 ** 12, 10 ** 12),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=6), st.sampled_from(["x", "l0", "l1", "F", "W1", "B", "c0", "p0",
                                              "lif", "input", "dense", "sparse", "conv2d",
                                              "avgpool2d", "conv_transpose2d", "zeros"]),
        st.booleans(), st.lists(st.integers(-2, 40), max_size=4),
        st.dictionaries(st.sampled_from(["v_th", "classes", "W1", "B", "F", "x"]),
                        st.one_of(st.integers(-2, 12), st.floats(-2, 2)), max_size=2))


_KEYS = ["name", "shape", "kind", "pre", "post", "delay", "port", "v_th", "subtract", "leak",
         "reset", "t_ref", "ternary", "bias", "bias_value", "init", "init_scale", "p", "fan_in",
         "kernel", "stride", "padding", "output_padding", "T", "T_b", "lr", "kappa", "epochs",
         "batch_size", "milestones", "dropout", "norm_cap", "readout", "output", "loss",
         "momentum", "format", "dtype", "tau_syn", "unknown_key"]


def _tables(d):
    """(container, key) of every table in a parsed model, for value mutations."""
    out = [d]
    for k in ("populations", "projections"):
        if isinstance(d.get(k), list):
            out += [t for t in d[k] if isinstance(t, dict)]
    if isinstance(d.get("training"), dict):
        out.append(d["training"])
    return out


@fuzz(250)
@given(st.sampled_from(SEED_MODELS), st.lists(st.tuples(
    st.sampled_from(["set", "del", "add"]), st.integers(0, 2 ** 31), st.integers(0, 2 ** 31),
    _value(), st.sampled_from(_KEYS)), min_size=1, max_size=3))
def test_model_dict_value_mutations(name, ops):
    d = tomllib.loads(_MODEL_TEXT[name])
    for op, i, j, value, key in ops:
        tables = _tables(d)
        t = tables[i % len(tables)]
        keys = sorted(t)
        if op == "set" and keys:
            t[keys[j % len(keys)]] = value
        elif op == "del" and keys:
            del t[keys[j % len(keys)]]
        else:
            t[key] = value
    _load_or_model_error(model_from_dict, d, source="fuzz.toml")


# ======================================================================================
# IDX
# ======================================================================================
_rng = np.random.default_rng(0)
_IDX_IMAGES = idx_bytes(_rng.integers(0, 256, (3, 28, 28), dtype=np.uint8))
_IDX_LABELS = idx_bytes(np.array([3, 0, 9], np.uint8))
_IDX_I16 = idx_bytes(np.arange(12, dtype=np.int16).reshape(3, 4))


def _idx_oracle(raw):
    """Independent parse of IDX bytes: (dims, numpy dtype, data bytes) or None if invalid."""
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except Exception:                 # noqa: BLE001 - any failure means "invalid"
            return None
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in I.IDX_TYPES or raw[3] == 0:
        return None
    nd = raw[3]
    if len(raw) < 4 + 4 * nd:
        return None
    dims = struct.unpack(f">{nd}I", raw[4:4 + 4 * nd])
    dt = I.IDX_TYPES[raw[2]]
    need = int(np.prod(dims, dtype=object)) * dt.itemsize
    body = raw[4 + 4 * nd:]
    if len(body) != need:
        return None
    return dims, dt, body


@fuzz(200)
@given(st.sampled_from(["images", "labels", "i16"]), st.booleans(), byte_ops(hot=16))
def test_idx_reader_mutations(which, gz, ops):
    seed = {"images": _IDX_IMAGES, "labels": _IDX_LABELS, "i16": _IDX_I16}[which]
    data = mutate_bytes(gzip.compress(seed, mtime=0) if gz else seed, ops)
    p = _tmpfile("m-idx3-ubyte", data)
    expect = _idx_oracle(data)
    try:
        arr = I.read_idx(p)
    except DataError:
        assert expect is None or (gz and data[:2] != b"\x1f\x8b"), "valid IDX refused"
        return
    assert expect is not None, "invalid IDX accepted"
    dims, dt, body = expect
    assert arr.shape == tuple(dims) and arr.dtype == dt.newbyteorder("=")
    np.testing.assert_array_equal(arr, np.frombuffer(body, dt).reshape(dims))


def _idx_folder(victim, data):
    d = _TMP / "idx"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    files = {"train-images-idx3-ubyte": _IDX_IMAGES, "train-labels-idx1-ubyte": _IDX_LABELS,
             "t10k-images-idx3-ubyte": _IDX_IMAGES, "t10k-labels-idx1-ubyte": _IDX_LABELS}
    files[victim] = data
    for k, v in files.items():
        (d / k).write_bytes(v)
    return d


@fuzz(120)
@given(st.sampled_from(["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                        "t10k-labels-idx1-ubyte"]), byte_ops(hot=16))
def test_idx_folder_mutations(victim, ops):
    seed = _IDX_IMAGES if "images" in victim else _IDX_LABELS
    d = _idx_folder(victim, mutate_bytes(seed, ops))
    try:
        ds = I.load_idx_dataset(d, name="mnist")
    except DataError:
        return
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.dtype == np.uint8 and x.ndim == 4 and x.shape[1:] == (1, 28, 28)
        assert y.dtype == np.int64 and y.shape == (x.shape[0],) and x.shape[0] >= 1
        assert y.min() >= 0 and y.max() <= 9


# ======================================================================================
# CIFAR
# ======================================================================================
_CIFAR_BATCH = py2_pickle(cifar_batch(3, 10, seed=1))
_CIFAR_META = py2_pickle({b"label_names": [b"c%d" % i for i in range(10)]})


def _cifar_folder(test_batch, meta):
    d = _TMP / "cifar"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    for i in range(1, 6):
        (d / f"data_batch_{i}").write_bytes(_CIFAR_BATCH)
    (d / "test_batch").write_bytes(test_batch)
    (d / "batches.meta").write_bytes(meta)
    return d


@fuzz(250)
@given(st.booleans(), byte_ops(hot=128))
def test_cifar_mutations(mutate_meta, ops):
    batch = _CIFAR_BATCH if mutate_meta else mutate_bytes(_CIFAR_BATCH, ops)
    meta = mutate_bytes(_CIFAR_META, ops) if mutate_meta else _CIFAR_META
    d = _cifar_folder(batch, meta)
    try:
        obj = C.load_pickle(d / ("batches.meta" if mutate_meta else "test_batch"))
        assert isinstance(obj, dict) and all(isinstance(k, str) for k in obj)
    except DataError:
        pass
    try:
        ds = C.load_cifar(d, "cifar10")
    except DataError:
        return
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.dtype == np.uint8 and x.ndim == 4 and x.shape[1:] == (3, 32, 32)
        assert y.dtype == np.int64 and y.shape == (x.shape[0],) and x.shape[0] >= 1
        assert y.min() >= 0 and y.max() <= 9
    assert len(ds.label_names) == 10 and all(isinstance(s, str) for s in ds.label_names)


# ======================================================================================
# event files
# ======================================================================================
_EV = E.make_events(_rng.integers(0, 16, 20), np.sort(_rng.integers(0, 1000, 20)),
                    _rng.integers(0, 2, 20).astype(bool), _rng.integers(0, 12, 20))
_buf = io.BytesIO()
np.savez(_buf, events=_EV, sensor_size=np.array([16, 12, 2], np.int64))
_EV_NPZ = _buf.getvalue()
_buf = io.BytesIO()
np.save(_buf, _EV)
_EV_NPY = _buf.getvalue()


@fuzz(250)
@given(st.sampled_from(["npz", "npy"]), byte_ops(hot=128))
def test_event_file_mutations(kind, ops):
    data = mutate_bytes(_EV_NPZ if kind == "npz" else _EV_NPY, ops)
    p = _tmpfile(f"ev.{kind}", data)
    try:
        ev, ss = E.load_events(p, None if kind == "npz" else (16, 12, 2))
    except DataError:
        return
    assert isinstance(ss, tuple) and len(ss) == 3 and all(isinstance(s, int) and s >= 1 for s in ss)
    E.check_events(ev, ss)             # valid fields, dtypes and ranges
    assert ev.ndim == 1


# ======================================================================================
# run files and training checkpoints
# ======================================================================================
_SEEDS = {}


@pytest.fixture(scope="module")
def seeds():
    """A run file (forward + backward, recorded spikes) and a training checkpoint."""
    return _seed_files()


def _seed_files():
    if not _SEEDS:
        d = _TMP / "seeds"
        d.mkdir(exist_ok=True)
        net = load_model("fsnn_mlp", seed=1)
        rng = np.random.default_rng(0)
        x = rng.random((2, 64))
        fwd = ns.run_forward(net, 6, inputs={"x": x}, record=True)
        bwd = ns.run_backward(net, fwd, {"l1": rng.normal(0, 0.5, (2, 64))}, 5, record=True)
        write_run(d / "run.h5", net, fwd, bwd, inputs={"x": x},
                  grad={"l1": rng.normal(0, 0.5, (2, 64))}, seed=1)
        from neurosim.training.trainer import train
        train(out=d / "ckpt.h5", overrides=dict(epochs=1, T=3, T_b=4, batch_size=16),
              max_train=32, max_test=8)
        _SEEDS["run"] = (d / "run.h5").read_bytes()
        _SEEDS["ckpt"] = (d / "ckpt.h5").read_bytes()
        _SEEDS["run_obj"] = _run_arrays(read_run(d / "run.h5"))
        _SEEDS["ckpt_obj"] = _ckpt_arrays(load_checkpoint(d / "ckpt.h5"))
    return _SEEDS


def _run_arrays(run):
    out = {}
    for name, q in run.network.projections.items():
        for k, a in q.weight_arrays().items():
            out[f"net/{name}/{k}"] = a
        if q.bias is not None:
            out[f"net/{name}/bias"] = q.bias
    out["net/schedule"] = np.array(run.network.schedule())
    for ph in ("forward", "backward"):
        res = getattr(run, ph)
        if res is None:
            continue
        for attr in ("counts", "counts_neg", "v_final", "neuron_updates", "sent", "sent_neg",
                     "input_ops", "weighted_counts"):
            for k, a in (getattr(res, attr) or {}).items():
                if a is not None:
                    out[f"{ph}/{attr}/{k}"] = np.asarray(a)
        for k, a in (res.spikes or {}).items():
            out[f"{ph}/spikes/{k}"] = a
        out[f"{ph}/shape"] = np.array([res.steps, res.batch])
    for attr in ("inputs", "source_spikes", "currents", "masks", "grad", "gate"):
        for k, a in getattr(run, attr).items():
            out[f"stim/{attr}/{k}"] = a
    for ph, d in run.synapse_counts.items():
        for proj, arrays in d.items():
            for k, a in arrays.items():
                out[f"syn/{ph}/{proj}/{k}"] = a
    return out


def _ckpt_arrays(loaded):
    net, st_ = loaded
    out = {f"net/{n}/{k}": a for n, q in net.projections.items() for k, a in q.weight_arrays().items()}
    out.update({f"net/{n}/bias": q.bias for n, q in net.projections.items() if q.bias is not None})
    for group in ("raw", "optimizer", "history"):
        for k, a in st_[group].items():
            out[f"{group}/{k}"] = np.asarray(a)
    if st_["readout"] is not None:
        out["readout/C"], out["readout/c"] = st_["readout"]
    for k in ("epoch", "iteration", "classes", "model", "dataset"):
        out[f"attr/{k}"] = np.asarray(st_[k])
    out["attr/config"] = np.asarray(repr(sorted(st_["config"].items())))
    out["attr/rng"] = np.asarray(repr(st_["rng"]))
    return out


def _assert_subset_equal(got, ref):
    """Everything the reader returned is exactly what was written (pieces may be missing
    where the schema makes them optional, never different or new)."""
    assert set(got) <= set(ref), set(got) - set(ref)
    for k, a in got.items():
        b = ref[k]
        assert np.shape(a) == np.shape(b), k
        np.testing.assert_array_equal(a, b, err_msg=k)


def _read_or_error(kind, path):
    try:
        if kind == "run":
            return _run_arrays(read_run(path))
        return _ckpt_arrays(load_checkpoint(path))
    except RunFileError:
        return None


@fuzz(120)
@given(st.sampled_from(["run", "ckpt"]), byte_ops(hot=4096))
def test_run_file_byte_mutations(seeds, kind, ops):
    p = _tmpfile(f"mut-{kind}.h5", mutate_bytes(seeds[kind], ops))
    got = _read_or_error(kind, p)
    if got is not None:
        ref = seeds[f"{kind}_obj"]
        assert set(got) == set(ref)
        _assert_subset_equal(got, ref)


def _objects(path):
    names, attrs = [], []
    with h5py.File(path, "r") as f:
        f.visit(names.append)
        for n in [""] + names:
            obj = f[n] if n else f
            attrs += [(n, a) for a in obj.attrs]
    return sorted(names), sorted(attrs)


@fuzz(150)
@given(st.sampled_from(["run", "ckpt"]), st.lists(st.tuples(st.booleans(), st.integers(0, 2 ** 31)),
                                                   min_size=1, max_size=3))
def test_run_file_deletions(seeds, kind, picks):
    p = _tmpfile(f"del-{kind}.h5", seeds[kind])
    names, attrs = _objects(p)
    with h5py.File(p, "a") as f:
        for is_attr, i in picks:
            if is_attr:
                n, a = attrs[i % len(attrs)]
                if n and n not in f:
                    continue
                obj = f[n] if n else f
                if a in obj.attrs:
                    del obj.attrs[a]
            else:
                n = names[i % len(names)]
                if n in f:
                    del f[n]
    got = _read_or_error(kind, p)
    if got is not None:
        _assert_subset_equal(got, seeds[f"{kind}_obj"])


# ======================================================================================
# regressions: every bug the fuzzer found, as a fixed example (docs/reliability.md)
# ======================================================================================
def test_regression_milestones_not_a_list():
    """[training] milestones = 8 raised TypeError ('int' object is not iterable)."""
    from neurosim.training.trainer import TrainingError, config_for
    d = tomllib.loads(_MODEL_TEXT["fsnn_mlp"])
    d["training"]["milestones"] = 8
    net = model_from_dict(d, source="m.toml")
    with pytest.raises(TrainingError, match=r"m.toml: \[training\]: milestones must be a list "
                       r"of epochs such as \[20, 27\], got int 8"):
        config_for(net, {})


@pytest.mark.parametrize("kind,ops,what", [
    ("npy", [("set", 115, 0)], "SyntaxError"),          # NUL byte in the .npy header
    ("npz", [("set", 26, 0)], "BadZipFile"),            # zip local header name damaged
    ("npz", [("set", 28, 0)], "BadZipFile"),
])
def test_regression_damaged_event_files(kind, ops, what):
    """numpy / zipfile errors other than ValueError/OSError escaped load_events."""
    p = _tmpfile(f"reg.{kind}", mutate_bytes(_EV_NPZ if kind == "npz" else _EV_NPY, ops))
    with pytest.raises(DataError, match=r"reg\.np[yz]: (not a readable|cannot read its arrays)"):
        E.load_events(p, None if kind == "npz" else (16, 12, 2))


def test_regression_corrupt_checkpoint_array_is_detected(seeds):
    """/training arrays were stored without checksums: a flipped byte in the readout weights
    was read back as a silently different number."""
    p = _tmpfile("flip.h5", seeds["ckpt"])
    with h5py.File(p, "r") as f:
        d = f["training/readout_weight"]
        off = d.id.get_chunk_info(0).byte_offset if d.chunks else d.id.get_offset()
    raw = bytearray(p.read_bytes())
    raw[off + 40] ^= 0x10
    p.write_bytes(bytes(raw))
    with pytest.raises(RunFileError, match="corrupt or truncated"):
        load_checkpoint(p)


def test_regression_backward_spikes_need_their_sign(seeds):
    """Without /backward/.../spikes/sign the ternary spikes were read as all +1."""
    p = _tmpfile("nosign.h5", seeds["run"])
    with h5py.File(p, "a") as f:
        del f["backward/populations/l0/spikes/sign"]
    with pytest.raises(RunFileError, match=r"missing dataset /backward/populations/l0/spikes/sign"):
        read_run(p)


def test_regression_pickle_memo_index_is_bounded():
    """A damaged 10-byte CIFAR meta file (LONG_BINPUT 1428684800) made the unpickler grow its
    memo to 1.4e9 entries: 77 s and gigabytes of memory before failing."""
    import time
    p = _tmpfile("memo", b"\x80\x02}r\x00\x00(U\x0b\x00")
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=r"memo index 1428684800 at byte 3, after only 3 opcodes"):
        C.load_pickle(p)
    assert time.perf_counter() - t0 < 1.0


def test_regression_weights_beyond_the_dtype():
    """init_scale = 1e308 on a sparse projection raised a NeurosimError without the file and
    projection (not a ModelError); on a float32 network a large init_scale gave finite float64
    weights that became inf in the simulation."""
    d = tomllib.loads(_MODEL_TEXT["test_sparse"])
    t = next(t for t in d["projections"] if t["kind"] == "sparse")
    t["init_scale"] = 1e308
    with np.errstate(over="ignore"), pytest.raises(ModelError, match=rf"s.toml: \[\[projections\]\] "
                                                   rf"'{t['name']}' .*contains NaN or inf"):
        model_from_dict(d, source="s.toml")
    d = tomllib.loads(_MODEL_TEXT["fsnn_mlp"])
    d["projections"][1]["init_scale"] = 1e300
    with pytest.raises(ModelError, match=r"'W1' \(l0 -> l1\): init_scale / bias_value give weight "
                       r"values up to .*, beyond the largest float32"):
        model_from_dict(d, source="m.toml")


@pytest.mark.parametrize("kind", ["run", "ckpt"])
def test_regression_damaged_global_heap_does_not_hang(seeds, kind):
    """A damaged byte run in a global heap collection (where h5py keeps str attributes; no
    checksum) made the HDF5 library loop forever reading an attribute.  Reproduced here by
    zeroing one heap object's index and size."""
    import time
    raw = bytearray(seeds[kind])
    i = raw.find(b"GCOL")
    assert i > 0
    q = i + 16                  # the first object header
    raw[q:q + 2] = b"\0\0"
    raw[q + 8:q + 16] = bytes(8)
    p = _tmpfile(f"gcol-{kind}.h5", bytes(raw))
    t0 = time.perf_counter()
    with pytest.raises(RunFileError, match=rf"global heap object at byte {q} has size 0 .*would "
                       "loop on it"):
        read_run(p) if kind == "run" else load_checkpoint(p)
    assert time.perf_counter() - t0 < 2.0


def test_regression_cifar_non_string_key():
    """Deleting three bytes of a batch pickle gave a dict with a tuple key, returned by
    load_pickle although its keys are documented to be strings."""
    p = _tmpfile("tuplekey", mutate_bytes(_CIFAR_BATCH, [("del", 125, 1), ("del", 205, 2)]))
    with pytest.raises(DataError, match="the pickled dict has a key of type tuple"):
        C.load_pickle(p)


def test_regression_event_npz_flagged_encrypted():
    """One bit in a zip entry's flags made zipfile raise RuntimeError ('encrypted')."""
    flags = _EV_NPZ.find(b"PK\x01\x02") + 8          # central directory: general purpose flags
    p = _tmpfile("enc.npz", mutate_bytes(_EV_NPZ, [("set", flags, 1)]))
    with pytest.raises(DataError, match=r"enc\.npz: (cannot read its arrays|not a readable)"):
        E.load_events(p)


@pytest.mark.parametrize("n", [0, 8, 11, 15])
def test_regression_tiny_truncated_run_file(seeds, n):
    """A run file cut right after the HDF5 signature made the global-heap walk index past
    the end (IndexError)."""
    p = _tmpfile("tiny.h5", seeds["run"][:n])
    with pytest.raises(RunFileError):
        read_run(p)


def test_regression_string_attribute_damage_is_detected(seeds):
    """Attribute strings live in HDF5's global heap (no checksum): a damaged byte changed
    the stored model name ('fsnn_mlp' -> '') or a digit of the JSON configuration without
    any error.  Here: "lr": 0.1 becomes "lr": 0.7 in place."""
    raw = bytearray(seeds["ckpt"])
    i = raw.find(b'"lr": 0.1')
    assert i > 0
    raw[i + 8] = ord("7")
    p = _tmpfile("lr.h5", bytes(raw))
    with pytest.raises(RunFileError, match="attributes were damaged or changed after writing"):
        load_checkpoint(p)
