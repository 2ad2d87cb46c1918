"""Shared machines, concurrent runs and full disks (docs/reliability.md, issue 29).

* one run owns an output at a time (an OS lock on ``<out>.lock``): tested with two real
  processes and, for every command, with the lock held in the test while the command runs;
* a write that fails for lack of space ends with one line and exit 1, leaves no temporary
  file and never crashes the interpreter: tested for real on a 2 MiB tmpfs (needs root and
  ``mount``; skipped with the reason elsewhere), in subprocesses so that a crash of the
  HDF5 library cannot take pytest down.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from neurosim.cli import main
from neurosim.io import atomic
from neurosim.io.model_file import models_dir

ROOT = Path(__file__).resolve().parents[1]
SIM = ["simulate", "--model", "fsnn_mlp", "--input", "digits", "--n-samples", "2",
       "--steps", "3"]


def _env(**extra):
    env = dict(os.environ)
    env.pop("NEUROSIM_TEST_PAUSE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(extra)
    return env


def _wait_for(path, proc, timeout=300):
    t0 = time.monotonic()
    while not Path(path).exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process ended early ({proc.returncode}): {err[-3000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.05)


# ======================================================================================
# one run per output
# ======================================================================================
HOLDER = """
import sys, time
from pathlib import Path
from neurosim.io import atomic
with atomic.output_lock(sys.argv[1], command="holder --out x"):
    Path(sys.argv[2]).touch()
    while not Path(sys.argv[2] + ".go").exists():
        time.sleep(0.02)
