"""Crashes, interrupts and numerical trouble lose nothing (docs/reliability.md).

The crash tests run real ``neurosim train`` processes on a tiny configuration (digits, 96
training samples, T = 5, T_b = 10, 3 epochs of 6 batches; dropout on two projections and a
norm cap so that the random generator, the momentum buffers and the raw weights all have
to survive a resume) and stop them at exact points with the test hook
``NEUROSIM_TEST_PAUSE`` (:mod:`neurosim._testhooks`): the process pauses at the point and
writes a marker file, the test kills or signals it, then ``--resume`` must finish with
exactly the weights, metrics and op counts of an uninterrupted run.
"""
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import h5py
import numpy as np
import pytest

from neurosim.io import RunFileError, atomic
from neurosim.io import runfile as H
from neurosim.io.model_file import models_dir
from neurosim.training import health
from neurosim.training.checkpoint import load_checkpoint
from neurosim.training.trainer import (CheckpointError, ResumeError, TrainingError,
                                       TrainingInterrupted, train)

ARGS = ["--epochs", "3", "--max-train", "96", "--max-test", "32", "--tf", "5", "--tb", "10",
        "--batch-size", "16", "--seed", "2"]
N_BATCHES = 6

MODEL = (models_dir() / "fsnn_mlp.toml").read_text().replace(
    "milestones = [20, 27]", "milestones = [2]\ndropout = { F = 0.2, W1 = 0.1 }\n"
                             "norm_cap = { B = 0.5 }")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("crash")
    (d / "model.toml").write_text(MODEL)
    return d


def _env(**extra):
    env = dict(os.environ)
    env.pop("NEUROSIM_TEST_PAUSE", None)
    env.update(extra)
    return env


def _cmd(out, *more):
    return [sys.executable, "-m", "neurosim.cli", "train", "--model", "model.toml",
            "--out", str(out), *ARGS, *more]


def _run(work, out, *more, env=None, timeout=240):
    return subprocess.run(_cmd(out, *more), cwd=work, env=env or _env(), capture_output=True,
                          text=True, timeout=timeout)


def _start_paused(work, out, point, k, *more):
    """Start a training process that pauses at the k-th ``point``; wait for the pause."""
    marker = work / f"{out}.{point}.{k}.marker"
    for p in (marker, marker.with_name(marker.name + ".go")):
        if p.exists():
            p.unlink()
    proc = subprocess.Popen(_cmd(out, *more), cwd=work, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=_env(NEUROSIM_TEST_PAUSE=f"{point}:{k}:{marker}"))
    t_end = time.monotonic() + 240
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"process ended before pausing: {proc.communicate()}")
        assert time.monotonic() < t_end, "the process never reached the pause point"
        time.sleep(0.02)
    return proc, marker


