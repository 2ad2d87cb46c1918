"""Every bad input in the table of docs/reliability.md, run through the command line.

Each case below makes its files in an empty folder, runs one ``neurosim`` command in it
(click's CliRunner, in-process) and records the exit code and the ``Error: ...`` line the
user sees.  The table in ``docs/reliability.md`` (between the ``bad-inputs`` markers) lists
the same cases: ``test_table_lists_every_case`` checks the ids match both ways, and
``test_bad_input`` checks each row's exit code and exact message against a fresh run, so
the document and the program cannot drift apart.  ``…`` in a documented message stands for
a part that depends on the machine or on HDF5 internals (each case's ``mask``).

Regenerate the table from real runs after changing a message::

    python tests/test_bad_inputs.py --write
"""
import contextlib
import os
import re
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import h5py
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from neurosim import config                                           # noqa: E402
from neurosim.io.model_file import models_dir                        # noqa: E402

from test_datasets import (cifar_batch, idx_bytes, make_cifar10_dir,  # noqa: E402
                           make_idx_dir, py2_pickle)

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
START, END = "<!-- bad-inputs:start -->", "<!-- bad-inputs:end -->"
FSNN = (models_dir() / "fsnn_mlp.toml").read_text()
CONV = (models_dir() / "test_conv.toml").read_text()
TINY = ["--epochs", "1", "--max-train", "32", "--max-test", "16", "--tf", "3", "--tb", "4"]


@dataclass
class Case:
    id: str
    what: str                 # the bad input, for the table
    argv: list                # the neurosim command
    setup: object = None      # callable(folder, seeds) making the files
    mask: str = None          # regex of machine-dependent parts, shown as …
    patch: dict = field(default_factory=dict)   # neurosim.config attributes to set


CASES = []


def case(id, what, argv, mask=None, patch=None):
    def deco(fn):
        CASES.append(Case(id, what, argv, fn, mask, patch or {}))
        return fn
    return deco


def simple(id, what, argv, mask=None):
    CASES.append(Case(id, what, argv, None, mask))


def model(id, what, text, command="info", mask=None, patch=None):
    argv = (["info", "--model", "m.toml"] if command == "info" else
            ["train", "--model", "m.toml", "--out", "o.h5", *TINY])
    CASES.append(Case(id, what, argv, lambda d, s: (d / "m.toml").write_text(text), mask,
                      patch or {}))


def sub(text, old, new, count=1):
    assert old in text, old
    return text.replace(old, new, count)


# -- model files ---------------------------------------------------------------------------
model("model-unknown-top-key", "unknown top-level key `colour`",
      sub(FSNN, 'dtype = "float32"', 'dtype = "float32"\ncolour = "red"'))
model("model-unknown-population-key", "misspelt key `v_thresh` in a population",
      sub(FSNN, "v_th = 1.0                #", "v_thresh = 1.0            #"))
model("model-unknown-projection-key", "unknown key `weight_init` in a projection",
      sub(FSNN, 'init = "kaiming_normal"\n', 'weight_init = "kaiming_normal"\n'))
model("model-shape-2d", "population shape `[8, 16]` (only `[n]` or `[C, H, W]`)",
      sub(FSNN, "shape = [128]", "shape = [8, 16]"))
model("model-shape-mismatch", "conv output shape does not match its post population",
      sub(CONV, 'name = "p0"\nshape = [4, 4, 4]', 'name = "p0"\nshape = [4, 3, 3]'))
model("model-unknown-population", "projection from a population that does not exist",
      sub(FSNN, 'pre = "l1"', 'pre = "l2"'))
model("model-loop-without-delay", "feedback loop l0 -> l1 -> l0 with delay 0",
      sub(FSNN, "delay = 1", "delay = 0"))
model("model-threshold-zero", "threshold `v_th = 0.0`", sub(FSNN, "v_th = 1.0", "v_th = 0.0"))
model("model-threshold-negative", "ternary threshold `v_th = -0.5`",
      sub(FSNN, "ternary = { v_th = 0.5 }", "ternary = { v_th = -0.5 }"))
