"""Run files: round trips re-simulate identically, writes are atomic, reads validate."""
import os

import h5py
import numpy as np
import pytest

import neurosim as ns
from neurosim import counting as C
from neurosim.io import RunFileError, load_network, read_run, write_run
from neurosim.io import runfile as H
from neurosim.models import load_model
from neurosim.simulate import rerun

from conftest import random_case


def _stimulus(net, B, T, seed=0):
    rng = np.random.default_rng(seed)
    inputs = {p.name: rng.random((B, p.n)) for p in net.populations.values() if p.kind == "input"}
    spikes = {p.name: rng.random((B, T, p.n)) < 0.3 for p in net.populations.values()
              if p.kind == "source"}
    return inputs, spikes


def _run_model(name, B=3, T=12, Tb=8, record=True):
    net = load_model(name, seed=1)
    inputs, spikes = _stimulus(net, B, T)
    fwd = ns.run_forward(net, T, inputs=inputs, spikes=spikes, record=record)
    last = [n for n in net.schedule() if net.populations[n].spiking][-1]
    grad = {last: np.random.default_rng(2).normal(0, 0.5, (B, net.populations[last].n))}
    bwd = ns.run_backward(net, fwd, grad, Tb, record=record)
    return net, fwd, bwd, dict(inputs=inputs, spikes=spikes, grad=grad)


def _assert_same_phase(a, b):
    assert (a.phase, a.steps, a.batch) == (b.phase, b.steps, b.batch)
    assert set(a.counts) == set(b.counts)
    for k in a.counts:
        np.testing.assert_array_equal(a.counts[k], b.counts[k])
        np.testing.assert_array_equal(a.counts_neg[k], b.counts_neg[k])
        np.testing.assert_array_equal(a.v_final[k], b.v_final[k])
        np.testing.assert_array_equal(a.neuron_updates[k], b.neuron_updates[k])
        if a.spikes is not None:
            np.testing.assert_array_equal(a.spikes[k], b.spikes[k])
    assert set(a.sent) == set(b.sent)
    for k in a.sent:
        np.testing.assert_array_equal(a.sent[k], b.sent[k])
        np.testing.assert_array_equal(a.sent_neg[k], b.sent_neg[k])


def _assert_same_network(a, b):
    assert list(a.populations) == list(b.populations)
    assert list(a.projections) == list(b.projections)
    assert a.dtype == b.dtype and a.schedule() == b.schedule()
    for name, p in a.populations.items():
        q = b.populations[name]
        assert (p.kind, p.shape, p.neuron, p.ternary) == (q.kind, q.shape, q.neuron, q.ternary)
    for name, p in a.projections.items():
        q = b.projections[name]
        assert (type(p), p.pre, p.post, p.params()) == (type(q), q.pre, q.post, q.params())
        for k, arr in p.weight_arrays().items():
            np.testing.assert_array_equal(arr, q.weight_arrays()[k])
        if isinstance(p, ns.Sparse):
            np.testing.assert_array_equal(p.indptr, q.indptr)
            np.testing.assert_array_equal(p.indices, q.indices)


