"""Fidelity: SPIDE as the authors' own code trains it vs neurosim, on the same data.

    SPIDE_REF_DIR=/work/spide-ref SPIDE_REF_PYTHON=/path/to/torch/python \\
        python -m benchmarks.bench_fidelity --cases lenet_mnist --impls reference,neurosim \\
        --max-train 2000 --max-test 1000 --epochs 2 --seeds 0
    python -m benchmarks.bench_fidelity --table          # the docs table from the records
    python -m benchmarks.bench_fidelity --compare-step   # one step side by side (below)

**The reference code.**  SPIDE (Xiao et al., Neural Networks 2023, arXiv:2302.00232) is
published as github.com/pkuxmq/SPIDE-FSNN; this benchmark was built against commit
54e4338.  It is *not* part of neurosim and nothing of it is copied here: export it to a
folder outside the repository (``git clone https://github.com/pkuxmq/SPIDE-FSNN`` and
``git -C SPIDE-FSNN archive 54e4338 | tar -x -C /some/folder``) and name that folder in
``SPIDE_REF_DIR`` (or ``--ref-dir``).  The worker imports the authors' model classes from
there (``models/snn_spide_mnist_lenet.py``, ``models/snn_spide_mnist.py``) and builds them
with the configuration of their scripts ``mnist_lenet.py`` / ``mnist_convnetf.py``.  Their
scripts themselves are not run (they need CUDA and torchvision): the worker's training loop
does what their ``train()`` / ``test()`` do — ``loss = CE(model(x), y)``;
``(loss * scale).backward()``; ``SGD(lr / scale, momentum 0.9, weight decay 5e-4)``; the
learning rate × 0.1 at the schedule's epochs; ``model.eval()`` for the test pass — on CPU,
float32, with ``torch.set_num_threads(threads)``.  The reference needs PyTorch (benchmark
only: ``pip install torch==2.13.0`` on CPU; never torchvision) plus numpy, scipy and tqdm
(their modules import them); ``SPIDE_REF_PYTHON`` (or ``--ref-python``) names the Python
that has them, default: this one.

**Data.**  The parent process loads Fashion-MNIST with neurosim's loader
(``neurosim.training.trainer.load_data``: Debian's ``dataset-fashion-mnist`` by default,
normalised with (0.2860, 0.3530)), keeps the first ``--max-train`` / ``--max-test``
samples (exactly what ``neurosim train --max-train/--max-test`` uses) and hands the same
arrays to every worker (a temporary ``.npz``), so both implementations see the same
samples.  Batch order and dropout masks come from each implementation's own generator
(torch's / numpy's) seeded with the seed.

**Implementations** (``impl``):

* ``spide-fsnn-reference`` — the authors' model classes, their script's hyper-parameters
  (LeNet: T 30, T_b 100, vth 1, vth_back 0.5, scale 100, lr 0.1, schedule [20, 40];
  ConvNet-F: the same but lr 0.05, schedule [30, 60, 90], dropout 0.2 on every map);
* ``neurosim`` — ``neurosim.training`` (``load_model`` / ``config_for`` /
  ``build_model`` / ``spide_step`` / ``evaluate``, the loop of ``neurosim train``) with
  the model file's ``[training]`` table (``lenet_mnist`` / ``convnetf_mnist``);
* ``neurosim-quirks`` — the same with ``spide_quirks=True`` (``neurosim train
  --spide-quirks``): the reference code's weight decay on κ-scaled gradients and dropout
  masks left out of the weight gradients (``docs/training.md``).

Every worker runs in a fresh process pinned to ``--threads`` (Numba, BLAS and
``torch.set_num_threads``).  **Records** (``benchmarks/results/fidelity.jsonl``, one per
epoch, epoch 0 = the initial weights): ``metric`` ``test_accuracy``; ``extra`` holds
``epoch``, ``seed``, ``n_train``, ``n_test``, ``train_loss``, ``train_accuracy``,
``test_loss``, ``lr``, ``train_wall_s``, ``test_wall_s``, ``epoch_wall_s``, and per spiking
layer (neurosim's population names ``l0``, ``l1``, ...) the training epoch's mean forward
rate ``fwd_rate`` (spikes per neuron and step) and backward rate ``bwd_rate`` (nonzero
ternary spikes per neuron and step, gated neurons included: the reference code's
``last_backward_firing_rate``), averaged over samples; epoch 0 also has the initial
weights' statistics (``init``).

``--compare-step`` loads neurosim's initial weights into the authors' model, runs one
training step of both on the same batch (no dropout, or the same dropout masks with
``--compare-masks``) and prints, per layer, how many spike counts differ, the forward and
backward rates, and per parameter the gradient's norm ratio and cosine; ``--compare-out``
writes it as JSON.
"""
import argparse
import dataclasses
import importlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import _harness as H

BENCH = "fidelity"
REF_IMPL = "spide-fsnn-reference"
IMPLS = {"reference": REF_IMPL, REF_IMPL: REF_IMPL, "neurosim": "neurosim",
         "neurosim-quirks": "neurosim-quirks"}
CASES = ("lenet_mnist", "convnetf_mnist")
REF_COMMIT = "54e4338"

#: the authors' script settings (mnist_lenet.py / mnist_convnetf.py defaults at 54e4338)
REF_HP = {
    "lenet_mnist": dict(module="models.snn_spide_mnist_lenet", lr=0.1, schedule=[20, 40],
                        model=dict(c_in=1, c_hidden=15, c_s1=40, h_hidden=28, w_hidden=28,
                                   fc_num=300, num_classes=10, kernel_size_x=5, stride_x=1,
                                   padding_x=2, kernel_size_s=5, dropout=0.2, leaky=None)),
    "convnetf_mnist": dict(module="models.snn_spide_mnist", lr=0.05, schedule=[30, 60, 90],
                           model=dict(c_in=1, c_hidden=64, c_s1=64, h_hidden=7, w_hidden=7,
                                      num_classes=10, kernel_size_x=5, stride_x=2,
                                      padding_x=2, kernel_size_s=5, dropout=0.2, leaky=None)),
}
COMMON_HP = dict(T=30, T_b=100, vth=1.0, vth_back=0.5, scale=100.0, momentum=0.9,
                 weight_decay=5e-4, gamma=0.1, batch_size=128, test_batch=200)