model("model-negative-delay", "`delay = -1`", sub(FSNN, "delay = 1", "delay = -1"))
model("model-bad-toml", "TOML syntax error", sub(FSNN, 'kind = "lif"', 'kind = "lif'))
model("model-wrong-format", "`format = \"neurosim-model/2\"`",
      sub(FSNN, '"neurosim-model/1"', '"neurosim-model/2"'))
model("model-unknown-kind", "population kind `izhikevich`",
      sub(FSNN, 'kind = "lif"', 'kind = "izhikevich"'))
model("model-duplicate-name", "two populations named `l0`", sub(FSNN, 'name = "l1"', 'name = "l0"'))
model("model-bad-init", "`init = \"xavier\"`", sub(FSNN, 'init = "kaiming_normal"', 'init = "xavier"'))
model("model-too-large", "`shape = [100000000]` (a typo; 64 MiB limit)", sub(
    FSNN, "shape = [128]", "shape = [100000000]"), patch={"MAX_MODEL_BYTES": 64 * 2 ** 20})
model("model-huge-delay", "`delay = 1000000000` (238 GiB of delay rings)",
      sub(FSNN, "delay = 1", "delay = 1000000000"))
model("training-T-huge", "`T = 1000000000` in `[training]`",
      sub(FSNN, "T = 30 ", "T = 1000000000 "), "train")
model("training-Tb-huge", "`T_b = 100000000` in `[training]`",
      sub(FSNN, "T_b = 100", "T_b = 100000000"), "train")
model("run-too-large", "a training run beyond its memory limit (1 MiB limit)", FSNN, "train",
      mask=r"(?<=would need about ).*?(?=, more than)", patch={"MAX_RUN_BYTES": 2 ** 20})
simple("simulate-steps-huge", "`--steps 100000000`",
       ["simulate", "--model", "fsnn_mlp", "--input", "digits", "--steps", "100000000", "--out",
        "s.h5"])
model("training-T-zero", "`T = 0` in `[training]`", sub(FSNN, "T = 30 ", "T = 0 "), "train")
model("training-Tb-zero", "`T_b = 0` in `[training]`", sub(FSNN, "T_b = 100", "T_b = 0"), "train")
model("training-T-string", "`T = \"30\"` (a string) in `[training]`",
      sub(FSNN, "T = 30 ", 'T = "30" '), "train")
model("training-unknown-key", "unknown key `learning_rate` in `[training]`",
      sub(FSNN, "lr = 0.1", "learning_rate = 0.1"), "train")
model("training-dropout-unknown", "dropout on a projection that does not exist",
      sub(FSNN, "lr = 0.1", "lr = 0.1\ndropout = { W2 = 0.2 }"), "train")
model("training-classes", "readout with 5 classes, data with 10",
      sub(FSNN, "classes = 10", "classes = 5"), "train")
simple("model-missing-file", "model file that does not exist", ["info", "--model", "nope.toml"])
simple("model-unknown-name", "model name that is not a shipped model",
       ["info", "--model", "fsnn_mpl"], mask=r"(?<=known names: )\[.*?\]|(?<=\(in ).*?(?=; set)")


# -- data sets ------------------------------------------------------------------------------
MNIST = ["train", "--dataset", "mnist", "--data-dir", "d", "--out", "o.h5", *TINY]


def mnist_case(id, what, edit):
    def setup(d, s):
        make_idx_dir(d / "d", n_train=12, n_test=5)
        edit(d / "d")
    CASES.append(Case(id, what, MNIST, setup))


mnist_case("idx-wrong-magic", "images file that starts with `PK` (a zip), not `00 00`",
           lambda d: (d / "train-images-idx3-ubyte").write_bytes(
               b"PK\x03\x04" + (d / "train-images-idx3-ubyte").read_bytes()[4:]))