# -- round trips ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fsnn_mlp", "test_conv", "test_sparse"])
def test_round_trip_model_files(tmp_path, name):
    net, fwd, bwd, stim = _run_model(name)
    path = write_run(tmp_path / "run.h5", net, fwd, bwd, seed=1, command="test", **stim)
    run = read_run(path)
    assert run.attrs["format"] == "neurosim-run" and run.attrs["schema_version"] == 1
    assert run.attrs["seed"] == 1 and run.attrs["command"] == "test"
    assert run.attrs["neurosim_version"] == ns.__version__
    assert run.attrs["dtype"] == np.dtype(net.dtype).name
    assert run.network.metadata["model"] == name
    _assert_same_network(net, run.network)
    # the stored results are the results
    _assert_same_phase(fwd, run.forward)
    _assert_same_phase(bwd, run.backward)
    # the stored per-synapse counts are counting's
    for res, key in ((fwd, "forward"), (bwd, "backward")):
        for q in res.sent:
            stored = run.synapse_counts[key][q]
            for k, v in C.per_synapse(res, q).items():
                np.testing.assert_array_equal(stored[k], v)
            if net.projections[q].kind in ("conv2d", "conv_transpose2d", "avgpool2d"):
                for k, v in C.per_kernel_weight(res, q).items():
                    np.testing.assert_array_equal(stored["count_per_kernel_weight" + k[5:]], v)
    # counting works on the PhaseResults read back
    for q in fwd.sent:
        np.testing.assert_array_equal(C.synaptic_events(run.forward, q), C.synaptic_events(fwd, q))
    # the network rebuilt from the file alone re-simulates identically
    fwd2, bwd2 = rerun(run)
    _assert_same_phase(fwd, fwd2)
    _assert_same_phase(bwd, bwd2)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_round_trip_random_networks(tmp_path, seed):
    """Random networks with masks, currents, leaks, refractoriness, CubaLIF and ports."""
    cuba = seed % 3 == 2
    case = random_case(seed, cuba=cuba, dyadic_values=seed % 2 == 0)
    net = case.net
    fwd = ns.run_forward(net, case.steps, record=True, **case.fwd_kwargs)
    bwd = None
    if not cuba:
        bwd = ns.run_backward(net, fwd, case.grad, case.steps_b, record=True)
    path = write_run(tmp_path / "r.h5", net, fwd, bwd, inputs=case.inputs, spikes=case.spikes,
                     currents=case.currents, grad=case.grad if bwd else None)
    run = read_run(path)
    _assert_same_network(net, run.network)
    fwd2, bwd2 = rerun(run)
    _assert_same_phase(fwd, fwd2)
    if bwd is not None:
        _assert_same_phase(bwd, bwd2)
    for k in case.masks:
        np.testing.assert_array_equal(run.masks[k], fwd.masks[k])


def test_round_trip_without_backward_or_record(tmp_path):
    net, fwd, _, stim = _run_model("fsnn_mlp", record=False)
    path = write_run(tmp_path / "f.h5", net, fwd, inputs=stim["inputs"])
    run = read_run(path)
    assert run.backward is None and run.forward.spikes is None and run.grad == {}
    with h5py.File(path) as f:
        assert "backward" not in f and "spikes" not in f["forward/populations/l0"]
    fwd2, bwd2 = rerun(run)
    assert bwd2 is None
    _assert_same_phase(fwd, fwd2)


def test_custom_gate_is_stored_and_used(tmp_path):
    net, fwd, _, stim = _run_model("fsnn_mlp", record=False)
    gate = {name: np.ones((fwd.batch, net.populations[name].n), bool) for name in ("l0", "l1")}
    bwd = ns.run_backward(net, fwd, stim["grad"], 8, gate=gate)
    path = write_run(tmp_path / "g.h5", net, fwd, bwd, inputs=stim["inputs"], grad=stim["grad"],
                     gate=gate)
    run = read_run(path)
    np.testing.assert_array_equal(run.gate["l0"], gate["l0"])
    _, bwd2 = rerun(run)
    _assert_same_phase(bwd, bwd2)


def test_layout_of_the_file(tmp_path):
    net, fwd, bwd, stim = _run_model("test_sparse", B=2)
    path = write_run(tmp_path / "s.h5", net, fwd, bwd, seed=1, **stim)
    with h5py.File(path) as f:
        for key in ("format", "schema_version", "neurosim_version", "created", "seed", "dtype", "command"):
            assert key in f.attrs
        assert f.attrs["created"].endswith("Z")
        rec = f["network/projections/rec"]
        assert rec.attrs["kind"] == "sparse" and rec.attrs["delay"] == 1
        assert rec["indptr"].dtype == np.int64 and rec["indices"].dtype == np.int32
        assert f["network/populations/h"].attrs["schedule_position"] == 1
        spk = f["forward/populations/h/spikes"]
        assert {spk[k].dtype for k in ("sample", "step", "neuron")} == {np.dtype(np.int32)}
        assert f["backward/populations/h/spikes/sign"].dtype == np.int8
        assert set(f["forward/projections/rec"]) >= {"sent", "synaptic_operations", "count"}
        assert set(f["backward/projections/rec"]) >= {"sent_pos", "sent_neg", "synaptic_operations",
                                                      "count_pos", "count_neg"}
        np.testing.assert_array_equal(f["forward/source_spikes/s"][()], stim["spikes"]["s"])
        assert f["forward/projections/rec/count"].shape == rec["indices"].shape
    net2 = load_network(path)
    _assert_same_network(net, net2)


