"""docs/hdf5-schema.md names everything a run file holds, and the files hold what it requires.

Freshly written files (a ``neurosim simulate`` run with both phases, recorded spikes,
conv / pool / sparse projections, leaky neurons and dropout masks; a finished training
run with norm caps and dropout; a mid-epoch checkpoint) are walked with plain h5py.  Every
group, dataset and attribute name must appear (in backticks) in the section of the
document that describes its part of the file, every JSON attribute's keys too; and the
items the document lists as always present must be in the files.
"""
import json
import os
import re
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest

import neurosim as ns
from neurosim.io import write_run
from neurosim.io.model_file import models_dir
from neurosim.training.checkpoint import HISTORY
from neurosim.training.trainer import TrainingInterrupted, train

DOC = (Path(__file__).resolve().parents[1] / "docs" / "hdf5-schema.md").read_text()
#: groups whose members are named by the user (populations, projections, stimulus keys).
USER_NAMED = {"populations", "projections", "inputs", "source_spikes", "currents", "masks",
              "grad", "gate", "raw", "optimizer", "batch_norm"}
TRAIN_ARGS = dict(overrides=dict(epochs=1, T=3, T_b=4, batch_size=8), max_train=24,
                  max_test=8)


def _section(title, level=3):
    """Text of the section headed ``title`` up to the next heading of this or a higher level."""
    start = DOC.index("#" * level + " " + title + "\n")
    body = DOC.index("\n", start) + 1
    m = re.search(r"^#{2,%d} " % level, DOC[body:], re.M)
    return DOC[start:body + m.start()] if m else DOC[start:]


def _between(text, first, last):
    return text[text.index(first):text.index(last)]


def _words(text):
    """Every '/'-separated segment of every backticked token (and its first word:
    `input_map = true` names ``input_map``)."""
    out = set()
    for tok in re.findall(r"`([^`]+)`", text):
        for seg in (s.strip() for s in tok.split("/") if s.strip()):
            out.update((seg, seg.split()[0]))
    return out


def _rows(text):
    """{first-cell token: whole row} of the markdown tables in ``text``."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = line.split("|")
            for tok in re.findall(r"`([^`]+)`", cells[1]):
                rows[tok] = line
    return rows


ROOT_WORDS = _words(_section("Root attributes")) | _words(_section("Root attributes and `/network`"))
WORDS = {"network": _words(_section("`/network`")),
         "forward": _words(_section("`/forward`")),
         "backward": _words(_section("`/backward` (optional)")) | _words(_section("`/forward`")),
         "training": _words(_section("`/training`"))}


def _walk(path):
    """[(hdf5 path, kind, name, attrs)] of every object of a file, root first."""
    out = []
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            kind = "dataset" if isinstance(obj, h5py.Dataset) else "group"
            out.append((name, kind, name.rsplit("/", 1)[-1],
                        {k: (v.decode() if isinstance(v, bytes) else v)
                         for k, v in obj.attrs.items()}))
        visit("", f)
        f.visititems(visit)
    return out


def _undocumented(path):
    """Names in the file that the document's section for them does not mention."""
    missing = []
    for name, kind, last, attrs in _walk(path):
        parts = name.split("/") if name else []
        words = WORDS[parts[0]] if parts else ROOT_WORDS
        for i, part in enumerate(parts):
            if i > 0 and parts[i - 1] in USER_NAMED:
                continue                                   # a population / projection name
            if part not in words:
                missing.append(f"/{'/'.join(parts[:i + 1])} ({kind if i == len(parts) - 1 else 'group'})")
        for k in attrs:
            if k not in words:
                missing.append(f"/{name}@{k} (attribute)")
    return sorted(set(missing))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schema")
    # a simulate run touching every optional piece
    conv = ns.models.load_model("test_conv", seed=0)
    x = np.random.default_rng(0).random((2, 64))
    B = 2
    masked = next(q for q in conv.projections.values()
                  if conv.populations[q.pre].kind != "input")
    masks = {masked.name: np.random.default_rng(1).choice(
        [0.0, 2.0], (B, conv.populations[masked.post].n))}
    fwd = ns.run_forward(conv, 6, inputs={"x": x}, record=True, masks=masks)
    out = conv.spiking_populations[-1].name
    grad = {out: np.random.default_rng(2).normal(0, 0.5, (B, conv.populations[out].n))}
    bwd = ns.run_backward(conv, fwd, grad, 5, record=True)
    sim = write_run(tmp / "conv.h5", conv, fwd, bwd, inputs={"x": x}, grad=grad, seed=0,
                    command="test")
    sparse = ns.models.load_model("test_sparse", seed=0)
    src = [p.name for p in sparse.populations.values() if p.kind == "source"][0]
    spikes = {src: (np.random.default_rng(3).random((B, 6, sparse.populations[src].n)) < 0.3)}
    fwd2 = ns.run_forward(sparse, 6, spikes=spikes, record=True)
    sim2 = write_run(tmp / "sparse.h5", sparse, fwd2, spikes=spikes, seed=0, command="test")
    # training runs: norm cap, dropout, batch norm; one finished, one interrupted mid-epoch
    text = (models_dir() / "fsnn_mlp.toml").read_text().replace(
        "milestones = [20, 27]", "milestones = [20, 27]\ndropout = { F = 0.2 }\n"
                                 "norm_cap = { B = 0.5 }\nbatch_norm = [\"F\"]")
    model = tmp / "capped.toml"
    model.write_text(text)
    train(str(model), out=tmp / "train.h5", report=None, diagnose=2, **TRAIN_ARGS)

    def interrupt(d):
        if d["batch"] == 1:
            os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(TrainingInterrupted):
        train(str(model), out=tmp / "mid.h5", progress=interrupt, **TRAIN_ARGS)
    return dict(simulate=[sim, sim2], train=tmp / "train.h5", mid=tmp / "mid.h5")