mnist_case("idx-truncated", "images file cut short",
           lambda d: (d / "t10k-images-idx3-ubyte").write_bytes(
               (d / "t10k-images-idx3-ubyte").read_bytes()[:2000]))
mnist_case("idx-label-range", "label 12 in a 10-class set",
           lambda d: (d / "train-labels-idx1-ubyte").write_bytes(
               idx_bytes(np.array([0, 1, 12] + [3] * 9, np.uint8))))
mnist_case("idx-count-mismatch", "12 images but 11 labels",
           lambda d: (d / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(11, np.uint8))))
mnist_case("idx-empty", "a test set with 0 images",
           lambda d: ((d / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((0, 28, 28), np.uint8))),
                      (d / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(0, np.uint8)))))
mnist_case("idx-missing-file", "a folder without the label file",
           lambda d: (d / "t10k-labels-idx1-ubyte").unlink())
mnist_case("idx-not-gzip", "a `.gz` file that is not gzip", lambda d: (
    d / "train-labels-idx1-ubyte").rename(d / "train-labels-idx1-ubyte.gz"))
simple("data-dir-missing", "`--data-dir` that does not exist", MNIST)
simple("data-unknown-name", "unknown data set name", ["train", "--dataset", "mnits", "--out", "o.h5"])
simple("data-model-mismatch", "a 784-input model on the 8x8 digits",
       ["train", "--model", "fsnn_mlp_fmnist", "--dataset", "digits", "--out", "o.h5", *TINY])
CIFAR = ["train", "--model", "fsnn_mlp", "--dataset", "cifar10", "--data-dir", "c", "--out", "o.h5",
         *TINY]


def cifar_case(id, what, edit, mask=None):
    def setup(d, s):
        make_cifar10_dir(d / "c", n=2)
        edit(d / "c")
    CASES.append(Case(id, what, CIFAR, setup, mask))


cifar_case("cifar-forbidden-global", "a pickle that calls `os.system`",
           lambda d: (d / "test_batch").write_bytes(b"cos\nsystem\n(S'echo hi'\ntR."))
cifar_case("cifar-truncated", "a batch file cut short",
           lambda d: (d / "data_batch_2").write_bytes((d / "data_batch_2").read_bytes()[:300]),
           mask=r"(?<=\(ValueError: ).*?(?=\); the file)")
cifar_case("cifar-label-range", "label 10 in CIFAR-10",
           lambda d: (d / "data_batch_1").write_bytes(py2_pickle(
               {**cifar_batch(2, 10), b"labels": [3, 10]})))
cifar_case("cifar-memo-bomb", "a damaged pickle with memo index 1428684800",
           lambda d: (d / "batches.meta").write_bytes(b"\x80\x02}r\x00\x00(U\x0b\x00"))


# -- run files and checkpoints ----------------------------------------------------------------
def copy_ckpt(name="r.h5", edit=None):
    def setup(d, s):
        shutil.copy(s / "ckpt.h5", d / name)
        if edit is not None:
            with h5py.File(d / name, "a") as f:
                edit(f)
    return setup


def run_case(id, what, argv, setup, mask=None):
    CASES.append(Case(id, what, argv, setup, mask))


EVAL = ["eval", "--run", "r.h5"]
run_case("run-not-hdf5", "a text file given as run file", EVAL,
         lambda d, s: (d / "r.h5").write_text("epoch,loss\n1,0.5\n"))
run_case("run-truncated", "a run file cut to 2000 bytes", EVAL,
         lambda d, s: (d / "r.h5").write_bytes((s / "ckpt.h5").read_bytes()[:2000]),
         mask=r"(?<=HDF5 file\): ).*")
run_case("run-missing-group", "a run file without `/network`", EVAL,
         copy_ckpt(edit=lambda f: f.__delitem__("network")))
run_case("run-schema-version", "`schema_version = 99`", EVAL,
         copy_ckpt(edit=lambda f: f.attrs.__setitem__("schema_version", 99)),
         mask=r"(?<=this neurosim )\S+")