def test_big_datasets_are_compressed(tmp_path):
    net, fwd, bwd, stim = _run_model("fsnn_mlp", B=2)
    path = write_run(tmp_path / "c.h5", net, fwd, bwd, **stim)
    with h5py.File(path) as f:
        assert f["network/projections/W1/weight"].compression == "gzip"
        assert f["forward/projections/W1/count"].compression == "gzip"


# -- atomicity ----------------------------------------------------------------------------------
def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch):
    net, fwd, bwd, stim = _run_model("fsnn_mlp", B=2, record=False)

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(H, "_write_phase", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_run(tmp_path / "run.h5", net, fwd, bwd, **stim)
    assert os.listdir(tmp_path) == []


def test_failure_mid_write_keeps_previous_file(tmp_path, monkeypatch):
    net, fwd, bwd, stim = _run_model("fsnn_mlp", B=2, record=False)
    path = write_run(tmp_path / "run.h5", net, fwd, **{"inputs": stim["inputs"]})
    before = path.read_bytes()
    calls = []

    def fail_in_backward(f, res, stimulus):
        calls.append(res.phase)
        if res.phase == "backward":
            raise KeyboardInterrupt
        return orig(f, res, stimulus)

    orig = H._write_phase
    monkeypatch.setattr(H, "_write_phase", fail_in_backward)
    with pytest.raises(KeyboardInterrupt):
        write_run(path, net, fwd, bwd, force=True, **stim)
    assert calls == ["forward", "backward"]
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["run.h5"]
    assert read_run(path).backward is None


def test_existing_file_needs_force(tmp_path):
    net, fwd, bwd, stim = _run_model("fsnn_mlp", B=1, record=False)
    path = tmp_path / "run.h5"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=r"run\.h5' already exists; pass force=True"):
        write_run(path, net, fwd, inputs=stim["inputs"])
    assert path.read_bytes() == b"precious"
    write_run(path, net, fwd, inputs=stim["inputs"], force=True)
    assert read_run(path).forward.batch == 1
    assert sorted(os.listdir(tmp_path)) == ["run.h5"]


def test_write_argument_errors(tmp_path):
    net, fwd, bwd, stim = _run_model("fsnn_mlp", B=1, record=False)
    with pytest.raises(FileNotFoundError, match="output folder .* does not exist"):
        write_run(tmp_path / "no" / "run.h5", net, fwd)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        write_run(tmp_path, net, fwd)
    with pytest.raises(TypeError, match="backward must be the backward PhaseResult"):
        write_run(tmp_path / "a.h5", net, fwd, fwd)
    other = load_model("fsnn_mlp")
    with pytest.raises(ValueError, match="computed on another network"):
        write_run(tmp_path / "a.h5", other, fwd)
    with pytest.raises(ValueError, match="grad/gate given without a backward result"):
        write_run(tmp_path / "a.h5", net, fwd, grad=stim["grad"])
    with pytest.raises(ValueError, match=r"inputs given for unknown population 'z'; known: \['x', 'l0', 'l1'\]"):
        write_run(tmp_path / "a.h5", net, fwd, inputs={"z": np.zeros((1, 3))})
    assert os.listdir(tmp_path) == []


# -- reading errors --------------------------------------------------------------------------
@pytest.fixture
def good_file(tmp_path):
    net, fwd, bwd, stim = _run_model("test_conv", B=2)
    return write_run(tmp_path / "good.h5", net, fwd, bwd, **stim)


def test_missing_file(tmp_path):
    with pytest.raises(RunFileError, match=r"run file .*nope\.h5' does not exist"):
        read_run(tmp_path / "nope.h5")


def test_not_hdf5(tmp_path):
    p = tmp_path / "text.h5"
    p.write_text("hello, I am not HDF5\n" * 50)
    with pytest.raises(RunFileError, match=r"text\.h5' is not an HDF5 file"):
        read_run(p)
    assert issubclass(RunFileError, ValueError)


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.1])
def test_truncated_file(good_file, tmp_path, keep):
    data = good_file.read_bytes()
    p = tmp_path / "cut.h5"
    p.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(RunFileError, match=r"cut\.h5'.*(truncated|corrupt)"):
        read_run(p)


