"""The training driver behind ``neurosim train`` / ``neurosim eval``.

``train(...)`` loads a model file and a data set, runs SPIDE epochs (:func:`spide_step`),
evaluates on the test set after every epoch, and writes a training run file after every
epoch (atomically: a crash never leaves a half-written file, and the previous checkpoint
stays intact until the new one is complete).  The file holds the network with its
current weights (the run-file schema's ``/network``), and ``/training``: the
configuration, the readout, the optimizer's momentum buffers, the random generator's
state, the epoch/iteration counters and the per-epoch history of metrics and operation
counts.  ``resume=True`` continues from that file and reaches the same final weights as
an uninterrupted run with the same seed (same batches, same dropout masks).
"""
import json
import time
from pathlib import Path

import numpy as np

from .. import _validate as V
from .. import datasets as D
from ..io.hdf5 import _Reader, _check_header, _open, _read_network, _write_header, _write_network, atomic_h5
from ..models import load_model
from .spide import SGD, SPIDEConfig, SPIDEModel, learning_rate, spide_step

#: per-epoch history keys; op counts are means per sample.
OPS = ("fwd_synops", "fwd_updates", "fwd_spikes", "encoding_macs", "bwd_synops_pos",
       "bwd_synops_neg", "bwd_updates", "bwd_spikes", "update_macs")
TRAINING_KEYS = {f.name for f in SPIDEConfig.__dataclass_fields__.values()} | {
    "readout", "dataset", "output"}


class TrainingError(V.NeurosimError):
    """A training run cannot start or continue (bad options, incompatible checkpoint)."""


def _normalised(ds):
    """(x_train, y_train, x_test, y_test) as float32, normalised as SPIDE does per data set."""
    if ds.name == "digits":
        mu, sd = float(ds.x_train.mean()), float(ds.x_train.std())
        f = lambda x: ((x - mu) / sd).astype(np.float32)
    elif ds.name == "mnist":
        f = lambda x: D.normalize(x, D.MNIST_MEAN, D.MNIST_STD)
    elif ds.name == "fashion-mnist":
        f = lambda x: D.normalize(x, D.FASHION_MNIST_MEAN, D.FASHION_MNIST_STD)
    else:
        f = lambda x: x if x.dtype != np.uint8 else D.normalize(x, D.CIFAR_MEAN, D.CIFAR_STD)
    return f(ds.x_train), ds.y_train, f(ds.x_test), ds.y_test


def config_for(net, overrides):
    """SPIDEConfig from the model file's ``[training]`` table and explicit overrides."""
    table = dict(net.metadata.get("training", {}) or {})
    unknown = sorted(set(table) - TRAINING_KEYS)
    if unknown:
        raise TrainingError(f"model [training] table has unknown key(s) {unknown}; "
                            f"allowed: {sorted(TRAINING_KEYS)}")
    meta = {k: table.pop(k) for k in ("readout", "dataset", "output") if k in table}
    table.update({k: v for k, v in overrides.items() if v is not None})
    return SPIDEConfig.from_dict(table), meta


def build_model(net, cfg, meta, classes):
    readout = cfg.loss == "ce"
    model = SPIDEModel(net, classes, output=meta.get("output"), readout=readout, seed=cfg.seed)
    model.apply_norm_cap(cfg.norm_cap)
    return model


def _batches(n, bs, rng):
    perm = rng.permutation(n)
    return [perm[i:i + bs] for i in range(0, n, bs)]


def evaluate(model, cfg, x, y, batch_size=200, n_threads=None):
    """Forward-only test pass: accuracy, mean loss and forward op counts per sample."""
    correct, loss, n = 0, 0.0, 0
    ops = {k: 0 for k in ("fwd_synops", "fwd_updates", "fwd_spikes", "encoding_macs")}
    for i in range(0, len(x), batch_size):
        r = spide_step(model, x[i:i + batch_size], y[i:i + batch_size], cfg, None, 0.0, None,
                       train=False, n_threads=n_threads)
        correct += r.correct
        loss += r.loss * r.batch
        n += r.batch
        for k in ops:
            ops[k] += int(np.sum(getattr(r, k)))
    return dict(accuracy=correct / max(n, 1), loss=loss / max(n, 1),
                **{k: v / max(n, 1) for k, v in ops.items()})