def _state(path):
    """Everything a run's result consists of: datasets of /network and /training (history
    included, wall times excluded) and the /training counters and generator state."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and not name.endswith("wall_s"):
                out[name] = obj[()]
        f["network"].visititems(lambda n, o: visit("network/" + n, o))
        f["training"].visititems(lambda n, o: visit("training/" + n, o))
        for k in ("epoch", "iteration", "finished", "rng", "config"):
            out["attr/" + k] = f["training"].attrs[k]
    return out


def _assert_same(a, b):
    assert set(a) == set(b), set(a) ^ set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _assert_complete_or_absent(path, epoch=None):
    """The output path never shows a half-written file."""
    if not path.exists():
        assert epoch is None, f"{path} should hold the checkpoint of epoch {epoch}"
        return
    _, st = load_checkpoint(path)           # complete and consistent, or this raises
    if epoch is not None:
        assert st["epoch"] == epoch


def _temps(work, out):
    return sorted(p.name for p in work.iterdir() if p.name.startswith(f".{out}.tmp"))


@pytest.fixture(scope="module")
def reference(work):
    """An uninterrupted run, watched by a thread that opens the output whenever it exists:
    every version it ever sees must be a complete, readable checkpoint."""
    out = work / "ref.h5"
    seen, errors, done = set(), [], threading.Event()

    def watch():
        while not done.is_set():
            if out.exists():
                try:
                    seen.add(int(load_checkpoint(out)[1]["epoch"]))
                except FileNotFoundError:
                    pass
                except Exception as e:            # noqa: BLE001 - recorded, asserted below
                    errors.append(repr(e))
            time.sleep(0.01)

    t = threading.Thread(target=watch)
    t.start()
    try:
        r = _run(work, "ref.h5")
    finally:
        done.set()
        t.join()
    assert r.returncode == 0, r.stderr
    assert errors == [] and seen and seen <= {1, 2, 3}, (errors, seen)
    return _state(out)


# -- SIGKILL at exact points ---------------------------------------------------------------
@pytest.mark.parametrize("point,k,every,on_disk", [
    pytest.param("batch", N_BATCHES + 3, False, 1, id="mid-epoch"),   # resume repeats epoch 2
    pytest.param("h5-rename", 2, False, 1, id="before-rename"),  # epoch 2's file complete
    # the same mid-epoch kill with a checkpoint after every batch: resume mid-epoch
    pytest.param("batch", N_BATCHES + 3, True, 1, id="mid-epoch-with-batch-checkpoints",
                 marks=pytest.mark.slow),
    pytest.param("h5-fill", 1, False, None, id="during-fill",   # first file half-written
                 marks=pytest.mark.slow),
])
def test_sigkill_then_resume_is_identical(work, reference, point, k, every, on_disk):
    out = f"kill-{point}-{k}-{every}.h5"
    more = ("--checkpoint-every", "1e-9") if every else ()
    proc, marker = _start_paused(work, out, point, k, *more)
    _assert_complete_or_absent(work / out, None if every else on_disk)
    proc.kill()
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    if every:          # the last checkpoint is the one after batch 2 of epoch 2
        _, st = load_checkpoint(work / out)
        assert (st["epoch"], st["progress"]["batch"]) == (1, 2)
    else:
        _assert_complete_or_absent(work / out, on_disk)
    if point.startswith("h5"):
        assert len(_temps(work, out)) == 1       # the killed writer's temporary file
    if on_disk is None:
        r = _run(work, out, "--resume")
        assert r.returncode == 2 and "does not exist; start without --resume" in r.stderr
        r = _run(work, out)                      # nothing was lost: start again
    else:
        r = _run(work, out, "--resume")
    assert r.returncode == 0, r.stderr
    if point.startswith("h5"):
        assert "a temporary file left by an interrupted write" in r.stderr
    assert _temps(work, out) == []
    _assert_same(reference, _state(work / out))


# -- SIGINT / SIGTERM: stop cleanly with a checkpoint ----------------------------------------
@pytest.mark.parametrize("sig,code", [
    pytest.param(signal.SIGINT, 130, id="SIGINT"),
    pytest.param(signal.SIGTERM, 143, id="SIGTERM", marks=pytest.mark.slow)])
def test_signal_writes_checkpoint_and_resume_is_identical(work, reference, sig, code):
    out = f"sig-{int(sig)}.h5"
    proc, marker = _start_paused(work, out, "batch", N_BATCHES + 2)   # epoch 2, batch 2
    proc.send_signal(sig)
    marker.with_name(marker.name + ".go").write_text("")
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == code, stderr
    name = signal.Signals(sig).name
    assert (f"interrupted by {name}: stopped after batch 2/{N_BATCHES} of epoch 2, checkpoint written to "
            f"'{out}'; continue with: neurosim train --out {out} --resume") in stderr
    assert "Traceback" not in stderr
    _, st = load_checkpoint(work / out)
    assert st["epoch"] == 1 and not st["finished"]
    assert (st["progress"]["batch"], st["progress"]["n_batches"]) == (2, N_BATCHES)
    r = _run(work, out, "--resume")
    assert r.returncode == 0, r.stderr
    _assert_same(reference, _state(work / out))


def test_signal_inside_a_phase_abandons_the_batch_and_resume_is_identical(work, reference):
    """SIGINT inside a phase (here: the backward phase of epoch 2's batch 3, the 19th phase:
    13 in epoch 1 with its test pass) abandons that batch before its update, rewinds the
    generator (dropout masks) and checkpoints after batch 2; ``--resume`` runs batch 3
    again and ends bit-identical to the uninterrupted run.  (That the kernel itself stops
    within a step is tested on phases of 10^8 steps in tests/test_interrupt.py.)"""
    out = "sig-phase.h5"
    proc, marker = _start_paused(work, out, "phase", 19)
    proc.send_signal(signal.SIGINT)
    marker.with_name(marker.name + ".go").write_text("")
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 130, stderr
    assert (f"interrupted by SIGINT: stopped after batch 2/{N_BATCHES} of epoch 2, checkpoint "
            f"written to '{out}'; continue with: neurosim train --out {out} --resume") in stderr
    assert "Traceback" not in stderr
    _, st = load_checkpoint(work / out)
    assert st["epoch"] == 1 and st["iteration"] == N_BATCHES + 2
    assert (st["progress"]["batch"], st["progress"]["n_batches"]) == (2, N_BATCHES)
    r = _run(work, out, "--resume")
    assert r.returncode == 0, r.stderr
    _assert_same(reference, _state(work / out))


def test_signal_in_the_first_phase_writes_nothing(work):
    """Stopped inside the very first phase of a fresh run: nothing to keep, no file."""
    out = "sig-first.h5"
    proc, marker = _start_paused(work, out, "phase", 1)
    proc.send_signal(signal.SIGTERM)
    marker.with_name(marker.name + ".go").write_text("")
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == ("[neurosim] interrupted by SIGTERM: stopped in "
                                               "the first batch, nothing was written")
    assert not (work / out).exists() and _temps(work, out) == []
    assert not atomic.lock_path(work / out).exists()


def test_sigint_in_process_raises_training_interrupted(tmp_path, monkeypatch):
    """The library raises TrainingInterrupted (a KeyboardInterrupt) after checkpointing."""
    calls = []

    def progress(d):
        calls.append(d["batch"])
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)    # delivered to our handler, not pytest's

    with pytest.raises(TrainingInterrupted) as ei:
        train(out=tmp_path / "i.h5", overrides=dict(epochs=2, T=4, T_b=6, batch_size=16),
              max_train=64, max_test=16, progress=progress)
    assert ei.value.exit_code == 130 and (ei.value.epoch, ei.value.batch) == (0, 2)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # restored
    _, st = load_checkpoint(tmp_path / "i.h5")
    assert st["progress"]["batch"] == 2


# -- numerical health -----------------------------------------------------------------------
def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_divergence_stops_with_the_last_good_checkpoint(tmp_path):
    """A learning rate of 1e299 from epoch 2 on (milestone with a huge gamma) overflows the
    weights: training stops in epoch 2, batch 1, naming the parameter, and the file is
    byte for byte the checkpoint of epoch 1."""
    out = tmp_path / "d.h5"
    seen = {}

    def progress(d):
        if d["epoch"] == 2 and "sha" not in seen:
            seen["sha"] = _sha(out)

    kw = dict(overrides=dict(epochs=3, T=5, T_b=10, batch_size=16, milestones=[1], gamma=1e300),
              max_train=64, max_test=16)
    with pytest.raises(health.NumericalError) as ei, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        train(out=out, progress=progress, **kw)
    msg = str(ei.value)
    assert ("updated parameter 'F.weight' exceeds the largest float32" in msg
            and "at epoch 2, batch 1/4 (iteration 5): training diverged and was stopped; "
            f"{str(out)!r} keeps the last good checkpoint (after epoch 1); lower the learning "
            "rate" in msg), msg
    assert ei.value.name == "F.weight" and ei.value.what == "updated parameter"
    assert "sha" not in seen                       # stopped before any epoch-2 progress report
    _, st = load_checkpoint(out)
    assert st["epoch"] == 1
    # the file is exactly epoch 1 of the same run (deterministic): compare with a 1-epoch run
    ref = tmp_path / "ref.h5"
    train(out=ref, **dict(kw, overrides=dict(kw["overrides"], epochs=1)))
    a, b = _state(out), _state(ref)
    a.pop("attr/config"), b.pop("attr/config"), a.pop("attr/finished"), b.pop("attr/finished")
    _assert_same(a, b)


@pytest.mark.parametrize("victim", ["W1.weight", "F.bias"])
def test_nan_gradient_is_named(tmp_path, monkeypatch, victim):
    """A NaN injected into one gradient in epoch 2 stops training before the update."""
    import neurosim.training.spide as S
    orig = S.local_gradients
    calls = []

    def poisoned(*a, **k):
        grads, ops = orig(*a, **k)
        calls.append(1)
        if len(calls) == 6:                       # epoch 2 (4 batches per epoch), batch 2
            grads[victim] = grads[victim].copy()
            grads[victim].flat[3] = np.nan
        return grads, ops

    monkeypatch.setattr(S, "local_gradients", poisoned)
    out = tmp_path / "g.h5"
    with pytest.raises(health.NumericalError) as ei:
        train(out=out, overrides=dict(epochs=3, T=5, T_b=10, batch_size=16), max_train=64,
              max_test=16)
    assert str(ei.value).startswith(f"gradient {victim!r} is not finite (1 NaN of ")
    assert "at epoch 2, batch 2/4 (iteration 6)" in str(ei.value)
    assert load_checkpoint(out)[1]["epoch"] == 1


def test_nan_before_the_first_checkpoint_leaves_nothing(tmp_path, monkeypatch):
    import neurosim.training.spide as S
    monkeypatch.setattr(S, "local_gradients", lambda *a, **k: (
        {"W1.weight": np.full((128, 64), np.inf)}, {}))
    with pytest.raises(health.NumericalError, match=r"gradient 'W1.weight' is not finite "
                       r"\(8192 inf of 8192 values\) at epoch 1, batch 1/4 \(iteration 1\).*"
                       r"no checkpoint was written \('.*n.h5' is unchanged\)"):
        train(out=tmp_path / "n.h5", overrides=dict(epochs=1, T=5, T_b=10, batch_size=16),
              max_train=64, max_test=16)
    assert os.listdir(tmp_path) == []


RUNAWAY = (models_dir() / "fsnn_mlp.toml").read_text().replace('bias = true\ninit = "kaiming_normal"\n\n[[projections]]\nname = "W1"',
                        'bias = true\nbias_value = 50.0\ninit = "zeros"\n\n[[projections]]\n'
                        'name = "W1"', 1)


def test_runaway_activity_warns_once_per_epoch(tmp_path):
    """An input map with bias 50 makes every l0 neuron fire at every step."""
    assert "bias_value = 50.0" in RUNAWAY
    (tmp_path / "m.toml").write_text(RUNAWAY)
    with pytest.warns(health.RunawayActivityWarning) as rec:
        train(tmp_path / "m.toml", out=tmp_path / "w.h5", max_train=32, max_test=16,
              overrides=dict(epochs=2, T=5, T_b=10, batch_size=16))
    msgs = [str(w.message) for w in rec if issubclass(w.category, health.RunawayActivityWarning)]
    assert msgs == [f"runaway activity in population 'l0': 100.0 % of its neurons fired at every "
                    f"one of the T = 5 forward steps in epoch {e} (its rates carry no information "
                    "and SPIDE's mask stops its gradients); lower the learning rate or the input "
                    "scale, or raise its threshold v_th" for e in (1, 2)]


def test_runaway_warning_on_the_command_line(tmp_path):
    from click.testing import CliRunner
    from neurosim.cli import main
    (tmp_path / "m.toml").write_text(RUNAWAY)
    r = CliRunner().invoke(main, ["train", "--model", str(tmp_path / "m.toml"), "--out",
                                  str(tmp_path / "c.h5"), "--epochs", "1", "--max-train", "32",
                                  "--max-test", "16", "--tf", "5", "--tb", "10"])
    assert r.exit_code == 0, r.output
    assert "[neurosim] warning: runaway activity in population 'l0'" in r.output


def test_no_warning_for_a_healthy_run(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", health.RunawayActivityWarning)
        train(out=tmp_path / "h.h5", overrides=dict(epochs=1, T=5, T_b=10), max_train=32,
              max_test=16)


# -- checkpoint writes --------------------------------------------------------------------------
def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    """A full disk while writing epoch 2's checkpoint: a clear runtime error, and the file is
    still epoch 1's checkpoint, byte for byte; no temporary file is left."""
    out = tmp_path / "f.h5"
    real = atomic.commit
    n = []

    def full_disk(tmp, path, force=False):
        n.append(1)
        if len(n) == 2:
            raise OSError(28, "No space left on device")
        return real(tmp, path, force)

    seen = {}

    def progress(d):
        if d["epoch"] == 2:
            seen.setdefault("sha", _sha(out))

    monkeypatch.setattr(atomic, "commit", full_disk)
    with pytest.raises(CheckpointError, match=r"could not write the checkpoint after epoch 2 to "
                       r"'.*f.h5' \(No space left on device\); the previous checkpoint \(after "
                       r"epoch 1\) is intact; fix the cause .* resume the run"):
        train(out=out, overrides=dict(epochs=3, T=4, T_b=6, batch_size=16), max_train=32,
              max_test=16, progress=progress)
    assert _sha(out) == seen["sha"] and load_checkpoint(out)[1]["epoch"] == 1
    assert os.listdir(tmp_path) == ["f.h5"]


