"""The README's first lines are the two commands that do everything; CI runs the second."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _first_block():
    text = (ROOT / "README.md").read_text()
    return re.search(r"```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()


def test_readme_starts_with_two_commands():
    lines = _first_block()
    assert len(lines) == 2
    assert lines[0].startswith("python -m pip install") and "neurosim " in lines[0]
    assert lines[1].startswith("python -m pytest")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _first_block()[1] in [l.strip() for l in ci]


def test_readme_python_example_runs():
    code = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})


# --- the README's "Using it" and "Operation counts" blocks, run in order ---------------------

import os
import shlex
import shutil
import subprocess
import sys

import pytest

#: options added to shorten the README's commands (documented in the README above the block)
_SHORT_DATA = ["--max-train", "64", "--max-test", "32"]


def _block_after(heading):
    text = (ROOT / "README.md").read_text()
    start = text.index(heading)
    body = re.search(r"```bash\n(.*?)```", text[start:], re.S).group(1)
    cmds = []
    for line in body.splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            cmds.append(argv)
    return cmds


def _set_opt(argv, name, value):
    if name in argv:
        argv[argv.index(name) + 1] = value
    else:
        argv += [name, value]


def shortened(argv):
    """A README command with the documented shortening options (``None``: the command
    cannot run here, e.g. no MPI launcher)."""
    argv = list(argv)
    prefix = []
    if argv[0] in ("mpirun", "mpiexec"):
        launcher = shutil.which(argv[0]) or shutil.which("mpiexec")
        if launcher is None:
            return None
        prefix, argv = [launcher] + argv[1:3], argv[3:]
    assert argv[0] == "neurosim", argv
    sub = argv[1:3]
    if sub[0] == "train":
        _set_opt(argv, "--epochs", "2" if "--resume" in argv else "1")
        argv += _SHORT_DATA
    elif sub == ["bench", "sparsity"]:
        _set_opt(argv, "--epochs", "1")
        _set_opt(argv, "--reps", "1")
        if "--param" not in argv:
            argv += ["--param", "v_th=1,2"]
        else:
            argv[argv.index("--param") + 1] = argv[argv.index("--param") + 1].split(",")[0] + ",2"
        argv += _SHORT_DATA
    return prefix + [sys.executable, "-m", "neurosim.cli"] + argv[1:]


def _fashion_mnist():
    from neurosim import datasets
    try:
        datasets.load("fashion-mnist")
        return True
    except datasets.DataError:
        return False


@pytest.mark.slow          # ~1-3 min (17 processes); CI runs it: .ci/run
def test_readme_using_it_runs_in_order(tmp_path):
    """The set-up command's run file exists (as after the README's first command), then
    every command of "Using it" and "Operation counts" runs in order in one folder:
    nothing refuses an output written by an earlier line, nothing reads a file that no
    earlier line wrote."""
    cmds = _block_after("## Using it") + _block_after("## Operation counts, energy and sparsity")
    assert len(cmds) >= 14
    env = dict(os.environ)
    setup = shlex.split(_first_block()[0].split("&&")[1])      # neurosim train --force
    ran, skipped = [], []
    for argv in [setup] + cmds:
        if {"fashion-mnist", "fsnn_mlp_fmnist"} & set(argv):
            if not _fashion_mnist():
                skipped.append(" ".join(argv))
                continue
        run = shortened(argv)
        if run is None:
            skipped.append(" ".join(argv))
            continue
        r = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, f"README command failed: {' '.join(argv)}\n{r.stderr[-2000:]}"
        ran.append(" ".join(argv))
    assert (tmp_path / "digits.h5").exists() and (tmp_path / "conv-run.h5").exists()
    assert not skipped or all("fashion-mnist" in s or "fmnist" in s or "mpirun" in s
                              for s in skipped), skipped