def save_checkpoint(path, model, cfg, state, force=True):
    """Write the training run file (network + /training) atomically."""
    def fill(f):
        _write_header(f, model.net, cfg.seed, state.get("command"))
        f.attrs["kind"] = "training"
        _write_network(f, model.net)
        g = f.create_group("training")
        g.attrs["config"] = json.dumps(cfg.to_dict())
        for k in ("model", "dataset", "epoch", "iteration", "finished", "wall_s", "classes"):
            g.attrs[k] = state[k]
        g.attrs["rng"] = json.dumps(state["rng"])
        g.attrs["meta"] = json.dumps(state.get("meta", {}))
        if model.readout:
            g["readout_weight"] = model.C
            g["readout_bias"] = model.c
        raw = g.create_group("raw")
        for name, v in model.raw.items():
            raw[name] = v
        opt = g.create_group("optimizer")
        for name, v in state["optimizer"].items():
            opt[name] = v
        h = g.create_group("history")
        for k, v in state["history"].items():
            h[k] = np.asarray(v, np.float64)
    return atomic_h5(path, fill, force=force)


def load_checkpoint(path):
    """(network, training dict) from a training run file; RunFileError if not one."""
    f = _open(path)
    r = _Reader(path, f)
    with f:
        _check_header(r)
        net = _read_network(r)
        g = r.group(f, "training")
        st = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.attrs.items()}
        st["config"] = json.loads(st["config"])
        st["rng"] = json.loads(st["rng"])
        st["meta"] = json.loads(st.get("meta", "{}"))
        st["readout"] = (g["readout_weight"][()], g["readout_bias"][()]) if "readout_weight" in g else None
        st["raw"] = {k: g["raw"][k][()] for k in g["raw"]}
        st["optimizer"] = {k: g["optimizer"][k][()] for k in g["optimizer"]}
        st["history"] = {k: list(g["history"][k][()]) for k in g["history"]}
    return net, st