#: spiking layers in forward order, neurosim's population names
LAYERS = {"lenet_mnist": ["l0", "l1", "l2", "l3", "l4"], "convnetf_mnist": ["l0", "l1", "l2"]}


# ======================================================================================
# the reference side (PyTorch; imported only in reference workers)
# ======================================================================================
def import_reference(ref_dir, case):
    """The authors' network class for ``case`` from the folder ``ref_dir``."""
    ref_dir = str(Path(ref_dir).resolve())
    if not Path(ref_dir, "modules", "snn_modules.py").is_file():
        raise SystemExit(f"SPIDE_REF_DIR {ref_dir!r} does not hold the SPIDE-FSNN code "
                         "(modules/snn_modules.py is missing); see this script's docstring")
    if ref_dir not in sys.path:
        sys.path.insert(0, ref_dir)
    mod = importlib.import_module(REF_HP[case]["module"])
    if not str(getattr(mod, "__file__", "")).startswith(ref_dir):
        raise SystemExit(f"imported {mod.__name__} from {mod.__file__}, not from {ref_dir}")
    return mod.SNNSPIDEConvMultiLayerNet


def reference_model(ref_dir, case, T, T_b):
    import torch  # noqa: F401
    cls = import_reference(ref_dir, case)
    m = dict(REF_HP[case]["model"], time_step=T, time_step_back=T_b, vth=COMMON_HP["vth"],
             vth_back=COMMON_HP["vth_back"])
    return cls({"MODEL": m})


def _ref_rates(model, layers):
    """Per-layer mean forward / backward rates of the last step of the authors' model."""
    f = model.snn_spide_conv.snn_func
    fwd = [float(a.float().mean()) for a in f.last_forward_firing_rate]
    bwd = getattr(f, "last_backward_firing_rate", None)
    bwd = [float(b.float().mean()) for b in bwd][::-1] if bwd is not None else None
    return dict(zip(layers, fwd)), (dict(zip(layers, bwd)) if bwd is not None else None)


def _ref_init_stats(model):
    out = {}
    for name, p in model.named_parameters():
        p = p.detach()
        out[name] = dict(shape=list(p.shape), mean=float(p.mean()), std=float(p.std()),
                         frob=float(p.norm()))
    return out


def run_reference(job, data):
    import numpy as np
    import random
    import torch
    import torch.nn as nn
    case, seed, thr = job["case"], job["seed"], job["threads"]
    torch.set_num_threads(thr)
    random.seed(seed)
    torch.manual_seed(seed)
    hp = dict(COMMON_HP, **{k: v for k, v in REF_HP[case].items() if k != "model"})
    model = reference_model(job["ref_dir"], case, hp["T"], hp["T_b"])
    init = _ref_init_stats(model)
    crit = nn.CrossEntropyLoss()
    scale = hp["scale"]
    lr = hp["lr"]
    opt = torch.optim.SGD(model.parameters(), lr=lr / scale, momentum=hp["momentum"],
                          weight_decay=hp["weight_decay"])
    xtr, ytr = torch.from_numpy(data["xtr"]), torch.from_numpy(data["ytr"]).long()
    xte, yte = torch.from_numpy(data["xte"]), torch.from_numpy(data["yte"]).long()
    layers = LAYERS[case]

    def test():
        model.eval()
        t0 = time.perf_counter()
        correct, loss, n = 0, 0.0, 0
        with torch.no_grad():
            for i in range(0, len(xte), hp["test_batch"]):
                x, y = xte[i:i + hp["test_batch"]], yte[i:i + hp["test_batch"]]
                out = model(x)
                loss += float(crit(out, y)) * len(y)
                correct += int((out.argmax(1) == y).sum())
                n += len(y)
        return correct / n, loss / n, time.perf_counter() - t0

    acc, tl, tw = test()
    emit(job, 0, dict(test_accuracy=acc, test_loss=tl, test_wall_s=tw, init=init))
    for epoch in range(job["epochs"]):
        if epoch in hp["schedule"]:
            lr *= hp["gamma"]
            for g in opt.param_groups:
                g["lr"] = lr / scale
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(len(xtr))
        sums = dict(loss=0.0, correct=0, n=0)
        fr = {l: 0.0 for l in layers}
        br = {l: 0.0 for l in layers}
        for i in range(0, len(xtr), hp["batch_size"]):
            idx = perm[i:i + hp["batch_size"]]
            x, y = xtr[idx], ytr[idx]
            out = model(x)
            loss = crit(out, y)
            opt.zero_grad()
            (loss * scale).backward()
            opt.step()
            B = len(y)
            sums["loss"] += float(loss) * B
            sums["correct"] += int((out.detach().argmax(1) == y).sum())
            sums["n"] += B
            f, b = _ref_rates(model, layers)
            for l in layers:
                fr[l] += f[l] * B
                br[l] += b[l] * B
        train_w = time.perf_counter() - t0
        acc, tl, tw = test()
        n = sums["n"]
        emit(job, epoch + 1, dict(
            test_accuracy=acc, test_loss=tl, train_loss=sums["loss"] / n,
            train_accuracy=sums["correct"] / n, lr=lr, train_wall_s=train_w, test_wall_s=tw,
            epoch_wall_s=train_w + tw, fwd_rate={l: fr[l] / n for l in layers},
            bwd_rate={l: br[l] / n for l in layers}))


# ======================================================================================
# the neurosim side
# ======================================================================================
def neurosim_model(case, seed, quirks, epochs=1):
    from neurosim.models import load_model
    from neurosim.training.spide import build_model
    from neurosim.training.trainer import config_for
    net = load_model(case, seed=seed)
    cfg, meta = config_for(net, dict(seed=seed, epochs=epochs, spide_quirks=bool(quirks)))
    return net, cfg, build_model(net, cfg, meta, 10)


