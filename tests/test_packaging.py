"""A built wheel works like the source tree: named models, energy profiles, the CLI.

The wheel is built from a clean copy of this checkout (``pip wheel --no-deps``), installed without its
dependencies into a fresh virtualenv in a temporary folder, and run from another
temporary folder.  The dependencies (numpy, numba, ...) are not installed again: a
``.pth`` file in the new virtualenv appends the folders the test's own interpreter loads
them from.  Such a line only adds a folder to ``sys.path`` (the ``.pth`` files inside it
are not run), so an editable neurosim of the test's environment cannot leak in; every
test checks that ``neurosim.__file__`` lies in the new virtualenv.

The default test runs the commands with ``NUMBA_DISABLE_JIT=1`` (seconds); the ``slow``
one trains one jitted epoch in the installed copy (about 100 s of compilation on 2
cores) and checks where its Numba cache goes.
"""
import importlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import neurosim
from neurosim.io.model_file import SHIPPED_MODELS_DIR

ROOT = Path(__file__).resolve().parents[1]
DEPENDENCIES = ("numpy", "numba", "llvmlite", "scipy", "h5py", "click")
TRAIN = ["train", "--epochs", "1", "--max-train", "16", "--max-test", "8", "--tf", "3",
         "--tb", "4", "--batch-size", "8", "--out", "r.h5", "--force", "--json"]

pytestmark = pytest.mark.skipif(not (ROOT / "setup.cfg").is_file(),
                                reason="needs the source tree (setup.cfg) to build a wheel")


def _run(argv, **kw):
    res = subprocess.run(argv, capture_output=True, text=True, **kw)
    assert res.returncode == 0, (f"{argv} exited {res.returncode}\nstdout:\n{res.stdout}\n"
                                 f"stderr:\n{res.stderr}")
    return res


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, neurosim script, env, cwd) of a fresh virtualenv holding the built wheel."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"          # a clean copy: no stale build/ of an earlier build can leak in
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
        ".hypothesis", "runs", "*.h5"))
    wheels = tmp / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels),
          str(src)])
    (wheel,) = wheels.glob("neurosim_events-*.whl")     # distribution name (setup.cfg)
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--quiet",
          str(wheel)])
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
                .stdout.strip())
    dirs = []
    for name in DEPENDENCIES + ("sklearn",):
        try:
            mod = importlib.import_module(name)
        except ImportError:             # scikit-learn: the digits have a CSV fallback
            continue
        d = str(Path(mod.__file__).resolve().parents[1])
        if d not in dirs:
            dirs.append(d)
    (site / "zz_test_dependencies.pth").write_text("\n".join(dirs) + "\n")
    script = venv / ("Scripts/neurosim.exe" if os.name == "nt" else "bin/neurosim")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "NEUROSIM_MODELS", "NUMBA_CACHE_DIR", "VIRTUAL_ENV")}
    env.update(NUMBA_NUM_THREADS="1", PYTHONNOUSERSITE="1")
    cwd = tmp / "cwd"
    cwd.mkdir()
    return dict(python=py, script=script, env=env, cwd=cwd, venv=venv, site=site, wheel=wheel)


def test_wheel_holds_the_package_data(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    shipped = {f"neurosim/data/models/{p.name}" for p in SHIPPED_MODELS_DIR.glob("*.toml")}
    assert shipped and shipped <= names
    energy = Path(neurosim.__file__).parent / "data" / "energy"
    assert {f"neurosim/data/energy/{p.name}" for p in energy.glob("*.toml")} <= names
    assert not [n for n in names if n.endswith((".nbi", ".nbc", ".pyc"))]


def test_installed_copy_is_used_and_knows_the_models(installed):
    res = _run([str(installed["python"]), "-c",
                "import json, neurosim, neurosim.io.model_file as m; print(json.dumps("
                "[neurosim.__file__, str(m.models_dir()), m.list_models()]))"],
               env=installed["env"], cwd=installed["cwd"])
    file, mdir, names = json.loads(res.stdout)
    venv = installed["venv"].resolve()
    assert Path(file).resolve().is_relative_to(venv), file
    assert not Path(file).resolve().is_relative_to(ROOT), file
    assert Path(mdir).resolve().is_relative_to(venv), mdir
    assert names == sorted(p.stem for p in SHIPPED_MODELS_DIR.glob("*.toml"))
    res = _run([str(installed["script"]), "info", "--model", "fsnn_mlp"],
               env=installed["env"], cwd=installed["cwd"])
    assert "model 'fsnn_mlp'" in res.stdout and str(venv) in res.stdout


def test_installed_models_dir_env_still_wins(installed, tmp_path):
    shutil.copy(SHIPPED_MODELS_DIR / "fsnn_mlp.toml", tmp_path / "mine.toml")
    env = dict(installed["env"], NEUROSIM_MODELS=str(tmp_path))
    res = _run([str(installed["script"]), "info", "--model", "mine", "--json"],
               env=env, cwd=installed["cwd"])
    assert json.loads(res.stdout)["known_models"] == ["mine"]


def test_installed_copy_trains_one_epoch_without_jit(installed):
    env = dict(installed["env"], NUMBA_DISABLE_JIT="1")
    res = _run([str(installed["script"])] + TRAIN, env=env, cwd=installed["cwd"])
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["epochs"] == 1 and summary["n_train"] == 16 and summary["model"] == "fsnn_mlp"
    assert (installed["cwd"] / "r.h5").is_file()
    res = _run([str(installed["script"]), "ops", "r.h5", "--samples", "8", "--json"],
               env=env, cwd=installed["cwd"])
    assert json.loads(res.stdout)


@pytest.mark.slow
def test_installed_copy_trains_one_jitted_epoch(installed):
    """Compiles the kernels of the installed copy; its Numba cache is reused next time."""
    env = installed["env"]
    show = [str(installed["python"]), "-c",
            "import neurosim.kernels as k; print(k.CACHE_DIR)"]
    cache = Path(_run(show, env=env, cwd=installed["cwd"]).stdout.strip())
    assert cache.resolve().is_relative_to(installed["venv"].resolve()), cache
    res = _run([str(installed["script"])] + TRAIN, env=env, cwd=installed["cwd"])
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["epochs"] == 1 and summary["n_train"] == 16
    assert list(cache.rglob("*.nbi")), f"no Numba index files in {cache}"
    assert Path(_run(show, env=env, cwd=installed["cwd"]).stdout.strip()) == cache