def test_simulate_files_hold_only_documented_names(files):
    for p in files["simulate"]:
        assert _undocumented(p) == [], p


def test_training_files_hold_only_documented_names(files):
    assert _undocumented(files["train"]) == []
    assert _undocumented(files["mid"]) == []


def test_simulate_files_hold_the_required_items(files):
    for p in files["simulate"]:
        objs = {name: (kind, attrs) for name, kind, _, attrs in _walk(p)}
        root = objs[""][1]
        for tok in _rows(_section("Root attributes")):
            assert tok in root, (p, tok)
        assert "kind" not in root
        with h5py.File(p, "r") as f:
            for name in json.loads(f["network"].attrs["populations"]):
                attrs = set(f[f"network/populations/{name}"].attrs)
                assert set(_rows(_section("`/network`"))) <= attrs | {"schedule_position"}
                assert {"schedule_position", "backward_schedule_position"} <= attrs
            for name in f["forward/populations"]:
                assert {"counts", "v_final", "neuron_updates"} <= set(f[f"forward/populations/{name}"])


def test_training_files_hold_the_required_items(files):
    train_rows = _rows(_section("`/training`"))
    for key in ("train", "mid"):
        objs = {name: (kind, attrs) for name, kind, _, attrs in _walk(files[key])}
        root = objs[""][1]
        assert root["kind"] == "training"
        for tok in list(_rows(_section("Root attributes"))) + ["kind"]:
            assert tok in root, tok
        assert "forward" not in objs and "backward" not in objs
        g = objs["training"][1]
        attrs_table = _rows(_between(_section("`/training`"), "Attributes (JSON", "Datasets ("))
        assert len(attrs_table) >= 11
        for tok in attrs_table:
            assert tok in g, (key, tok)
        for k in HISTORY:
            assert f"training/history/{k}" in objs, k
            assert f"`{k}`" in train_rows["history/<key>"], k
        assert {"training/readout_weight", "training/readout_bias", "training/raw/B",
                "training/optimizer/F.weight"} <= set(objs)
        # keys of the JSON attributes are documented in their rows
        for attr in ("config", "data", "rng"):
            for k in json.loads(g[attr]):
                assert f"`{k}`" in train_rows[attr], (attr, k)
        for k in json.loads(g["meta"]):
            assert f"`{k}`" in train_rows["meta"], k
    mid = {name: attrs for name, _, _, attrs in _walk(files["mid"])}
    assert "training/progress" in mid and "training/progress/perm" in mid
    assert "training/progress" not in {n for n, *_ in _walk(files["train"])}
    state = json.loads(mid["training/progress"]["state"])
    for k in list(state) + list(state["activity"]):
        assert f"`{k}`" in train_rows["state"], k
    assert set(state["sums"]) <= {k for k in HISTORY}