def test_corrupt_bytes(good_file, tmp_path):
    data = bytearray(good_file.read_bytes())
    p = tmp_path / "bad.h5"
    data[600:5000] = b"\xff" * (5000 - 600)
    p.write_bytes(bytes(data))
    with pytest.raises(RunFileError, match=r"bad\.h5'"):
        read_run(p)


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)
    return path


def test_wrong_format(good_file):
    _edit(good_file, lambda f: f.attrs.__setitem__("format", "other-tool"))
    with pytest.raises(RunFileError, match=r"good\.h5': root attribute format is 'other-tool', "
                                           r"expected 'neurosim-run'"):
        read_run(good_file)


def test_no_format(tmp_path):
    p = tmp_path / "plain.h5"
    with h5py.File(p, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(RunFileError, match="no root attribute 'format'; not a neurosim run file"):
        read_run(p)


def test_other_schema_version(good_file):
    _edit(good_file, lambda f: f.attrs.__setitem__("schema_version", 2))
    with pytest.raises(RunFileError, match=r"schema_version 2 is not supported.*reads schema_version 1"):
        read_run(good_file)
    with pytest.raises(RunFileError, match="schema_version 2"):
        load_network(good_file)


@pytest.mark.parametrize("victim, message", [
    ("network", r"missing group /network"),
    ("network/projections", r"missing group /network/projections"),
    ("network/populations/c0", r"missing group /network/populations/c0"),
    ("network/projections/enc/weight", r"missing dataset /network/projections/enc/weight"),
    ("forward", r"missing group /forward"),
    ("forward/populations", r"missing group /forward/populations"),
    ("forward/populations/c0/counts", r"missing dataset /forward/populations/c0/counts"),
    ("forward/projections/pool/sent", r"missing dataset /forward/projections/pool/sent"),
    ("backward/populations/p0/count_neg", r"missing dataset /backward/populations/p0/count_neg"),
])
def test_missing_pieces(good_file, victim, message):
    _edit(good_file, lambda f: f.__delitem__(victim))
    with pytest.raises(RunFileError, match=r"good\.h5': " + message):
        read_run(good_file)


def test_missing_attribute_and_bad_json(good_file):
    _edit(good_file, lambda f: f["network/projections/fb"].attrs.__delitem__("delay"))
    with pytest.raises(RunFileError, match=r"missing attribute 'delay' of /network/projections/fb"):
        read_run(good_file)
    _edit(good_file, lambda f: f["network/projections/fb"].attrs.__setitem__("delay", 1))
    _edit(good_file, lambda f: f["network/populations/c0"].attrs.__setitem__("neuron", "{oops"))
    with pytest.raises(RunFileError, match=r"attribute 'neuron' of /network/populations/c0 is not valid JSON"):
        read_run(good_file)


def test_inconsistent_network(good_file):
    def bad(f):
        w = f["network/projections/fb/weight"][()]
        del f["network/projections/fb/weight"]
        f["network/projections/fb/weight"] = w[:, :1]
    _edit(good_file, bad)
    with pytest.raises(RunFileError, match="the stored network is invalid"):
        read_run(good_file)


def test_corrupt_chunk_is_detected_by_checksum(good_file):
    with h5py.File(good_file) as f:
        ds = f["forward/populations/c0/counts"]
        assert ds.fletcher32
        info = ds.id.get_chunk_info(0)
    with open(good_file, "r+b") as fh:
        fh.seek(info.byte_offset + 3)
        b = fh.read(1)
        fh.seek(info.byte_offset + 3)
        fh.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(RunFileError, match=r"good\.h5' is corrupt or truncated"):
        read_run(good_file)


def test_weighted_counts_only_for_leaky_populations(tmp_path):
    net, fwd, bwd, stim = _run_model("test_sparse", B=2, record=False)   # h leaks, o does not
    path = write_run(tmp_path / "w.h5", net, fwd, bwd, **stim)
    with h5py.File(path) as f:
        assert "weighted_counts" in f["forward/populations/h"]
        assert "weighted_counts" not in f["forward/populations/o"]
        assert "weighted_counts" not in f["backward/populations/h"]       # ternary leak is 1
    run = read_run(path)
    np.testing.assert_array_equal(run.forward.weighted_counts["h"], fwd.weighted_counts["h"])
    np.testing.assert_allclose(run.forward.rates("o"), fwd.counts["o"] / fwd.steps)