def _ns_init_stats(model):
    import numpy as np
    out = {}
    for name, p in model.parameters().items():
        p = np.asarray(p, np.float64)
        out[name] = dict(shape=list(p.shape), mean=float(p.mean()), std=float(p.std(ddof=1)),
                         frob=float(np.sqrt(np.sum(p * p))))
    return out


def run_neurosim(job, data):
    import numpy as np
    from neurosim.training.spide import SGD, learning_rate, spide_step
    from neurosim.training.trainer import evaluate
    case, seed, thr = job["case"], job["seed"], job["threads"]
    net, cfg, model = neurosim_model(case, seed, job["impl"] == "neurosim-quirks", job["epochs"])
    layers = LAYERS[case]
    assert [p.name for p in net.spiking_populations] == layers, net.spiking_populations
    init = _ns_init_stats(model)
    opt = SGD(cfg.momentum, cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    xtr, ytr, xte, yte = data["xtr"], data["ytr"], data["xte"], data["yte"]

    def test():
        t0 = time.perf_counter()
        ev = evaluate(model, cfg, xte, yte, n_threads=thr)
        return ev["accuracy"], ev["loss"], time.perf_counter() - t0

    acc, tl, tw = test()
    emit(job, 0, dict(test_accuracy=acc, test_loss=tl, test_wall_s=tw, init=init,
                      config=cfg.to_dict()))
    it = 0
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        perm = rng.permutation(len(xtr))          # the trainer's batch order
        batches = [perm[i:i + cfg.batch_size] for i in range(0, len(xtr), cfg.batch_size)]
        sums = dict(loss=0.0, correct=0, n=0)
        fr = {l: 0.0 for l in layers}
        br = {l: 0.0 for l in layers}
        for idx in batches:
            lr = learning_rate(cfg, epoch, it)
            r = spide_step(model, xtr[idx], ytr[idx], cfg, rng, lr, opt, n_threads=thr)
            it += 1
            B = r.batch
            sums["loss"] += r.loss * B
            sums["correct"] += r.correct
            sums["n"] += B
            for l in layers:
                fr[l] += float(np.mean(r.forward.counts[l])) / cfg.T * B
                br[l] += float(np.mean(r.backward.counts[l].astype(np.int64)
                                       + r.backward.counts_neg[l])) / cfg.T_b * B
        train_w = time.perf_counter() - t0
        acc, tl, tw = test()
        n = sums["n"]
        emit(job, epoch + 1, dict(
            test_accuracy=acc, test_loss=tl, train_loss=sums["loss"] / n,
            train_accuracy=sums["correct"] / n, lr=learning_rate(cfg, epoch, it - 1),
            train_wall_s=train_w, test_wall_s=tw, epoch_wall_s=train_w + tw,
            fwd_rate={l: fr[l] / n for l in layers}, bwd_rate={l: br[l] / n for l in layers}))


# ======================================================================================
# records, workers
# ======================================================================================
def emit(job, epoch, d):
    extra = dict(epoch=epoch, seed=job["seed"], n_train=job["n_train"], n_test=job["n_test"],
                 epochs=job["epochs"], data=job["data_fingerprint"],
                 reference_commit=REF_COMMIT if job["impl"] == REF_IMPL else None)
    extra.update({k: v for k, v in d.items() if k != "test_accuracy"})
    a = d["test_accuracy"]
    H.record(BENCH, job["case"], job["impl"], "test_accuracy", "fraction", median=a, min=a,
             max=a, n_runs=1, threads=job["threads"], batch=COMMON_HP["batch_size"],
             dtype="float32", seed=job["seed"], extra=extra, path=job.get("out"))


def worker(job):
    import numpy as np
    d = np.load(job["data_path"])
    data = {k: d[k] for k in ("xtr", "ytr", "xte", "yte")}
    if job["impl"] == REF_IMPL:
        run_reference(job, data)
    else:
        H.check_threads(job["threads"])
        run_neurosim(job, data)


def prepare_data(max_train, max_test, folder):
    import numpy as np
    from neurosim.training.trainer import _fingerprint, load_data
    _, xtr, ytr, xte, yte = load_data("fashion-mnist")
    xtr, ytr, xte, yte = xtr[:max_train], ytr[:max_train], xte[:max_test], yte[:max_test]
    path = Path(folder) / "fidelity-data.npz"
    np.savez(path, xtr=xtr, ytr=ytr.astype(np.int64), xte=xte, yte=yte.astype(np.int64))
    return str(path), _fingerprint(xtr, ytr, xte, yte), len(xtr), len(xte)


def run_jobs(args):
    prov = H.provenance()
    ref_dir = args.ref_dir or os.environ.get("SPIDE_REF_DIR")
    ref_python = args.ref_python or os.environ.get("SPIDE_REF_PYTHON") or sys.executable
    impls = [IMPLS[i] for i in args.impls.split(",")]
    if REF_IMPL in impls and not ref_dir:
        raise SystemExit("the reference implementation needs SPIDE_REF_DIR (or --ref-dir): "
                         "the folder holding github.com/pkuxmq/SPIDE-FSNN at 54e4338")
    codes = []
    with tempfile.TemporaryDirectory() as tmp:
        path, fp, n_tr, n_te = prepare_data(args.max_train, args.max_test, tmp)
        for case in args.cases.split(","):
            for seed in [int(s) for s in args.seeds.split(",")]:
                for impl in impls:
                    job = dict(case=case, impl=impl, seed=seed, epochs=args.epochs,
                               threads=args.threads, data_path=path, data_fingerprint=fp,
                               n_train=n_tr, n_test=n_te, ref_dir=ref_dir, out=args.out)
                    env = H.thread_env(args.threads, cache=True)
                    env[H._ENV_PROVENANCE] = json.dumps(prov)
                    py = ref_python if impl == REF_IMPL else sys.executable
                    print(f"[fidelity] {case} {impl} seed {seed}: {args.epochs} epochs on "
                          f"{n_tr} / {n_te} samples", file=sys.stderr, flush=True)
                    codes.append(subprocess.run(
                        [py, "-m", "benchmarks.bench_fidelity", "--worker", json.dumps(job)],
                        env=env, cwd=H.REPO_ROOT).returncode)
    return max(codes) if codes else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="lenet_mnist")
    ap.add_argument("--impls", default="reference,neurosim,neurosim-quirks")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-train", type=int, default=2000)
    ap.add_argument("--max-test", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ref-dir", default=None)
    ap.add_argument("--ref-python", default=None)
    ap.add_argument("--out", default=None, help="records file (default results/fidelity.jsonl)")
    ap.add_argument("--table", action="store_true", help="print the docs table and exit")
    ap.add_argument("--compare-step", action="store_true",
                    help="one training step of both on the same weights, batch and masks")
    ap.add_argument("--compare-masks", action="store_true",
                    help="with --compare-step: also with the model's dropout (same masks)")
    ap.add_argument("--compare-batch", type=int, default=128)
    ap.add_argument("--compare-dyadic", action="store_true",
                    help="with --compare-step: weights and inputs on a dyadic grid (exact sums)")
    ap.add_argument("--compare-out", default=None, help="write the comparison as JSON")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--compare-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--lockstep", type=int, default=0, metavar="K",
                    help="train both K steps from the same weights on the same batches and "
                         "dropout masks (neurosim with and without --spide-quirks); compare "
                         "the updates")
    ap.add_argument("--lockstep-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    if args.compare_worker:
        compare_reference(json.loads(args.compare_worker))
        return 0
    if args.lockstep_worker:
        lockstep_reference(json.loads(args.lockstep_worker))
        return 0
    if args.compare_step:
        return run_compare(args)
    if args.lockstep:
        return run_lockstep(args)
    if args.table:
        print(table(H.load_records([args.out or H.RESULTS_DIR / f"{BENCH}.jsonl"])))
        for name, fn in (("fidelity_step.json", step_table),
                         ("fidelity_step_dyadic.json", step_table),
                         ("fidelity_lockstep.json", lockstep_table)):
            path = H.RESULTS_DIR / name
            if path.is_file():
                print(fn(json.loads(path.read_text())["results"]))
        return 0
    return run_jobs(args)


# ======================================================================================
# one step side by side (same weights, same batch, same masks)
# ======================================================================================
#: neurosim projection -> (attribute path of the authors' module, its parameter attribute)
REF_MODULES = {
    "lenet_mnist": {"F": ("network_x", "conv"), "W2": ("network_s1", "conv"),
                    "W4": ("network_s2", "fc"), "readout": (None, "classifier")},
    "convnetf_mnist": {"F": ("network_x", "conv"), "W1": ("network_s1", "conv"),
                       "W2": ("network_s2", "conv"), "B": ("network_s3", "convT"),
                       "readout": (None, "classifier")},
}


def _to_chw(flat, shape):
    """neurosim's channel-last flat [B, n] -> [B, C, H, W] (1-D populations unchanged)."""
    if len(shape) != 3:
        return flat
    C, Hh, W = shape
    return flat.reshape(len(flat), Hh, W, C).transpose(0, 3, 1, 2)


def _dense_to_torch(w, pre_shape, post_shape):
    """neurosim dense [n_pre, n_post] (channel-last orders) -> torch Linear [n_post, n_pre]
    with C, H, W flattening of a shaped pre population."""
    import numpy as np
    assert len(post_shape) == 1
    if len(pre_shape) == 3:
        C, Hh, W = pre_shape
        w = w.reshape(Hh, W, C, -1).transpose(3, 2, 0, 1).reshape(w.shape[1], -1)
        return np.ascontiguousarray(w)
    return np.ascontiguousarray(w.T)


def _readout_to_torch(Cw, out_shape):
    """neurosim readout C [K, n_out] (channel-last) -> torch [K, n_out] (C, H, W order)."""
    import numpy as np
    if len(out_shape) != 3:
        return Cw
    C, Hh, W = out_shape
    return np.ascontiguousarray(Cw.reshape(len(Cw), Hh, W, C).transpose(0, 3, 1, 2)
                                .reshape(len(Cw), -1))


def compare_prepare(case, seed, n, masks_on, quirks, folder, data, dyadic=False):
    """neurosim's side of one step; everything the authors' side needs, in its layouts.

    ``dyadic``: weights rounded to multiples of 2^-10 and inputs to 2^-6, so that every
    forward sum is exact in float32 whatever the order (``shared/spec/SPIDE.md`` oracle 1)."""
    import numpy as np
    from neurosim.training.spide import dropout_masks, spide_phases
    net, cfg, model = neurosim_model(case, seed, quirks=quirks)
    if not masks_on:
        cfg = dataclasses.replace(cfg, dropout={})
    x, y = data["xtr"][:n], data["ytr"][:n]
    if dyadic:
        for name, p in model.parameters().items():
            p[...] = np.round(p * 2.0 ** 10) / 2.0 ** 10
        for name, pr in net.projections.items():
            if pr.has_weights and name not in model.raw:
                pr.weight = model.parameters()[f"{name}.weight"]
        model.apply_norm_cap(cfg.norm_cap)
        x = (np.round(x * 64.0) / 64.0).astype(x.dtype)
    masks = dropout_masks(model, cfg, n, np.random.default_rng(1234))
    r = spide_phases(model, x, y, cfg, np.random.default_rng(1234), train=True)
    for k in masks:
        assert np.array_equal(masks[k], r.masks[k])
    d = dict(x=x, y=y.astype(np.int64), loss=np.float64(r.loss))
    params = model.parameters()
    for name, (_, attr) in REF_MODULES[case].items():
        if name == "readout":
            out_shape = net.populations[model.output].shape
            d["w:readout"] = _readout_to_torch(params["readout.weight"], out_shape)
            d["b:readout"] = params["readout.bias"]
            d["g:readout.w"] = _readout_to_torch(r.grads["readout.weight"], out_shape)
            d["g:readout.b"] = r.grads["readout.bias"]
            continue
        pr = net.projections[name]
        w, g = params[f"{name}.weight"], r.grads[f"{name}.weight"]
        if pr.kind == "dense":
            w = _dense_to_torch(w, net.populations[pr.pre].shape, net.populations[pr.post].shape)
            g = _dense_to_torch(g, net.populations[pr.pre].shape, net.populations[pr.post].shape)
        d[f"w:{name}"], d[f"g:{name}.w"] = w, g
        if pr.bias is not None:
            d[f"b:{name}"], d[f"g:{name}.b"] = params[f"{name}.bias"], r.grads[f"{name}.bias"]
    for name, m in masks.items():
        d[f"mask:{name}"] = _to_chw(m, net.populations[net.projections[name].post].shape)
    for l in LAYERS[case]:
        shape = net.populations[l].shape
        d[f"fwd:{l}"] = _to_chw(r.forward.counts[l], shape).astype(np.int32)
        nb = r.backward.counts[l].astype(np.int64) + r.backward.counts_neg[l]
        d[f"bwd:{l}"] = _to_chw(nb, shape).astype(np.int32)
        d[f"beta:{l}"] = _to_chw(r.backward.rates(l), shape)
    path = Path(folder) / "compare.npz"
    np.savez(path, **d)
    return str(path), dict(T=cfg.T, T_b=cfg.T_b, kappa=cfg.kappa, dropout=dict(cfg.dropout))


def compare_reference(job):
    """The authors' side of one step on neurosim's weights, batch and masks; the comparison."""
    import numpy as np
    import torch
    import torch.nn as nn
    case = job["case"]
    torch.set_num_threads(job["threads"])
    d = dict(np.load(job["path"]))
    T, T_b, kappa = job["T"], job["T_b"], job["kappa"]
    model = reference_model(job["ref_dir"], case, T, T_b)
    mods = {}
    with torch.no_grad():
        for name, (path, attr) in REF_MODULES[case].items():
            owner = model if path is None else getattr(model, path)
            m = getattr(owner, attr)
            mods[name] = (owner, m)
            wname = "weight_w" if hasattr(m, "weight_w") else "weight"
            getattr(m, wname).copy_(torch.from_numpy(d[f"w:{name}"]).float())
            if f"b:{name}" in d:
                m.bias.copy_(torch.from_numpy(d[f"b:{name}"]).float())
        for name, (owner, m) in mods.items():
            drop = getattr(owner, "drop", None)
            if drop is None:
                continue
            if f"mask:{name}" in d:
                fixed = torch.from_numpy(d[f"mask:{name}"]).float()
                drop.reset_mask = (lambda x, drop=drop, fixed=fixed:
                                   setattr(drop, "mask", fixed) or fixed)
            else:
                drop.dropout = 0.0
    model.train()
    x = torch.from_numpy(d["x"]).float()
    y = torch.from_numpy(d["y"]).long()
    out = model(x)
    loss = nn.CrossEntropyLoss()(out, y)
    model.zero_grad()
    (loss * kappa).backward()
    f = model.snn_spide_conv.snn_func
    layers = LAYERS[case]
    res = dict(case=case, loss=dict(reference=float(loss.detach()), neurosim=float(d["loss"])),
               layers={}, grads={})
    bwd = f.last_backward_firing_rate[::-1]
    for l, a, nb in zip(layers, f.last_forward_firing_rate, bwd):
        cnt_ref = np.rint(a.detach().numpy().astype(np.float64) * T).astype(np.int64)
        cnt_ns = d[f"fwd:{l}"]
        nb_ref = np.rint(nb.detach().numpy().astype(np.float64) * T_b).astype(np.int64)
        nb_ns = d[f"bwd:{l}"]
        res["layers"][l] = dict(
            n=int(cnt_ns.size), fwd_rate_ref=float(cnt_ref.mean() / T),
            fwd_rate_ns=float(cnt_ns.mean() / T),
            fwd_counts_differ=float(np.mean(cnt_ref != cnt_ns)),
            fwd_max_count_diff=int(np.max(np.abs(cnt_ref - cnt_ns))),
            bwd_rate_ref=float(nb_ref.mean() / T_b), bwd_rate_ns=float(nb_ns.mean() / T_b),
            bwd_counts_differ=float(np.mean(nb_ref != nb_ns)))
    for name, (owner, m) in mods.items():
        wname = "weight_w" if hasattr(m, "weight_w") else "weight"
        pairs = [("w", getattr(m, wname).grad)]
        if getattr(m, "bias", None) is not None:
            pairs.append(("b", m.bias.grad))
        for k, gref in pairs:
            gns = d[f"g:{name}.{k}"].astype(np.float64).ravel()
            gr = gref.detach().numpy().astype(np.float64).ravel() / kappa
            nr, nn_ = float(np.linalg.norm(gr)), float(np.linalg.norm(gns))
            res["grads"][f"{name}.{k}"] = dict(
                norm_ref=nr, norm_ns=nn_, ratio_ns_over_ref=nn_ / nr if nr else None,
                cosine=float(gr @ gns / (nr * nn_)) if nr and nn_ else None)
    print(json.dumps(res))


def run_compare(args):
    ref_dir = args.ref_dir or os.environ.get("SPIDE_REF_DIR")
    ref_python = args.ref_python or os.environ.get("SPIDE_REF_PYTHON") or sys.executable
    if not ref_dir:
        raise SystemExit("--compare-step needs SPIDE_REF_DIR (or --ref-dir)")
    import numpy as np
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        dpath, _, _, _ = prepare_data(args.compare_batch, 1, tmp)
        data = dict(np.load(dpath))
        for case in args.cases.split(","):
            for seed in [int(s) for s in args.seeds.split(",")]:
                variants = [(False, False)] + ([(True, False), (True, True)]
                                               if args.compare_masks else [])
                for masks_on, quirks in variants:
                    path, info = compare_prepare(case, seed, args.compare_batch, masks_on,
                                                 quirks, tmp, data, args.compare_dyadic)
                    job = dict(case=case, path=path, ref_dir=ref_dir, threads=args.threads,
                               **{k: info[k] for k in ("T", "T_b", "kappa")})
                    env = H.thread_env(args.threads, cache=True)
                    out = subprocess.run([ref_python, "-m", "benchmarks.bench_fidelity",
                                          "--compare-worker", json.dumps(job)], env=env,
                                         cwd=H.REPO_ROOT, capture_output=True, text=True)
                    if out.returncode:
                        sys.stderr.write(out.stderr)
                        return out.returncode
                    res = json.loads(out.stdout.strip().splitlines()[-1])
                    res.update(seed=seed, batch=args.compare_batch, dropout=info["dropout"],
                               spide_quirks=quirks, dyadic=bool(args.compare_dyadic))
                    results.append(res)
                    print(format_compare(res))
    _write_compare(args, results)
    return 0


def _ref_layout_params(net, model):
    """neurosim's parameters in the authors' layouts: name -> (weight, bias or None)."""
    params = model.parameters()
    out = {}
    for name, pr in net.projections.items():
        if not pr.has_weights:
            continue
        w = params[f"{name}.weight"]
        if pr.kind == "dense":
            w = _dense_to_torch(w, net.populations[pr.pre].shape, net.populations[pr.post].shape)
        out[name] = (w.copy(), None if pr.bias is None else params[f"{name}.bias"].copy())
    out["readout"] = (_readout_to_torch(params["readout.weight"],
                                        net.populations[model.output].shape).copy(),
                      params["readout.bias"].copy())
    return out


def lockstep_prepare(case, seed, n, steps, quirks, folder, data):
    """neurosim trains ``steps`` batches from its initial weights; the initial weights, the
    batches' dropout masks and the final weights, in the authors' layouts."""
    import numpy as np
    from neurosim.training.spide import SGD, dropout_masks, spide_step
    net, cfg, model = neurosim_model(case, seed, quirks=quirks)
    d = {}
    for name, (w, b) in _ref_layout_params(net, model).items():
        d[f"w0:{name}"] = w
        if b is not None:
            d[f"b0:{name}"] = b
    opt = SGD(cfg.momentum, cfg.weight_decay)
    losses = []
    for k in range(steps):
        x, y = data["xtr"][k * n:(k + 1) * n], data["ytr"][k * n:(k + 1) * n]
        masks = dropout_masks(model, cfg, n, np.random.default_rng(1000 + k))
        for name, m in masks.items():
            d[f"mask{k}:{name}"] = _to_chw(m, net.populations[net.projections[name].post].shape)
        r = spide_step(model, x, y, cfg, np.random.default_rng(1000 + k), cfg.lr, opt)
        losses.append(float(r.loss))
    for name, (w, b) in _ref_layout_params(net, model).items():
        d[f"w1:{name}"] = w
        if b is not None:
            d[f"b1:{name}"] = b
    d["losses"] = np.array(losses)
    d["x"], d["y"] = data["xtr"][:steps * n], data["ytr"][:steps * n].astype(np.int64)
    path = Path(folder) / "lockstep.npz"
    np.savez(path, **d)
    return str(path), dict(T=cfg.T, T_b=cfg.T_b, kappa=cfg.kappa, lr=cfg.lr,
                           momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           dropout=dict(cfg.dropout))


def lockstep_reference(job):
    """The authors' model from neurosim's initial weights, trained on the same batches with
    the same dropout masks; its updates against neurosim's."""
    import numpy as np
    import torch
    import torch.nn as nn
    case, n, steps = job["case"], job["n"], job["steps"]
    torch.set_num_threads(job["threads"])
    d = dict(np.load(job["path"]))
    model = reference_model(job["ref_dir"], case, job["T"], job["T_b"])
    mods = {}
    with torch.no_grad():
        for name, (path, attr) in REF_MODULES[case].items():
            owner = model if path is None else getattr(model, path)
            m = getattr(owner, attr)
            wname = "weight_w" if hasattr(m, "weight_w") else "weight"
            mods[name] = (owner, m, wname)
            getattr(m, wname).copy_(torch.from_numpy(d[f"w0:{name}"]).float())
            if f"b0:{name}" in d:
                m.bias.copy_(torch.from_numpy(d[f"b0:{name}"]).float())
    kappa = job["kappa"]
    opt = torch.optim.SGD(model.parameters(), lr=job["lr"] / kappa, momentum=job["momentum"],
                          weight_decay=job["weight_decay"])
    x_all = torch.from_numpy(d["x"]).float()
    y_all = torch.from_numpy(d["y"]).long()
    losses = []
    model.train()
    for k in range(steps):
        for name, (owner, m, _) in mods.items():
            drop = getattr(owner, "drop", None)
            if drop is None:
                continue
            key = f"mask{k}:{name}"
            if key in d:
                fixed = torch.from_numpy(d[key]).float()
                drop.reset_mask = (lambda x, drop=drop, fixed=fixed:
                                   setattr(drop, "mask", fixed) or fixed)
            else:
                drop.dropout = 0.0
        x, y = x_all[k * n:(k + 1) * n], y_all[k * n:(k + 1) * n]
        out = model(x)
        loss = nn.CrossEntropyLoss()(out, y)
        opt.zero_grad()
        (loss * kappa).backward()
        opt.step()
        losses.append(float(loss.detach()))
    res = dict(case=case, steps=steps, batch=n, losses=dict(reference=losses,
                                                              neurosim=d["losses"].tolist()),
               params={})
    for name, (owner, m, wname) in mods.items():
        pairs = [("w", getattr(m, wname))]
        if getattr(m, "bias", None) is not None:
            pairs.append(("b", m.bias))
        for k, p in pairs:
            p0 = d[f"{k}0:{name}"].astype(np.float64).ravel()
            p1 = d[f"{k}1:{name}"].astype(np.float64).ravel()
            pr = p.detach().numpy().astype(np.float64).ravel()
            ur, un = pr - p0, p1 - p0
            nr, nn_ = float(np.linalg.norm(ur)), float(np.linalg.norm(un))
            res["params"][f"{name}.{k}"] = dict(
                update_norm_ref=nr, update_norm_ns=nn_,
                ratio_ns_over_ref=nn_ / nr if nr else None,
                cosine=float(ur @ un / (nr * nn_)) if nr and nn_ else None,
                rel_diff=float(np.linalg.norm(ur - un) / nr) if nr else None)
    print(json.dumps(res))


def run_lockstep(args):
    ref_dir = args.ref_dir or os.environ.get("SPIDE_REF_DIR")
    ref_python = args.ref_python or os.environ.get("SPIDE_REF_PYTHON") or sys.executable
    if not ref_dir:
        raise SystemExit("--lockstep needs SPIDE_REF_DIR (or --ref-dir)")
    import numpy as np
    results = []
    n, K = args.compare_batch, args.lockstep
    with tempfile.TemporaryDirectory() as tmp:
        dpath, _, _, _ = prepare_data(n * K, 1, tmp)
        data = dict(np.load(dpath))
        for case in args.cases.split(","):
            for seed in [int(s) for s in args.seeds.split(",")]:
                for quirks in (False, True):
                    path, info = lockstep_prepare(case, seed, n, K, quirks, tmp, data)
                    job = dict(case=case, path=path, ref_dir=ref_dir, threads=args.threads,
                               n=n, steps=K, **{k: v for k, v in info.items() if k != "dropout"})
                    env = H.thread_env(args.threads, cache=True)
                    out = subprocess.run([ref_python, "-m", "benchmarks.bench_fidelity",
                                          "--lockstep-worker", json.dumps(job)], env=env,
                                         cwd=H.REPO_ROOT, capture_output=True, text=True)
                    if out.returncode:
                        sys.stderr.write(out.stderr)
                        return out.returncode
                    res = json.loads(out.stdout.strip().splitlines()[-1])
                    res.update(seed=seed, dropout=info["dropout"], spide_quirks=quirks)
                    results.append(res)
                    print(format_lockstep(res))
    _write_compare(args, results)
    return 0


def format_lockstep(res):
    lines = [f"{res['case']} seed {res['seed']}: {res['steps']} SGD steps of {res['batch']} "
             f"from the same weights, same batches and dropout masks {res['dropout'] or 'off'}"
             f"{', neurosim --spide-quirks' if res['spide_quirks'] else ''}; losses reference "
             + ", ".join(f"{v:.4f}" for v in res["losses"]["reference"]) + "; neurosim "
             + ", ".join(f"{v:.4f}" for v in res["losses"]["neurosim"]),
             "| parameter | update norm neurosim / ref | cosine of the updates | "
             "‖Δ_ns − Δ_ref‖ / ‖Δ_ref‖ |", "|---|--:|--:|--:|"]
    for k, v in res["params"].items():
        if v["ratio_ns_over_ref"] is None or v["cosine"] is None:
            lines.append(f"| {k} | norms {v['update_norm_ns']:.3g} / {v['update_norm_ref']:.3g}"
                         " | — | — |")
        else:
            lines.append(f"| {k} | {v['ratio_ns_over_ref']:.4f} | {v['cosine']:.5f} | "
                         f"{v['rel_diff']:.4f} |")
    return "\n".join(lines) + "\n"


def _write_compare(args, results):
    """``--compare-out``: the results with the provenance of the run."""
    if args.compare_out:
        import datetime
        prov = dict(H.provenance(), reference_commit=REF_COMMIT,
                    date=datetime.datetime.now(datetime.timezone.utc).isoformat(
                        timespec="seconds"), threads=args.threads,
                    command="python -m benchmarks.bench_fidelity " + " ".join(sys.argv[1:]))
        Path(args.compare_out).write_text(json.dumps(dict(provenance=prov, results=results),
                                                     indent=1) + "\n")


def format_compare(res):
    lines = [f"{res['case']} seed {res['seed']} batch {res['batch']} dropout "
             f"{res['dropout'] or 'off'}{', neurosim --spide-quirks' if res['spide_quirks'] else ''}"
             f": loss reference {res['loss']['reference']:.6f}, "
             f"neurosim {res['loss']['neurosim']:.6f}",
             "| layer | fwd rate ref / neurosim | counts differ | bwd rate ref / neurosim | "
             "bwd counts differ |", "|---|---|--:|---|--:|"]
    for l, v in res["layers"].items():
        lines.append(f"| {l} | {v['fwd_rate_ref']:.4f} / {v['fwd_rate_ns']:.4f} | "
                     f"{100 * v['fwd_counts_differ']:.3f} % | {v['bwd_rate_ref']:.4f} / "
                     f"{v['bwd_rate_ns']:.4f} | {100 * v['bwd_counts_differ']:.3f} % |")
    lines += ["", "| parameter | norm ratio neurosim / ref | cosine |", "|---|--:|--:|"]
    for k, v in res["grads"].items():
        if v["norm_ref"] == 0 and v["norm_ns"] == 0:
            lines.append(f"| {k} | both exactly 0 | — |")
        elif v["ratio_ns_over_ref"] is None or v["cosine"] is None:
            lines.append(f"| {k} | norms {v['norm_ns']:.3g} / {v['norm_ref']:.3g} | — |")
        else:
            lines.append(f"| {k} | {v['ratio_ns_over_ref']:.4f} | {v['cosine']:.5f} |")
    return "\n".join(lines) + "\n"


# ======================================================================================
# the docs table
# ======================================================================================
def table(records):
    """Markdown: one row per (case, n_train, impl, seed), test accuracy / train loss per epoch."""
    recs = [r for r in records if r.get("bench") == BENCH and r.get("metric") == "test_accuracy"]
    runs = {}
    for r in recs:
        e = r["extra"]
        key = (r["case"], e["n_train"], e["n_test"], r["impl"], r["seed"])
        runs.setdefault(key, {})[e["epoch"]] = r
    lines = []
    for case in CASES:
        keys = sorted(k for k in runs if k[0] == case)
        if not keys:
            continue
        E = max(max(runs[k]) for k in keys)
        lines.append(f"**{case}** (Fashion-MNIST; test accuracy / training loss per epoch; "
                     "epoch 0: initial weights)\n")
        lines.append("| train / test samples | impl | seed | " +
                     " | ".join(f"epoch {e}" for e in range(E + 1)) + " | s per epoch |")
        lines.append("|---|---|--:|" + "---|" * (E + 1) + "--:|")
        for k in keys:
            rr = runs[k]
            cells = []
            for e in range(E + 1):
                r = rr.get(e)
                if r is None:
                    cells.append("")
                elif e == 0:
                    cells.append(f"{r['median']:.4f}")
                else:
                    cells.append(f"{r['median']:.4f} / {r['extra']['train_loss']:.3f}")
            walls = [rr[e]["extra"]["epoch_wall_s"] for e in rr if e > 0]
            wall = f"{sum(walls) / len(walls):.0f}" if walls else ""
            lines.append(f"| {k[1]} / {k[2]} | {k[3]} | {k[4]} | " + " | ".join(cells) +
                         f" | {wall} |")
        lines.append("")
        done = [max(runs[k]) for k in keys if max(runs[k]) > 0]
        if not done:
            continue
        e = min(done)
        lines.append(f"Per-layer rates in training epoch {e} (forward: spikes per neuron and "
                     "step; backward: nonzero ternary spikes per neuron and step; means over "
                     "the epoch's training samples):\n")
        L = LAYERS[case]
        lines.append("| train samples | impl | seed | " +
                     " | ".join(f"{l} fwd / bwd" for l in L) + " |")
        lines.append("|---|---|--:|" + "---|" * len(L))
        for k in keys:
            if e not in runs[k]:
                continue
            x = runs[k][e]["extra"]
            lines.append(f"| {k[1]} | {k[3]} | {k[4]} | " + " | ".join(
                f"{x['fwd_rate'][l]:.4f} / {x['bwd_rate'][l]:.4f}" for l in L) + " |")
        lines.append("")
    return "\n".join(lines)


def _rc(v, ratio="ratio_ns_over_ref"):
    """'ratio / cosine' of one comparison entry."""
    if v[ratio] is None or v["cosine"] is None:
        a, b = (v.get("norm_ns", v.get("update_norm_ns")), v.get("norm_ref", v.get("update_norm_ref")))
        return "both 0" if a == 0 and b == 0 else f"norms {a:.2g} / {b:.2g}"
    return f"{v[ratio]:.4f} / {v['cosine']:.5f}"


def step_table(results):
    """Markdown of ``--compare-step`` results (``results/fidelity_step.json``)."""
    lines = []
    for case in CASES:
        rs = [r for r in results if r["case"] == case]
        if not rs:
            continue
        heads = [("dropout off" if not r["dropout"] else "dropout, neurosim"
                  + (" --spide-quirks" if r["spide_quirks"] else "")) for r in rs]
        grid = ", weights and inputs on a dyadic grid" if rs[0].get("dyadic") else ""
        lines.append(f"**{case}**, one step, batch {rs[0]['batch']}, seed {rs[0]['seed']}{grid}; "
                     "losses (reference / neurosim): " + ", ".join(
                         f"{r['loss']['reference']:.6f} / {r['loss']['neurosim']:.6f}"
                         for r in rs) + "\n")
        lines.append("| layer: spike counts that differ (forward; backward) | " +
                     " | ".join(heads) + " |")
        lines.append("|---|" + "--:|" * len(rs))
        for l in LAYERS[case]:
            lines.append(f"| {l} | " + " | ".join(
                f"{100 * r['layers'][l]['fwd_counts_differ']:.3f} %; "
                f"{100 * r['layers'][l]['bwd_counts_differ']:.3f} %" for r in rs) + " |")
        lines.append("")
        lines.append("| gradient: norm ratio neurosim / reference / cosine | " +
                     " | ".join(heads) + " |")
        lines.append("|---|" + "--:|" * len(rs))
        for k in rs[0]["grads"]:
            lines.append(f"| {k} | " + " | ".join(_rc(r["grads"][k]) for r in rs) + " |")
        lines.append("")
    return "\n".join(lines)


def lockstep_table(results):
    """Markdown of ``--lockstep`` results (``results/fidelity_lockstep.json``)."""
    lines = []
    for case in CASES:
        rs = [r for r in results if r["case"] == case]
        if not rs:
            continue
        heads = ["neurosim" + (" --spide-quirks" if r["spide_quirks"] else "") for r in rs]
        lines.append(f"**{case}**, {rs[0]['steps']} steps of {rs[0]['batch']}, seed "
                     f"{rs[0]['seed']}, dropout {rs[0]['dropout'] or 'off'}; losses per step "
                     "(reference; " + "; ".join(heads) + "): " + "; ".join(
                         [", ".join(f"{v:.4f}" for v in rs[0]["losses"]["reference"])] +
                         [", ".join(f"{v:.4f}" for v in r["losses"]["neurosim"]) for r in rs])
                     + "\n")
        lines.append("| parameter: update norm ratio / cosine / ‖Δ_ns − Δ_ref‖/‖Δ_ref‖ | " +
                     " | ".join(heads) + " |")
        lines.append("|---|" + "--:|" * len(rs))
        for k in rs[0]["params"]:
            cells = []
            for r in rs:
                v = r["params"][k]
                c = _rc(v)
                if v["rel_diff"] is not None and v["cosine"] is not None:
                    c += f" / {v['rel_diff']:.4f}"
                cells.append(c)
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