def train(model="fsnn_mlp", dataset=None, *, data_dir=None, out="train-run.h5", overrides=None,
          resume=False, force=False, seed=0, max_train=None, max_test=None, report=None,
          progress=None, n_threads=None, command=None):
    """Train a model file on a data set with SPIDE; returns the summary dict.

    Parameters
    ----------
    model : str
        Model name or path (``models/*.toml``), or with ``resume`` ignored (the run file
        holds the network).
    dataset : str, optional
        Default: the model's ``[training] dataset`` (``digits`` if none).
    overrides : dict, optional
        :class:`SPIDEConfig` fields overriding the model's ``[training]`` table.
    resume : bool
        Continue the run stored in ``out``.
    max_train, max_test : int, optional
        Use only the first samples of each split (quick runs, tests).
    report : callable(str), optional
        Receives one line per epoch.
    progress : callable(dict), optional
        Receives a dict after every batch (epoch, batch, n_batches, loss, accuracy, eta_s).
    """
    out = Path(out)
    overrides = dict(overrides or {})
    t_start = time.perf_counter()
    if resume:
        if not out.exists():
            raise TrainingError(f"--resume: {str(out)!r} does not exist; start without --resume")
        net, st = load_checkpoint(out)
        cfg = SPIDEConfig.from_dict(st["config"])
        if overrides.get("epochs") is not None:
            cfg.epochs = V.check_int(overrides["epochs"], "epochs", low=0)
        meta = st["meta"]
        net.metadata = {"name": st["model"]}
        model_name, ds_name = st["model"], st["dataset"]
    else:
        if out.exists() and not force:
            raise FileExistsError(f"output {str(out)!r} already exists; pass --force to overwrite "
                                  "it or --resume to continue it")
        if not out.parent.is_dir():
            raise FileNotFoundError(f"output folder {str(out.parent)!r} does not exist")
        net = load_model(model, seed=seed)
        overrides.setdefault("seed", seed)
        cfg, meta = config_for(net, overrides)
        model_name = net.metadata.get("name", str(model))
        ds_name = dataset or meta.get("dataset") or "digits"
    ds = D.load(ds_name, data_dir) if ds_name != "digits" else D.load("digits")
    xtr, ytr, xte, yte = _normalised(ds)
    if max_train:
        xtr, ytr = xtr[:max_train], ytr[:max_train]
    if max_test:
        xte, yte = xte[:max_test], yte[:max_test]
    classes = int(meta.get("readout", {}).get("classes", ds.n_classes)) if isinstance(
        meta.get("readout"), dict) else ds.n_classes
    model_obj = build_model(net, cfg, meta, classes)
    opt = SGD(cfg.momentum, cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    history = {k: [] for k in ("epoch", "lr", "train_loss", "train_accuracy", "test_accuracy",
                               "test_loss", "wall_s") + OPS + tuple("test_" + k for k in OPS[:4])}
    epoch0, it = 0, 0
    if resume:
        model_obj.raw = {k: np.array(v) for k, v in st["raw"].items()}
        if st["readout"] is not None:
            model_obj.C, model_obj.c = (np.array(a, np.float64) for a in st["readout"])
        model_obj.apply_norm_cap(cfg.norm_cap)
        opt.load_state(st["optimizer"])
        rng.bit_generator.state = st["rng"]
        history.update({k: list(v) for k, v in st["history"].items()})
        epoch0, it = int(st["epoch"]), int(st["iteration"])
    state = dict(model=model_name, dataset=ds_name, classes=classes, meta=meta,
                 command=command or "", finished=False)
    in_shape = net.populations[model_obj.input].shape
    for epoch in range(epoch0, cfg.epochs):
        t0 = time.perf_counter()
        batches = _batches(len(xtr), cfg.batch_size, rng)
        sums = {k: 0.0 for k in OPS}
        loss_sum, correct, n = 0.0, 0, 0
        for bi, idx in enumerate(batches):
            xb = xtr[idx]
            if xb.ndim == 4 and len(in_shape) == 1:
                xb = xb.reshape(len(idx), -1)
            if ds_name in ("cifar10", "cifar100"):
                xb = D.normalize(D.augment_cifar(ds.x_train[idx], rng), D.CIFAR_MEAN, D.CIFAR_STD)
            lr = learning_rate(cfg, epoch, it)
            r = spide_step(model_obj, xb, ytr[idx], cfg, rng, lr, opt, n_threads=n_threads)
            it += 1
            loss_sum += r.loss * r.batch
            correct += r.correct
            n += r.batch
            for k in OPS:
                sums[k] += float(np.sum(getattr(r, k)))
            if progress is not None:
                el = time.perf_counter() - t0
                progress(dict(epoch=epoch + 1, epochs=cfg.epochs, batch=bi + 1,
                              n_batches=len(batches), loss=loss_sum / n, accuracy=correct / n,
                              eta_s=el / (bi + 1) * (len(batches) - bi - 1)))
        xe = xte.reshape(len(xte), -1) if xte.ndim == 4 and len(in_shape) == 1 else xte
        ev = evaluate(model_obj, cfg, xe, yte, n_threads=n_threads)
        wall = time.perf_counter() - t0
        history["epoch"].append(epoch + 1)
        history["lr"].append(learning_rate(cfg, epoch, max(it - 1, 0)))
        history["train_loss"].append(loss_sum / n)
        history["train_accuracy"].append(correct / n)
        history["test_accuracy"].append(ev["accuracy"])
        history["test_loss"].append(ev["loss"])
        history["wall_s"].append(wall)
        for k in OPS:
            history[k].append(sums[k] / n)
        for k in OPS[:4]:
            history["test_" + k].append(ev[k])
        state.update(epoch=epoch + 1, iteration=it, rng=rng.bit_generator.state,
                     optimizer=opt.state(), history=history, finished=epoch + 1 == cfg.epochs,
                     wall_s=float(sum(history["wall_s"])))
        save_checkpoint(out, model_obj, cfg, state, force=True)
        if report is not None:
            report(f"epoch {epoch + 1}/{cfg.epochs}: loss {loss_sum / n:.4f}, train acc "
                   f"{correct / n:.4f}, test acc {ev['accuracy']:.4f} ({wall:.1f} s)")
    if epoch0 >= cfg.epochs and not history["epoch"]:
        raise TrainingError("nothing to do: 0 epochs")
    summary = dict(model=model_name, dataset=ds_name, seed=cfg.seed, epochs=cfg.epochs,
                   test_accuracy=history["test_accuracy"][-1] if history["test_accuracy"] else None,
                   train_accuracy=history["train_accuracy"][-1] if history["train_accuracy"] else None,
                   wall_s=time.perf_counter() - t_start, train_wall_s=float(sum(history["wall_s"])),
                   n_train=int(len(xtr)), n_test=int(len(xte)), out=str(out),
                   ops_per_sample={k: history[k][-1] for k in OPS} if history["epoch"] else {},
                   config=cfg.to_dict())
    return summary


def evaluate_run(path, dataset=None, *, data_dir=None, max_test=None, n_threads=None):
    """Test accuracy and forward op counts of a training run file."""
    net, st = load_checkpoint(path)
    cfg = SPIDEConfig.from_dict(st["config"])
    ds_name = dataset or st["dataset"]
    ds = D.load(ds_name, data_dir) if ds_name != "digits" else D.load("digits")
    _, _, xte, yte = _normalised(ds)
    if max_test:
        xte, yte = xte[:max_test], yte[:max_test]
    model = build_model(net, cfg, st["meta"], int(st["classes"]))
    model.raw = {k: np.array(v) for k, v in st["raw"].items()}
    if st["readout"] is not None:
        model.C, model.c = (np.array(a, np.float64) for a in st["readout"])
    if xte.ndim == 4 and len(net.populations[model.input].shape) == 1:
        xte = xte.reshape(len(xte), -1)
    d = evaluate(model, cfg, xte, yte, n_threads=n_threads)
    d.update(dataset=ds_name, n_test=int(len(xte)), epoch=int(st["epoch"]))
    return d