"""


def _holder(tmp_path, out):
    marker = tmp_path / "held"
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), str(marker)], env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(marker, p)
    return p, marker


def test_a_second_process_is_refused_with_the_owner_named(tmp_path):
    out = tmp_path / "run.h5"
    p, marker = _holder(tmp_path, out)
    try:
        with pytest.raises(atomic.OutputLockedError) as e:
            with atomic.output_lock(out):
                pass
        msg = str(e.value)
        assert f"pid {p.pid} on host " in msg and "holder --out x" in msg
        assert "started 20" in msg and "choose another output path" in msg
        assert e.value.owner["pid"] == p.pid
    finally:
        (tmp_path / "held.go").touch()
        p.wait(60)
    assert p.returncode == 0
    assert not atomic.lock_path(out).exists()          # removed by its owner at the end
    with atomic.output_lock(out) as lp:                # free again
        assert json.loads(lp.read_text())["pid"] == os.getpid()
    assert not lp.exists()


def test_a_killed_owner_releases_the_output(tmp_path):
    out = tmp_path / "run.h5"
    p, _ = _holder(tmp_path, out)
    p.send_signal(signal.SIGKILL)
    p.wait(60)
    assert atomic.lock_path(out).exists()              # left behind by the killed process ...
    with atomic.output_lock(out):                      # ... and reused: the OS freed the lock
        pass


def test_lock_errors_of_the_destination(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with atomic.output_lock(tmp_path / "no" / "r.h5"):
            pass
    with pytest.raises(IsADirectoryError, match="is a directory"):
        with atomic.output_lock(tmp_path):
            pass


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("owned")
    r = CliRunner().invoke(main, SIM + ["--record", "--out", str(d / "s.h5")])
    assert r.exit_code == 0, r.output
    return d / "s.h5"


def _refused(r, out):
    assert r.exit_code == 2, r.output
    assert f"Error: output {str(out)!r} is being written by another neurosim process (pid " \
           f"{os.getpid()}" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 or "[neurosim]" in r.output


@pytest.mark.parametrize("command", ["simulate", "export-nir", "export-nir-data", "ops --plot"])
def test_every_writing_command_takes_the_lock(tmp_path, sim_file, command):
    if command == "simulate":
        out = tmp_path / "o.h5"
        args = SIM + ["--out", str(out)]
    elif command == "export-nir":
        pytest.importorskip("nir")
        out = tmp_path / "o.nir"
        args = ["export-nir", "--model", "fsnn_mlp", "--out", str(out)]
    elif command == "export-nir-data":
        if not hasattr(pytest.importorskip("nir"), "NIRGraphData"):
            pytest.skip("the installed nir has no data classes (nir >= 1.0.8)")
        out = tmp_path / "o.nir"
        args = ["export-nir-data", str(sim_file), "--out", str(out)]
    else:
        pytest.importorskip("matplotlib")
        (tmp_path / "figs").mkdir()
        out = tmp_path / "figs" / ".neurosim-plot"
        args = ["ops", str(sim_file), "--plot", str(tmp_path / "figs")]
    with atomic.output_lock(out):                       # another owner (a second descriptor)
        r = CliRunner().invoke(main, args)
    _refused(r, out)
    assert not (out.exists() and out.suffix)
    r = CliRunner().invoke(main, args)                  # free again: it works
    assert r.exit_code == 0, r.output


def test_train_holds_the_output_for_the_whole_run(tmp_path):
    """A real ``neurosim train`` paused after its 4th batch (epoch 2: one checkpoint
    written); a second train, a simulate and a --resume on the same --out are refused."""
    (tmp_path / "model.toml").write_text((models_dir() / "fsnn_mlp.toml").read_text())
    out = tmp_path / "r.h5"
    marker = tmp_path / "paused"
    args = ["--epochs", "2", "--max-train", "48", "--max-test", "16", "--tf", "4", "--tb",
            "6", "--batch-size", "16"]
    p = subprocess.Popen([sys.executable, "-m", "neurosim.cli", "train", "--model",
                          "model.toml", "--out", str(out), *args], cwd=tmp_path,
                         env=_env(NEUROSIM_TEST_PAUSE=f"batch:4:{marker}"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(marker, p)
        assert out.exists()                              # epoch 1's checkpoint
        for more in (["--force"], ["--resume"]):
            r = CliRunner().invoke(main, ["train", "--model", str(tmp_path / "model.toml"),
                                          "--out", str(out), *args, *more])
            assert r.exit_code == 2, r.output
            assert f"is being written by another neurosim process (pid {p.pid} on host" in r.output
            assert "neurosim train --model model.toml --out" in r.output      # its command
        r = CliRunner().invoke(main, SIM + ["--out", str(out), "--force"])
        assert r.exit_code == 2 and f"(pid {p.pid} on host" in r.output, r.output
    finally:
        Path(str(marker) + ".go").touch()
        _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["model.toml", "paused", "paused.go", "r.h5"]


# ======================================================================================
# full disks
# ======================================================================================
@pytest.fixture
def tiny_fs(tmp_path):
    """A 2 MiB tmpfs (CI runs as root); skipped with the reason elsewhere."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("the real disk-full test mounts a tmpfs: needs root (CI runs as root)")
    d = tmp_path / "tiny"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {(r.stderr or r.stdout).strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def _cli(args, cwd, **env):
    return subprocess.run([sys.executable, "-m", "neurosim.cli", *args], cwd=cwd,
                          env=_env(**env), capture_output=True, text=True, timeout=600)


def _one_line_enospc(r):
    assert r.returncode == 1, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr and "h5py" not in r.stderr, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith("Error")]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("Error: runtime failure: ") and "space" in lines[0], lines[0]


def _fill(fs, left=96 * 1024):
    (fs / "filler").write_bytes(b"\0" * (2 * 2 ** 20 - left))


def test_simulate_on_a_full_disk(tiny_fs):
    """The run file (about 380 KiB) does not fit in the 96 KiB left: one line, exit 1,
    nothing left behind."""
    _fill(tiny_fs)
    r = _cli(SIM[:-4] + ["--n-samples", "60", "--steps", "40", "--record", "--out", "s.h5"],
             tiny_fs)
    _one_line_enospc(r)
    assert "not enough space to write 's.h5'" in r.stderr
    assert os.listdir(tiny_fs) == ["filler"]