run_case("run-format", "root attribute `format = \"other\"`", EVAL,
         copy_ckpt(edit=lambda f: f.attrs.__setitem__("format", "other")))
run_case("run-not-training", "`eval` of a `neurosim simulate` run file", EVAL,
         lambda d, s: shutil.copy(s / "sim.h5", d / "r.h5"))


def _flip_readout(d, s):
    shutil.copy(s / "ckpt.h5", d / "r.h5")
    with h5py.File(d / "r.h5", "r") as f:
        off = f["training/readout_weight"].id.get_chunk_info(0).byte_offset
    raw = bytearray((d / "r.h5").read_bytes())
    raw[off + 40] ^= 0x10
    (d / "r.h5").write_bytes(bytes(raw))


run_case("run-corrupt-chunk", "one flipped bit in the stored readout weights", EVAL,
         _flip_readout, mask=r"(?<=OSError: ).*")
run_case("run-missing-momentum", "a checkpoint without one momentum buffer", EVAL,
         copy_ckpt(edit=lambda f: f.__delitem__("training/optimizer/W1.weight")))
RESUME = ["train", "--out", "r.h5", "--resume"]
simple("resume-missing", "`--resume` of a file that does not exist", RESUME)
run_case("resume-changed-lr", "`--resume` with another `--lr`", RESUME + ["--lr", "0.5"],
         copy_ckpt())
run_case("resume-changed-data", "`--resume` with another `--max-train`",
         RESUME + ["--max-train", "20"], copy_ckpt())
run_case("resume-fewer-epochs", "`--resume --epochs 0` after 1 epoch",
         RESUME + ["--epochs", "0"], copy_ckpt())


# -- command-line options ---------------------------------------------------------------------
simple("cli-tf-zero", "`--tf 0`", ["train", "--tf", "0"])
simple("cli-threads-zero", "`--threads 0`", ["train", "--threads", "0"])
simple("cli-threads-many", "more `--threads` than cores", ["train", "--threads", "100000", "--out",
                                                          "o.h5", *TINY], mask=r"(?<=<= )\d+")
simple("cli-loss", "`--loss hinge`", ["train", "--loss", "hinge"])
simple("cli-typo", "misspelt option `--epoch`", ["train", "--epoch", "3"])
simple("cli-lr-nan", "`--lr nan`", ["train", "--lr", "nan", "--out", "o.h5"])
simple("cli-lr-negative", "`--lr -1`", ["train", "--lr", "-1", "--out", "o.h5"])
simple("cli-kappa-zero", "`--kappa 0`", ["train", "--kappa", "0", "--out", "o.h5"])
simple("cli-max-train-zero", "`--max-train 0`", ["train", "--max-train", "0"])
simple("cli-checkpoint-every", "`--checkpoint-every 0`", ["train", "--checkpoint-every", "0"])
case("cli-out-exists", "`--out` names an existing file, no `--force`",
     ["train", "--out", "o.h5"])(lambda d, s: (d / "o.h5").write_bytes(b"precious"))
case("cli-out-directory", "`--out` names a folder", ["train", "--out", "runs"])(
    lambda d, s: (d / "runs").mkdir())
simple("cli-out-no-folder", "`--out` in a folder that does not exist",
       ["train", "--out", "runs/o.h5", *TINY])
simple("sim-grad-without-backward", "`simulate --grad` without `--backward-steps`",
       ["simulate", "--model", "fsnn_mlp", "--input", "digits", "--steps", "5", "--grad",
        "random", "--out", "s.h5"])
case("sim-input-shape", "an input `.npy` of the wrong width",
     ["simulate", "--model", "fsnn_mlp", "--input", "x.npy", "--steps", "5", "--out", "s.h5"])(
    lambda d, s: np.save(d / "x.npy", np.zeros((2, 63))))
case("sim-input-nan", "an input `.npy` holding NaN",
     ["simulate", "--model", "fsnn_mlp", "--input", "x.npy", "--steps", "5", "--out", "s.h5"])(
    lambda d, s: np.save(d / "x.npy", np.full((2, 64), np.nan)))