def test_stale_temporary_files(tmp_path):
    """Only temporary files of dead processes on this host are removed."""
    target = tmp_path / "r.h5"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = tmp_path / (atomic.temp_prefix(target) + "x")
    gone = tmp_path / (atomic.temp_prefix(target, pid=dead.pid) + "y")
    live = tmp_path / (atomic.temp_prefix(target, pid=1) + "z")        # init is alive
    other = tmp_path / ".r.h5.tmp-otherhost-1-w"
    for p in (mine, gone, live, other):
        p.write_bytes(b"partial")
    assert atomic.stale_temps(target) == [gone]
    assert atomic.remove_stale_temps(target) == [gone]
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in (mine, live, other))


def test_atomic_open(tmp_path):
    p = tmp_path / "t.csv"
    atomic.atomic_write_text(p, "a,b\n")
    assert p.read_text() == "a,b\n"
    with pytest.raises(FileExistsError, match="already exists; pass force=True"):
        atomic.atomic_write_text(p, "c\n")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic.atomic_open(p, "w", force=True) as fh:
            fh.write("half")
            raise RuntimeError("boom")
    assert p.read_text() == "a,b\n" and os.listdir(tmp_path) == ["t.csv"]
    atomic.atomic_write_bytes(p, b"new", force=True)
    assert p.read_bytes() == b"new"
    with pytest.raises(IsADirectoryError):
        atomic.atomic_write_bytes(tmp_path, b"x")
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        atomic.atomic_write_bytes(tmp_path / "no" / "x.bin", b"x")


