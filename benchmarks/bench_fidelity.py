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
    from neurosim.training.trainer import _batches, evaluate
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
        _, batches = _batches(len(xtr), cfg.batch_size, rng)
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
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    if args.table:
        print(table(H.load_records([args.out or H.RESULTS_DIR / f"{BENCH}.jsonl"])))
        return 0
    return run_jobs(args)


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
        lines.append(f"Per-layer rates, last recorded epoch (forward spikes / backward "
                     f"nonzero ternary spikes per neuron and step, training batches):\n")
        L = LAYERS[case]
        lines.append("| train samples | impl | seed | epoch | " +
                     " | ".join(f"{l} fwd / bwd" for l in L) + " |")
        lines.append("|---|---|--:|--:|" + "---|" * len(L))
        for k in keys:
            e = max(runs[k])
            if e == 0:
                continue
            x = runs[k][e]["extra"]
            lines.append(f"| {k[1]} | {k[3]} | {k[4]} | {e} | " + " | ".join(
                f"{x['fwd_rate'][l]:.4f} / {x['bwd_rate'][l]:.4f}" for l in L) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