simple("train-diverges", "`--lr 1e300`: training diverges (a runtime failure)",
       ["train", "--lr", "1e300", "--out", "o.h5", *TINY], mask=r"(?<=float32 \()[^)]*")


# ======================================================================================
# running cases and reading the table
# ======================================================================================
def make_seeds(folder):
    """A training checkpoint and a simulate run file, made once."""
    from click.testing import CliRunner
    from neurosim.cli import main
    folder = Path(folder)
    r = CliRunner().invoke(main, ["train", "--out", str(folder / "ckpt.h5"), *TINY,
                                  "--batch-size", "16"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["simulate", "--model", "fsnn_mlp", "--input", "digits",
                                  "--steps", "3", "--n-samples", "2", "--out",
                                  str(folder / "sim.h5")])
    assert r.exit_code == 0, r.output
    return folder


def run(c, folder, seeds):
    """(exit code, the ``Error: ...`` line with masked parts as …) of one case."""
    from click.testing import CliRunner
    from neurosim.cli import main
    folder = Path(folder)
    if c.setup is not None:
        c.setup(folder, Path(seeds))
    old = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.ExitStack() as stack:
            for k, v in c.patch.items():
                stack.enter_context(mock.patch.object(config, k, v))
            r = CliRunner().invoke(main, c.argv)
    finally:
        os.chdir(old)
    err = getattr(r, "stderr", None) or r.output
    lines = [l for l in err.splitlines() if l.startswith("Error: ")]
    assert lines, (c.id, r.exit_code, r.output, r.exception)
    msg = lines[-1]
    if c.mask:
        msg = re.sub(c.mask, "…", msg)
    return r.exit_code, msg


def _cell(s):
    return "`` " + s.replace("|", "\\|") + " ``"


def render(results):
    rows = ["| id | bad input | command | exit | what the user sees (stderr) |",
            "|---|---|---|---|---|"]
    for c in CASES:
        code, msg = results[c.id]
        rows.append(f"| `{c.id}` | {c.what} | `neurosim {shlex.join(c.argv)}` | {code} | "
                    f"{_cell(msg)} |")
    return "\n".join(rows)


def read_table():
    """{id: (exit, message)} from docs/reliability.md."""
    text = DOC.read_text()
    table = text[text.index(START) + len(START):text.index(END)]
    out = {}
    for line in table.strip().splitlines()[2:]:
        m = re.match(r"\| `([^`]+)` \|.*\| (\d+) \| `` (.*) `` \|$", line)
        assert m, f"malformed table row: {line}"
        out[m.group(1)] = (int(m.group(2)), m.group(3).replace("\\|", "|"))
    return out


# ======================================================================================
# tests
# ======================================================================================
@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return make_seeds(tmp_path_factory.mktemp("seeds"))


def test_table_lists_every_case():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) >= 30
    assert set(read_table()) == set(ids), set(read_table()) ^ set(ids)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input(c, tmp_path, seeds):
    code, msg = run(c, tmp_path, seeds)
    want_code, want = read_table()[c.id]
    assert code == want_code and (code == 2 or c.id == "train-diverges"), (c.id, code)
    assert msg == want, f"\n{msg}\n!=\n{want}\n(python tests/test_bad_inputs.py --write)"
    assert "Traceback" not in msg


def main(argv):
    if argv != ["--write"]:
        print(__doc__)
        return 2
    results = {}
    with tempfile.TemporaryDirectory() as base:
        (Path(base) / "seeds").mkdir()
        seeds = make_seeds(Path(base) / "seeds")
        for c in CASES:
            d = Path(base) / c.id
            d.mkdir()
            results[c.id] = run(c, d, seeds)
    text = DOC.read_text()
    new = text[:text.index(START) + len(START)] + "\n" + render(results) + "\n" + text[text.index(END):]
    DOC.write_text(new)
    print(f"{DOC}: {len(results)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