def test_save_events_is_atomic_and_needs_force(tmp_path):
    from neurosim.datasets import events as E
    ev = E.make_events([1, 2], [0, 5], [True, False], [0, 1])
    p = E.save_events(tmp_path / "e.npz", ev, (4, 4, 2))
    with pytest.raises(FileExistsError):
        E.save_events(p, ev, (4, 4, 2))
    E.save_events(p, ev[:1], (4, 4, 2), force=True)
    assert len(E.load_events(p)[0]) == 1 and os.listdir(tmp_path) == ["e.npz"]


def test_unwritable_output_folder_fails_before_training(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can write to read-only folders")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="cannot create files in the output folder"):
            train(out=ro / "x.h5", overrides=dict(epochs=1))
    finally:
        ro.chmod(0o700)


# -- resume refuses to change the run ------------------------------------------------------------
def test_resume_refuses_changed_settings(tmp_path):
    out = tmp_path / "r.h5"
    train(out=out, overrides=dict(epochs=1, T=4, T_b=6), max_train=32, max_test=16, seed=1)
    for kw, option, given, stored in (
            (dict(overrides=dict(lr=0.5)), "lr", 0.5, 0.1),
            (dict(overrides=dict(T=5)), "T", 5, 4),
            (dict(seed=2), "seed", 2, 1),
            (dict(max_train=40), "max_train", 40, 32),
            (dict(dataset="mnist"), "dataset", "mnist", "digits"),
            (dict(model="fsnn_mlp_fmnist"), "model", "fsnn_mlp_fmnist", "fsnn_mlp")):
        with pytest.raises(ResumeError, match=f"resume: {option} {given!r} differs from the "
                           f"run's {stored!r}") as ei:
            train(out=out, resume=True, **kw)
        e = ei.value            # structured: the library never speaks the CLI's option names
        assert (e.problem, e.option, e.given, e.stored, e.path) == ("differs", option, given,
                                                                    stored, out)
        assert "--" not in str(e)
    with pytest.raises(ResumeError, match="epochs 0 is fewer than the 1 epochs already done") as ei:
        train(out=out, resume=True, overrides=dict(epochs=0))
    assert (ei.value.problem, ei.value.given, ei.value.stored) == ("fewer_epochs", 0, 1)
    s = train(out=out, resume=True, model="fsnn_mlp", seed=1, overrides=dict(epochs=2, T=4))
    assert s["epochs"] == 2 and s["n_train"] == 32      # stored --max-train reused


def test_checkpoint_of_another_kind_or_damaged(tmp_path):
    out = tmp_path / "c.h5"
    train(out=out, overrides=dict(epochs=1, T=4, T_b=6), max_train=32, max_test=16)
    with h5py.File(out, "a") as f:
        del f["training/optimizer/W1.weight"]
    with pytest.raises(RunFileError, match=r"/training/optimizer holds momentum buffers for "
                       r"\['B.weight', 'F.bias', 'F.weight', 'W1.bias', 'readout.bias', "
                       r"'readout.weight'\], expected one per parameter"):
        load_checkpoint(out)
    net = H.load_network(out)
    import neurosim as ns
    fwd = ns.run_forward(net, 3, inputs={"x": np.zeros((1, 64))})
    H.write_run(tmp_path / "sim.h5", net, fwd)
    with pytest.raises(RunFileError, match="has no /training group: it is not a training run "
                       "file"):
        load_checkpoint(tmp_path / "sim.h5")