WRITE_WITHOUT_CHECK = """
import sys
import numpy as np
from neurosim.io import atomic
from neurosim.io.runfile import atomic_h5, write_dataset
atomic.free_bytes = lambda folder: 1 << 40       # the space check is fooled: os.write fails
def fill(f):
    write_dataset(f, "x", np.random.default_rng(0).random(500_000))
try:
    atomic_h5(sys.argv[1], fill)
except OSError as e:
    print("OSError", e.errno, e)
"""


def test_a_failing_write_is_one_oserror_and_no_temp(tiny_fs):
    """Space that disappears between the check and the write (another process filled the
    disk): ``os.write`` fails with ENOSPC; before, HDF5 failed inside ``flush``, printed
    tracebacks, renamed a truncated file into place and crashed at exit (139)."""
    r = subprocess.run([sys.executable, "-c", WRITE_WITHOUT_CHECK, str(tiny_fs / "x.h5")],
                       env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert r.stdout.startswith("OSError 28 [Errno 28] writing ") and "destination is unchanged" \
        in r.stdout, r.stdout
    assert r.stderr == ""
    assert os.listdir(tiny_fs) == []


def test_training_checkpoint_on_a_full_disk(tiny_fs):
    """A checkpoint that does not fit: one line, exit 1, no temporary file."""
    _fill(tiny_fs)
    model = tiny_fs.parent / "model.toml"
    model.write_text((models_dir() / "fsnn_mlp.toml").read_text())
    r = _cli(["train", "--model", str(model), "--out", "t.h5", "--epochs", "1",
              "--max-train", "32", "--max-test", "16", "--tf", "3", "--tb", "4"], tiny_fs)
    _one_line_enospc(r)
    assert "could not write the checkpoint after epoch 1 to 't.h5'" in r.stderr
    assert sorted(os.listdir(tiny_fs)) == ["filler"]


def test_free_space_check_message(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "free_bytes", lambda folder: 3 * 2 ** 20)
    with pytest.raises(OSError, match=r"not enough space to write .*x\.h5': it needs 4\.0 MiB, "
                                      r"the file system of .* has 3\.0 MiB free"):
        atomic.check_free_space(tmp_path / "x.h5", 4 * 2 ** 20)
    atomic.check_free_space(tmp_path / "x.h5", 1 * 2 ** 20)


# ======================================================================================
# section 6 of issue 29
# ======================================================================================
def test_ops_names_the_batch_of_a_mid_epoch_checkpoint(tmp_path):
    from neurosim.training.trainer import TrainingInterrupted, train
    calls = []

    def progress(d):
        calls.append(d["batch"])
        if len(calls) == 6:                        # batch 2/4 of epoch 2
            os.kill(os.getpid(), signal.SIGINT)    # our handler: a mid-epoch checkpoint

    with pytest.raises(TrainingInterrupted):
        train(out=tmp_path / "m.h5", overrides=dict(epochs=2, T=4, T_b=6, batch_size=16),
              max_train=64, max_test=16, progress=progress)
    r = CliRunner().invoke(main, ["ops", str(tmp_path / "m.h5"), "--samples", "4",
                                  "--no-energy"])
    assert r.exit_code == 0, r.output
    assert "network in epoch 2 after batch 2/4 (a mid-epoch checkpoint)" in r.output, r.output
    assert "after epoch 1" not in r.output


def _sim_file(tmp_path, name="n.h5"):
    r = CliRunner().invoke(main, SIM + ["--out", str(tmp_path / name)])
    assert r.exit_code == 0, r.output
    return tmp_path / name


def _strip_checksums(src, dst, edit=None):
    """Copy a run file with h5py, every dataset rewritten without Fletcher-32 (as a user
    editing it with h5py would), then apply ``edit(f)``; the attribute digest is updated
    so that only the network checksum can notice."""
    import h5py
    from neurosim.io import runfile as R
    with h5py.File(src, "r") as a, h5py.File(dst, "w") as b:
        for k, v in a.attrs.items():
            b.attrs[k] = v

        def copy(name, obj):
            if isinstance(obj, h5py.Group):
                g = b.require_group(name)
            else:
                g = b.create_dataset(name, data=obj[()])
            for k, v in obj.attrs.items():
                g.attrs[k] = v
        a.visititems(copy)
        if edit is not None:
            edit(b)
        b.attrs[R.ATTRS_DIGEST] = np.bytes_(R._attrs_digest(b).encode())


@pytest.mark.parametrize("edit", ["weight", "bias"])
def test_an_edited_network_is_refused(tmp_path, edit):
    import h5py
    from neurosim.io import RunFileError, load_network
    src = _sim_file(tmp_path)
    with h5py.File(src, "r") as f:
        projs = f["network/projections"]
        withbias = [n for n in projs if "bias" in projs[n]]
        assert withbias, "the test needs a projection with a bias"
        assert all(projs[n]["weight"].fletcher32 for n in projs if "weight" in projs[n])

    def change(f):
        h = f["network/projections"][withbias[0]]
        if edit == "weight":
            w = h["weight"]
            w[(0,) * w.ndim] = w[(0,) * w.ndim] + 0.5
        else:
            del h["bias"]
    dst = tmp_path / "edited.h5"
    _strip_checksums(src, dst, change)
    with pytest.raises(RunFileError, match=r"its network \(weights, biases or connectivity "
                                           r"under /network\) was changed or partly deleted"):
        load_network(dst)
    r = CliRunner().invoke(main, SIM[:2] + [str(dst)] + SIM[3:] + ["--out", str(tmp_path / "o.h5")])
    assert r.exit_code == 2 and "network checksum mismatch" in r.output, r.output
    _strip_checksums(src, tmp_path / "same.h5")      # unchanged but without checksums: fine
    load_network(tmp_path / "same.h5")


def test_an_old_file_without_network_checksum_is_read_with_a_note(tmp_path):
    from neurosim.io import load_network
    from neurosim.io import runfile as R
    src = _sim_file(tmp_path)
    _strip_checksums(src, tmp_path / "old.h5",
                     lambda f: f["network"].attrs.__delitem__(R.NETWORK_DIGEST))
    with pytest.warns(R.UncheckedNetworkWarning, match="has no network checksum"):
        net = load_network(tmp_path / "old.h5")
    assert set(net.projections) == set(load_network(src).projections)


def test_float32_inputs_beyond_the_dtype_are_refused(tmp_path):
    x = np.full((2, 64), 1e300)
    np.save(tmp_path / "big.npy", x)
    r = CliRunner().invoke(main, ["simulate", "--model", "fsnn_mlp", "--input",
                                  str(tmp_path / "big.npy"), "--steps", "3", "--out",
                                  str(tmp_path / "b.h5")])
    assert r.exit_code == 2, r.output
    assert "Error: the input current into population 'l0' reaches 4.04e+300, beyond the " \
           "largest float32 (3.4e+38)" in r.output
    assert not (tmp_path / "b.h5").exists()
    np.save(tmp_path / "ok.npy", np.full((2, 64), 1e30))   # large but representable: runs
    r = CliRunner().invoke(main, ["simulate", "--model", "fsnn_mlp", "--input",
                                  str(tmp_path / "ok.npy"), "--steps", "3"])
    assert r.exit_code in (0, 2) and "beyond the largest" not in r.output


@pytest.mark.parametrize("cmd", ["simulate", "train"])
def test_a_seed_beyond_int64_is_refused_up_front(tmp_path, cmd, monkeypatch):
    from neurosim import simulate as S
    monkeypatch.setattr(S, "run_forward", lambda *a, **k: pytest.fail("work started"))
    args = (SIM if cmd == "simulate" else ["train", "--epochs", "1"]) + \
        ["--seed", str(2 ** 64), "--out", str(tmp_path / "s.h5")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "Invalid value for '--seed'" in r.output
    assert "0<=x<=9223372036854775807" in r.output
    with pytest.raises(ValueError, match=r"seed must be <= 9223372036854775807, got 18446"):
        S.simulate("fsnn_mlp", "digits", 3, seed=2 ** 64)


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["info", "--model", "fsnn_mlp"]])
def test_a_malformed_size_variable_is_one_line_even_for_help(args):
    r = subprocess.run([sys.executable, "-m", "neurosim.cli", *args], capture_output=True,
                       text=True, env=_env(NEUROSIM_MAX_MODEL_MB="abc"), timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr == ("Error: environment variable NEUROSIM_MAX_MODEL_MB='abc': expected a size "
                        "in MiB, a finite number >= 0 (e.g. NEUROSIM_MAX_MODEL_MB=512)\n")


def test_a_missing_models_folder_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROSIM_MODELS", str(tmp_path / "nope"))
    r = CliRunner().invoke(main, ["info", "--model", "fsnn_mlp"])
    assert r.exit_code == 2
    assert f"the models folder NEUROSIM_MODELS={str(tmp_path / 'nope')!r} does not exist" \
        in r.output


def test_an_unwritable_numba_cache_dir_still_uses_a_keyed_cache(tmp_path):
    code = ("from neurosim import kernels; import numba; "
            "print(kernels.CACHE_DIR, kernels.CACHE_PERSISTENT)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=_env(NUMBA_CACHE_DIR="/proc/neurosim-unwritable"), timeout=300)
    assert r.returncode == 0, r.stderr
    from neurosim import kernels
    path, persistent = r.stdout.split()
    assert kernels.CACHE_KEY in Path(path).name and persistent == "True"


def test_no_writable_cache_folder_gives_a_private_keyed_one(monkeypatch):
    from neurosim import kernels
    monkeypatch.setattr(kernels, "_writable", lambda path: False)
    monkeypatch.setattr(kernels, "CACHE_PERSISTENT", True)
    d = kernels._choose_cache_dir(kernels.CACHE_KEY)
    assert d is not None and d.is_dir() and d.name.startswith(f"neurosim-numba-{kernels.CACHE_KEY}-")
    assert kernels.CACHE_PERSISTENT is False                # the note says: every run compiles
    d.rmdir()


def test_ops_plot_does_not_overwrite_figures_without_force(tmp_path, sim_file):
    pytest.importorskip("matplotlib")
    figs = tmp_path / "figs"
    figs.mkdir()
    (figs / "firing_rates.png").write_bytes(b"mine")
    args = ["ops", str(sim_file), "--plot", str(figs)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert f"Error: output {str(figs / 'firing_rates.png')!r} already exists; pass --force to " \
           "overwrite it" in r.output
    assert (figs / "firing_rates.png").read_bytes() == b"mine"
    assert sorted(os.listdir(figs)) == ["firing_rates.png"]       # nothing drawn
    r = CliRunner().invoke(main, args + ["--force"])
    assert r.exit_code == 0, r.output
    assert (figs / "firing_rates.png").read_bytes()[:4] == b"\x89PNG"


def test_no_cli_error_mentions_force_true(tmp_path):
    out = _sim_file(tmp_path)
    r = CliRunner().invoke(main, SIM + ["--out", str(out)])
    assert r.exit_code == 2
    assert r.output.strip().endswith(f"Error: output {str(out)!r} already exists; pass --force "
                                     "to overwrite it")
    assert "force=True" not in r.output
    with pytest.raises(FileExistsError, match="pass force=True"):    # the library's wording
        atomic.check_destination(out)


@pytest.mark.parametrize("user", [None, "ACTIVE"])
def test_omp_threads_wait_passively(user):
    """Numba's OpenMP threads sleep while they wait unless the user chose otherwise
    (the speed is measured by benchmarks/bench_contention.py, not asserted here)."""
    env = _env()
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)
    if user:
        env["OMP_WAIT_POLICY"] = user
    code = "import os, neurosim; print(os.environ.get('OMP_WAIT_POLICY'))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.stdout.strip() == (user or "PASSIVE"), r.stderr
