"""Benchmark: one SPIDE training step per sample, event-driven neurosim vs dense frameworks.

    python -m benchmarks.bench_training                    # lenet_mnist, convnetf_mnist; 1 and 2 threads
    python -m benchmarks.bench_training --quick            # 5 runs, no memory-vs-T check
    python -m benchmarks.bench_training --cases lenet_mnist --threads 2
    python -m benchmarks.bench_training --cases alexnetf_cifar10,cifarnetf_cifar100 \
        --reps 3 --torch-batch 8 --torch-reps 2            # the paper's CIFAR networks

The CIFAR cases (T 30, T_b 250, the model files' κ and dropout) take synthetic CIFAR-shaped
images (:func:`synthetic_cifar`, fixed seed); a dense PyTorch step of them takes seconds
per sample, so ``--torch-batch`` times torch-dense on the first samples of the batch only
and ``--torch-reps`` sets its repetitions (both recorded: the torch record's ``batch``,
``extra.batch_torch_dense`` of the speedup).  Their numpy-oracle check runs on a
channel-scaled copy of the network (:func:`scaled_oracle_check`: the full networks' dense
matrices would take ~13 GB) and compares both phases' spike counts.  Every case also gets
``event_limit_fraction_forward`` / ``_backward`` records when a conv scatter record of
this machine exists (:func:`event_limit_records`).

What is timed (per case, per thread count, each thread count in a fresh worker process
pinned with :mod:`benchmarks._harness`):

* ``neurosim``: :func:`neurosim.training.spide_step` on a batch of 128 — forward phase
  (T = 30), readout + cross-entropy, backward phase (T_b = 100), local weight updates, SGD
  step; everything the trainer does per batch.
* ``torch-dense``: the same maths in dense PyTorch (``benchmarks/torch_spide.py``): every
  step of both phases is a full conv / linear / pool on the batch, the reference code's way.
* ``numpy-dense``: the dense numpy oracle of the test suite (``tests/reference.py``,
  float64, dense n_pre x n_post matrices, Python loop over samples) — far too slow to time
  at batch 128, so it runs once on the first 2 samples: its spike counts must equal
  neurosim's on those samples exactly (the "identical spike counts" check), and its one
  wall time is recorded with ``n_runs = 1`` and ``batch = 2`` for scale only.

Same weights (neurosim's model file, seed 0, copied into the PyTorch tensors), same inputs
(the first 128 Fashion-MNIST training images when Debian's ``dataset-fashion-mnist`` is
installed, else random N(0, 1) images — recorded as ``input``), same dropout masks, same
thread count; the learning rate is 0 during timing so that every repetition does the same
work on the same weights (the update arithmetic still runs).  The two implementations
alternate; medians of >= 5 runs after an untimed warm-up (compilation for neurosim,
reported separately as ``compile_s``).

Peak memory of a step is the growth of the process's peak resident set during the step
(``/proc/self/clear_refs`` resets ``VmHWM`` before the step; the record is
``VmHWM - VmRSS(before)``), measured for neurosim at (T, T_b) = (30, 100) and (60, 200) to
show it does not grow with the number of steps.

Records (``benchmarks/results/training.jsonl``): ``bench: "training"``, ``case`` = model
name, ``impl`` in ``neurosim``, ``torch-dense``, ``numpy-dense``, ``metric`` in
``s_per_sample``, ``speedup_vs_torch-dense``, ``compile_s``, ``peak_mem_mb``, and after all
workers ``speedup_2t_vs_1t`` for neurosim.  ``extra`` holds events per sample per phase,
events/s, per-phase times, spike-count checks and the machine load.
"""
import argparse
import json
import os
import sys
import time
import uuid

import numpy as np

from . import _harness as H

BENCH = "training"
MNIST_CASES = ("lenet_mnist", "convnetf_mnist")
#: the paper's CIFAR networks (T 30, T_b 250): synthetic CIFAR-shaped input
#: (:func:`synthetic_cifar`), spike counts checked on a channel-scaled copy
#: (:func:`scaled_oracle_check`); not run by default (minutes per step for torch-dense).
CIFAR_CASES = ("alexnetf_cifar10", "cifarnetf_cifar100")
CASES = MNIST_CASES + CIFAR_CASES
DEFAULT_CASES = MNIST_CASES
#: ``extra.sitting`` / ``extra.sitting_role`` of the records when set (before/after sittings).
_ENV_SITTING = "NEUROSIM_BENCH_SITTING"


def goal_for(case, metric, threads):
    """Goals of issue 32 (performance round 3): neurosim >= 10x torch-dense for the MNIST
    networks and >= 20x for the CIFAR ones, at 1 and 2 threads; 2 threads >= 1.7x one;
    every phase of ConvNet-F and AlexNet-F within 2x of its event limit (a fraction of
    the limit's speed >= 0.5, :func:`event_limit_records`)."""
    if metric == "speedup_vs_torch-dense":
        return 20.0 if case in CIFAR_CASES else 10.0
    if metric == "speedup_2t_vs_1t" and threads == 2:
        return 1.7
    if metric.startswith("event_limit_fraction") and case in ("convnetf_mnist", "alexnetf_cifar10"):
        return 0.5
    return None


_ENV_RUN = "NEUROSIM_BENCH_RUN_ID"


def _loadavg():
    try:
        return list(os.getloadavg())
    except OSError:  # pragma: no cover
        return None


def _rss_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return None


def peak_step_mb(fn):
    """Growth of the peak resident set (MB) while ``fn()`` runs (Linux /proc)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    before = _rss_kb("VmRSS:")
    fn()
    return (_rss_kb("VmHWM:") - before) / 1024.0


def mem_probe(case, impl, threads, B, seed, T, T_b):
    """Peak memory (MB) of one training step in a fresh process (see ``_probe``)."""
    import subprocess
    env = H.thread_env(threads, cache=True)
    env.pop("NEUROSIM_NO_CACHE", None)       # kernels from the cache: no compiler memory
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_training", "--probe",
                          f"{case},{impl},{B},{seed},{T},{T_b}"], env=env, cwd=H.REPO_ROOT,
                         capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def _probe(spec):
    case, impl, B, seed, T, T_b = spec.split(",")
    B, seed, T, T_b = int(B), int(seed), int(T), int(T_b)
    x, y, _ = load_inputs(B, seed, case)
    net, cfg, model, masks, opt = _setup(case, B, seed, T=T, T_b=T_b)
    _fixed_masks(masks)
    if impl == "neurosim":
        from neurosim.training.spide import spide_step
        from neurosim.kernels import engine, spide  # noqa: F401  (kernels loaded before the baseline)
        rng = np.random.default_rng(seed)
        step = lambda: spide_step(model, x, y, cfg, rng, 0.0, opt)
    else:
        torch = _import_torch()
        from .torch_spide import TorchSPIDE, masks_nchw
        ts = TorchSPIDE(net, model.C, model.c, cfg, model.output)
        xt, yt, mt = torch.tensor(x), torch.tensor(y), masks_nchw(net, masks)
        step = lambda: ts.step(xt, yt, mt, 0.0)
    print(json.dumps(dict(peak_mb=peak_step_mb(step))))


#: per-channel pixel mean and standard deviation (values in [0, 1]) of the CIFAR training
#: sets, the statistics :func:`synthetic_cifar` reproduces.
PIXEL_STATS = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
               "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))}


def synthetic_cifar(B, seed, dataset="cifar10", side=32):
    """``B`` synthetic CIFAR-shaped images ``[B, 3, side, side]`` with the statistics of
    normalised natural images, and a description of what they measure.

    Each image is the sum of a luminance field and, per colour channel, a chroma field
    correlated 0.9 with it; every field is Gaussian noise with an amplitude spectrum
    ~ 1/f^1.4 (natural images have power ~ 1/f^2 and more; the steeper slope stands for
    the blur of 32x32 thumbnails and makes neighbouring pixels correlate ~0.88, the order
    of natural images at this size), zero mean and unit variance per image.  Each image gets a
    contrast (log-normal, sigma 0.4), a brightness (N(0, 0.6)) and a tint (N(0, 0.2) per
    channel); the set is then scaled per channel to the pixel mean and standard deviation
    of the CIFAR training set (:data:`PIXEL_STATS`), clipped to [0, 1], quantised to
    uint8 as the CIFAR files are, and normalised as neurosim's CIFAR loader does
    (``normalize(x, CIFAR_MEAN, CIFAR_STD)``: mean ~0, standard deviation ~1.2 per
    channel, values in about [-2.4, 2.7]).  Fixed ``seed``: the same images every run."""
    from neurosim import datasets as D
    rng = np.random.default_rng(seed)
    mean, std = (np.array(v).reshape(1, 3, 1, 1) for v in PIXEL_STATS[dataset])
    fq = np.fft.fftfreq(side)
    f = np.sqrt(fq[:, None] ** 2 + fq[None, :] ** 2)
    f[0, 0] = np.inf                                     # no DC component
    amp = f ** -1.4

    def field(n):
        g = np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, side, side))) * amp).real
        g -= g.mean(axis=(1, 2), keepdims=True)
        return g / g.std(axis=(1, 2), keepdims=True)
    rho = 0.9
    z = rho * field(B)[:, None] + np.sqrt(1 - rho ** 2) * field(3 * B).reshape(B, 3, side, side)
    z = (rng.lognormal(0.0, 0.4, (B, 1, 1, 1)) * z + rng.normal(0.0, 0.6, (B, 1, 1, 1))
         + rng.normal(0.0, 0.2, (B, 3, 1, 1)))
    z = (z - z.mean(axis=(0, 2, 3), keepdims=True)) / z.std(axis=(0, 2, 3), keepdims=True)
    pix = mean + std * z
    clipped = float(((pix < 0) | (pix > 1)).mean())
    u8 = np.round(np.clip(pix, 0.0, 1.0) * 255).astype(np.uint8)
    x = D.normalize(u8, D.CIFAR_MEAN, D.CIFAR_STD).astype(np.float32)
    xc = x - x.mean(axis=(2, 3), keepdims=True)
    nb = float((xc[..., :, 1:] * xc[..., :, :-1]).sum() / np.sqrt(
        (xc[..., :, 1:] ** 2).sum() * (xc[..., :, :-1] ** 2).sum()))
    cc = np.corrcoef(x.transpose(1, 0, 2, 3).reshape(3, -1))
    stats = dict(channel_mean=x.mean(axis=(0, 2, 3)).round(4).tolist(),
                 channel_std=x.std(axis=(0, 2, 3)).round(4).tolist(),
                 min=float(x.min()), max=float(x.max()), clipped_fraction=round(clipped, 5),
                 neighbour_correlation=round(nb, 4),
                 channel_correlation=[round(float(cc[0, 1]), 4), round(float(cc[0, 2]), 4),
                                      round(float(cc[1, 2]), 4)])
    desc = (f"synthetic {dataset}-shaped images (benchmarks/bench_training.py synthetic_cifar: "
            f"1/f^1.4-spectrum colour noise at {dataset}'s pixel statistics, uint8, normalised "
            f"with CIFAR_MEAN/CIFAR_STD; seed {seed})")
    return x, desc, stats


def load_inputs(B, seed, case="lenet_mnist"):
    """(x [B, C, H, W] float32 normalised, y [B], description): the first Fashion-MNIST
    training images for the MNIST networks (random N(0, 1) images when the data set is
    not installed), :func:`synthetic_cifar` for the CIFAR ones."""
    from neurosim import datasets as D
    if case in CIFAR_CASES:
        ds = "cifar100" if case.endswith("cifar100") else "cifar10"
        x, desc, _ = synthetic_cifar(B, seed, ds)
        classes = 100 if ds == "cifar100" else 10
        y = np.random.default_rng(seed + 7).integers(0, classes, B).astype(np.int64)
        return x, y, desc
    try:
        ds = D.load("fashion-mnist")
        x = D.normalize(ds.x_train[:B], D.FASHION_MNIST_MEAN, D.FASHION_MNIST_STD)
        return (x.reshape(B, 1, 28, 28).astype(np.float32), ds.y_train[:B].astype(np.int64),
                "fashion-mnist train[:%d]" % B)
    except D.DataError:
        rng = np.random.default_rng(seed)
        return (rng.normal(size=(B, 1, 28, 28)).astype(np.float32),
                rng.integers(0, 10, B).astype(np.int64), "random N(0,1) images")


def _setup(case, B, seed, T=None, T_b=None):
    from neurosim.models import load_model
    from neurosim.training.spide import SGD, SPIDEModel
    from neurosim.training.trainer import config_for
    _fixed_masks(None)
    from neurosim.training.spide import dropout_masks
    net = load_model(case, seed=seed)
    over = {}
    if T:
        over["T"] = T
    if T_b:
        over["T_b"] = T_b
    cfg, meta = config_for(net, over)
    model = SPIDEModel(net, _classes(meta), readout=True, seed=seed)
    model.apply_norm_cap(cfg.norm_cap)
    masks = dropout_masks(model, cfg, B, np.random.default_rng(seed + 1))
    opt = SGD(cfg.momentum, cfg.weight_decay)
    return net, cfg, model, masks, opt


def _classes(meta):
    ro = meta.get("readout")
    return int(ro.get("classes", 10)) if isinstance(ro, dict) else 10


def scaled_model(case, div=16, seed=0):
    """The model file ``case`` with every shaped spiking population's channels divided by
    ``div`` (at least 2): the same geometry (input, kernels, strides, the feedback and its
    delay), small enough for the dense numpy oracle, whose dense matrices of the full CIFAR
    networks would take ~13 GB (AlexNet-F's l0 -> l1 alone)."""
    from neurosim.io.model_file import read_model_file, resolve_model_path
    from neurosim.models import model_from_dict
    path = resolve_model_path(case)
    d = read_model_file(path)
    for pop in d["populations"]:
        if pop.get("kind") != "input" and len(pop["shape"]) == 3:
            pop["shape"] = [max(2, pop["shape"][0] // div)] + list(pop["shape"][1:])
    return model_from_dict(d, seed=seed, source=f"{path} (channels / {div})", default_name=case)


def scaled_oracle_check(case, seed=0, div=16, n=2, T=None, T_b=None):
    """neurosim's SPIDE step against the dense numpy oracle (``tests/reference.py``) on a
    channel-scaled copy of ``case`` (:func:`scaled_model`) and ``n`` of its inputs: the
    forward spike counts and the backward phase's positive and negative counts must be
    identical.  Returns the check dict (``identical_spike_counts`` and the mismatches per
    population and phase)."""
    sys.path.insert(0, str(H.REPO_ROOT))
    from tests import reference as R
    from neurosim import losses
    import neurosim.training.spide as S
    from neurosim.training.spide import SGD, SPIDEModel, spide_step
    from neurosim.training.trainer import config_for
    net = scaled_model(case, div, seed)
    over = {k: v for k, v in (("T", T), ("T_b", T_b)) if v}
    cfg, meta = config_for(net, over)
    model = SPIDEModel(net, _classes(meta), readout=True, seed=seed)
    model.apply_norm_cap(cfg.norm_cap)
    saved = S.dropout_masks                 # bench_case has fixed its own (full-batch) masks
    _fixed_masks(None)
    masks = S.dropout_masks(model, cfg, n, np.random.default_rng(seed + 1))
    x, y, _ = load_inputs(n, seed, case)
    _fixed_masks(masks)
    try:
        res = spide_step(model, x, y, cfg, np.random.default_rng(seed), 0.0,
                         SGD(cfg.momentum, cfg.weight_decay))
    finally:
        S.dropout_masks = saved
    f = R.run_phase(net, cfg.T, inputs={model.input: x.astype(np.float64)}, masks=masks)
    a = f["counts"][model.output] / cfg.T
    r = losses.cross_entropy_readout(a, y, model.C, model.c, reduction="mean")
    b = R.run_phase(net, cfg.T_b, backward=True, grad={model.output: cfg.kappa * r.grad},
                    forward=f, masks=masks)
    spiking = [p for p in res.forward.counts if net.populations[p].spiking]
    mism = {"forward": {p: int((f["counts"][p] != res.forward.counts[p]).sum()) for p in spiking},
            "backward_pos": {p: int((b["counts"][p] != res.backward.counts[p]).sum())
                             for p in spiking},
            "backward_neg": {p: int((b["counts_neg"][p] != res.backward.counts_neg[p]).sum())
                             for p in spiking}}
    spikes = {"forward": {p: int(f["counts"][p].sum()) for p in spiking},
              "backward": {p: int(b["counts"][p].sum() + b["counts_neg"][p].sum())
                           for p in spiking}}
    return dict(samples=n, model=f"{case} with channels / {div}", T=cfg.T, T_b=cfg.T_b,
                neurons=int(sum(net.populations[p].n for p in spiking)),
                identical_spike_counts=not any(v for m in mism.values() for v in m.values()),
                mismatched_neurons=mism, spikes=spikes)


_ORIG_MASKS = []


def _fixed_masks(masks):
    """Make spide_step use ``masks`` (the same for every run and for torch);
    ``None`` restores the real mask generator."""
    import neurosim.training.spide as S
    if not _ORIG_MASKS:
        _ORIG_MASKS.append(S.dropout_masks)
    S.dropout_masks = _ORIG_MASKS[0] if masks is None else (lambda *a, **k: masks)


def numpy_check(net, cfg, model, x, y, masks, fwd_counts, n=2):
    """Dense numpy oracle on the first ``n`` samples: forward spike counts must equal
    neurosim's exactly.  Returns (check dict, wall seconds)."""
    sys.path.insert(0, str(H.REPO_ROOT))
    from tests import reference as R
    from neurosim import losses
    t0 = time.perf_counter()
    sub = {k: v[:n] for k, v in masks.items()}
    f = R.run_phase(net, cfg.T, inputs={model.input: x[:n].astype(np.float64)}, masks=sub)
    a = f["counts"][model.output] / cfg.T
    r = losses.cross_entropy_readout(a, y[:n], model.C, model.c, reduction="mean")
    R.run_phase(net, cfg.T_b, backward=True, grad={model.output: cfg.kappa * r.grad},
                forward=f, masks=sub)
    wall = time.perf_counter() - t0
    mism = {p: int((f["counts"][p] != fwd_counts[p][:n]).sum()) for p in fwd_counts
            if net.populations[p].spiking}
    spikes = {p: int(f["counts"][p].sum()) for p in mism}
    return dict(samples=n, identical_spike_counts=not any(mism.values()),
                mismatched_neurons=mism, spikes=spikes), wall


def _import_torch():
    """PyTorch with its own OpenMP defaults: neurosim sets ``OMP_WAIT_POLICY=PASSIVE`` for
    Numba's OpenMP threads (:mod:`neurosim.config`); Numba's layer is started first so it
    keeps that, then the variable is dropped again (unless the user set it) before torch
    loads its own libgomp, so the torch-dense baseline runs as it always did."""
    import numba
    from neurosim import config
    numba.get_num_threads()                  # starts Numba's threading layer now
    if config.OMP_WAIT_POLICY_SET:
        os.environ.pop("OMP_WAIT_POLICY", None)
    import torch
    return torch


def conv_event_rate(threads=1):
    """The event limit: the latest ``propagation`` record of the conv scatter
    (``kernels.scatter.conv_propagate``, events/s) on this machine (same ``machine``
    line) at ``threads``; None when there is none (run ``python -m
    benchmarks.bench_propagation --cases conv --threads 1`` first)."""
    path = H.RESULTS_DIR / "propagation.jsonl"
    if not path.exists():
        return None
    me = H.provenance()["machine"]
    recs = [r for r in H.load_records([path]) if r["case"] == "conv" and r["impl"] == "neurosim"
            and r["metric"] == "events_per_s" and r["threads"] == threads
            and r.get("machine") == me]
    return max(recs, key=lambda r: r.get("date") or "") if recs else None


def event_limit_records(case, threads, B, seed, events, phase_s, extra):
    """Distance of each phase to its event limit: the phase's events per sample at the
    conv scatter's rate (:func:`conv_event_rate`, one thread; the fastest event delivery
    measured here) against its measured time per sample.  One record per phase, metric
    ``event_limit_fraction_<phase>`` = limit time / measured time (1: at the limit; the
    goal "within 2x of its event limit" is >= 0.5); ``extra.distance`` is its inverse."""
    ref = conv_event_rate(1)
    if ref is None:
        print("[bench] no conv scatter record on this machine: no event-limit records "
              "(python -m benchmarks.bench_propagation --cases conv --threads 1)",
              file=sys.stderr)
        return
    rate = ref["median"]
    for phase, ev in events.items():
        t = phase_s[phase]
        limit = ev / rate
        frac = limit / t if t > 0 else float("nan")
        H.record(BENCH, case, "neurosim", f"event_limit_fraction_{phase}", "fraction",
                 median=frac, min=frac, max=frac, n_runs=1, threads=threads, batch=B, seed=seed,
                 goal=goal_for(case, f"event_limit_fraction_{phase}", threads),
                 extra=dict(extra, events_per_sample=ev, phase_s_per_sample=t,
                            limit_s_per_sample=limit, distance=(t / limit if limit else None),
                            conv_events_per_s=rate, conv_record=dict(
                                date=ref.get("date"), commit=ref.get("commit"),
                                threads=ref["threads"]),
                            definition="(events per sample / conv scatter events/s at 1 "
                                       "thread) / measured phase time per sample"))


def bench_case(case, threads, reps, seed, B=128, mem=True, torch_batch=None, torch_reps=None):
    torch = _import_torch()
    from neurosim.training.spide import spide_step
    from .torch_spide import TorchSPIDE, counts_flat, masks_nchw
    torch.set_num_threads(threads)
    run_id = os.environ.get(_ENV_RUN, "")
    sitting = json.loads(os.environ.get(_ENV_SITTING) or "{}")
    load_before = _loadavg()
    TB = min(B, torch_batch or B)
    t_reps = torch_reps or reps
    x, y, input_desc = load_inputs(B, seed, case)
    input_stats = None
    if case in CIFAR_CASES:
        input_stats = synthetic_cifar(B, seed, "cifar100" if case.endswith("cifar100")
                                      else "cifar10")[2]
    net, cfg, model, masks, opt = _setup(case, B, seed)
    _fixed_masks(masks)
    ts = TorchSPIDE(net, model.C, model.c, cfg, model.output)
    xt, yt = torch.tensor(x[:TB]), torch.tensor(y[:TB])
    mt = masks_nchw(net, {k: v[:TB] for k, v in masks.items()})
    rng = np.random.default_rng(seed)

    # compile: first call in this (cache-off) process, on 2 samples
    _fixed_masks({k: v[:2] for k, v in masks.items()})
    t0 = time.perf_counter()
    spide_step(model, x[:2], y[:2], cfg, rng, 0.0, opt, n_threads=threads)
    comp = time.perf_counter() - t0
    _fixed_masks(masks)
    H.record(BENCH, case, "neurosim", "compile_s", "s", median=comp, min=comp, max=comp, n_runs=1,
             threads=threads, batch=2, seed=seed,
             extra=dict(what="first spide_step call of a fresh process (batch 2): Numba "
                             "compilation of every kernel the step uses",
                        numba_cache=os.environ.get("NEUROSIM_NO_CACHE") != "1", run_id=run_id,
                        loadavg=_loadavg(), **sitting))
    # warm-up both (untimed)
    res = spide_step(model, x, y, cfg, rng, 0.0, opt, n_threads=threads)
    ts.step(xt, yt, mt, 0.0)
    ns_t, th_t, ns_ph = [], [], []
    for i in range(max(reps, t_reps)):                  # alternate the implementations
        if i < reps:
            t0 = time.perf_counter()
            res = spide_step(model, x, y, cfg, rng, 0.0, opt, n_threads=threads)
            ns_t.append(time.perf_counter() - t0)
            ns_ph.append((res.fwd_s, res.bwd_s, res.update_s))
        if i < t_reps:
            t0 = time.perf_counter()
            cnt, beta = ts.step(xt, yt, mt, 0.0)
            th_t.append(time.perf_counter() - t0)
    load_after = _loadavg()
    # op counts per sample and checks
    fwd_ev = float(res.fwd_synops.mean())
    bwd_pos, bwd_neg = float(res.bwd_synops_pos.mean()), float(res.bwd_synops_neg.mean())
    events = fwd_ev + bwd_pos + bwd_neg
    tc = counts_flat(net, cnt)
    torch_mism = {p: int((tc[p] != res.forward.counts[p][:TB]).sum()) for p in tc}
    if case in CIFAR_CASES:
        t0 = time.perf_counter()
        np_check = scaled_oracle_check(case, seed)
        np_wall = time.perf_counter() - t0
    else:
        np_check, np_wall = numpy_check(net, cfg, model, x, y, masks, res.forward.counts)
    med = float(np.median(ns_t))
    ph = np.median(np.array(ns_ph), axis=0)
    fwd_rate = {p: float(res.forward.counts[p].mean() / cfg.T) for p in tc}
    bwd_rate = {p: float((res.backward.counts[p] + res.backward.counts_neg[p]).mean() / cfg.T_b)
                for p in tc}
    loadavg = dict(before=load_before, after=load_after)
    common = dict(run_id=run_id, input=input_desc, T=cfg.T, T_b=cfg.T_b, kappa=cfg.kappa,
                  dropout=cfg.dropout, lr_during_timing=0.0, loadavg=loadavg,
                  fwd_firing_rate_per_step=fwd_rate, bwd_firing_rate_per_step=bwd_rate,
                  **sitting)
    if input_stats is not None:
        common["input_stats"] = input_stats
    mem_ns = {}
    if mem:
        steps = ((cfg.T, cfg.T_b),) if case in CIFAR_CASES else \
            ((cfg.T, cfg.T_b), (2 * cfg.T, 2 * cfg.T_b))
        for impl, bb in (("neurosim", B), ("torch-dense", TB)):
            by = {f"T{T}_Tb{Tb}": mem_probe(case, impl, threads, bb, seed, T, Tb)
                  for T, Tb in steps}
            if impl == "neurosim":
                mem_ns = by
            v = by[f"T{cfg.T}_Tb{cfg.T_b}"]
            if v is None:
                continue
            H.record(BENCH, case, impl, "peak_mem_mb", "MB", median=v, min=v, max=v, n_runs=1,
                     threads=threads, batch=bb, seed=seed,
                     extra=dict(run_id=run_id, T=cfg.T, T_b=cfg.T_b, by_steps=by,
                                loadavg=_loadavg(), **sitting,
                                definition="fresh process: peak resident set (VmHWM) during "
                                           "the first training step minus the resident set "
                                           "after loading model, data and libraries"))
    phase_s = dict(forward=ph[0] / B, backward=ph[1] / B, update=ph[2] / B)
    ns_extra = dict(common, events_per_sample=dict(forward=fwd_ev, backward_pos=bwd_pos,
                                                   backward_neg=bwd_neg),
                    neuron_updates_per_sample=dict(forward=float(res.fwd_updates.mean()),
                                                   backward=float(res.bwd_updates.mean())),
                    weight_update_macs_per_sample=float(res.update_macs.mean()),
                    events_per_s=events * B / med,
                    phase_s_per_sample=phase_s,
                    check=np_check,
                    check_torch_dense=dict(samples=TB, mismatched_neurons=torch_mism,
                                           note="float32 sums in a different order: a few "
                                                "neurons at the threshold may differ"),
                    what="neurosim.training.spide_step (forward T, loss, backward T_b, local "
                         "updates, SGD)")
    H.record(BENCH, case, "neurosim", "s_per_sample", "s", median=med / B, min=min(ns_t) / B,
             max=max(ns_t) / B, n_runs=len(ns_t), threads=threads, batch=B, seed=seed,
             dtype="float32", extra=ns_extra)
    tmed = float(np.median(th_t))
    H.record(BENCH, case, "torch-dense", "s_per_sample", "s", median=tmed / TB,
             min=min(th_t) / TB, max=max(th_t) / TB, n_runs=len(th_t), threads=threads,
             batch=TB, seed=seed, dtype="float32",
             extra=dict(common, torch_version=torch.__version__,
                        torch_threads=torch.get_num_threads(),
                        events_per_s_equivalent=events * TB / tmed,
                        warmup="one untimed step at the same batch",
                        what="benchmarks/torch_spide.py TorchSPIDE.step (dense clock-driven)"))
    if case not in CIFAR_CASES:
        H.record(BENCH, case, "numpy-dense", "s_per_sample", "s", median=np_wall / 2,
                 min=np_wall / 2, max=np_wall / 2, n_runs=1, threads=threads, batch=2, seed=seed,
                 dtype="float64",
                 extra=dict(common, what="tests/reference.py run_phase forward + backward on 2 "
                                         "samples (the exactness oracle; not a contender)",
                            check=np_check))
    ns_ps, th_ps = med / B, tmed / TB
    ratios = [(a / TB) / (b / B) for a, b in zip(th_t, ns_t)]
    H.record(BENCH, case, "neurosim", "speedup_vs_torch-dense", "x", median=th_ps / ns_ps,
             min=(min(th_t) / TB) / (max(ns_t) / B), max=(max(th_t) / TB) / (min(ns_t) / B),
             n_runs=min(len(ns_t), len(th_t)), threads=threads, batch=B, seed=seed,
             goal=goal_for(case, "speedup_vs_torch-dense", threads),
             extra=dict(run_id=run_id, definition="median(torch-dense) / median(neurosim), "
                                                  "seconds per sample",
                        batch_neurosim=B, batch_torch_dense=TB,
                        median_of_paired_ratios=float(np.median(ratios)) if ratios else None,
                        identical_spike_counts_numpy=np_check["identical_spike_counts"],
                        loadavg=loadavg, **sitting))
    event_limit_records(case, threads, B, seed,
                        dict(forward=fwd_ev, backward=bwd_pos + bwd_neg), phase_s,
                        dict(run_id=run_id, loadavg=loadavg, **sitting))
    print(f"[bench] {case} threads={threads}: neurosim {1e3 * med / B:.2f} ms/sample "
          f"(fwd {1e3 * ph[0] / B:.2f}, bwd {1e3 * ph[1] / B:.2f}, upd {1e3 * ph[2] / B:.2f}; "
          f"batch {B}), torch-dense {1e3 * tmed / TB:.2f} ms/sample (batch {TB}) -> "
          f"{th_ps / ns_ps:.2f}x; numpy check {np_check['identical_spike_counts']} "
          f"({np_wall:.1f} s); mem {mem_ns}; load {loadavg}", file=sys.stderr, flush=True)


def record_memory(cases, threads_list, B=128, seed=0):
    """Only the peak-memory records (``--memory-only``)."""
    from neurosim.models import load_model
    for threads in threads_list:
        for case in cases:
            from neurosim.training.trainer import config_for
            cfg, _ = config_for(load_model(case, seed=seed), {})
            for impl in ("neurosim", "torch-dense"):
                by = {f"T{T}_Tb{Tb}": mem_probe(case, impl, threads, B, seed, T, Tb)
                      for T, Tb in ((cfg.T, cfg.T_b), (2 * cfg.T, 2 * cfg.T_b))}
                v = by[f"T{cfg.T}_Tb{cfg.T_b}"]
                H.record(BENCH, case, impl, "peak_mem_mb", "MB", median=v, min=v, max=v,
                         n_runs=1, threads=threads, batch=B, seed=seed,
                         extra=dict(T=cfg.T, T_b=cfg.T_b, by_steps=by,
                                    definition="fresh process: peak resident set (VmHWM) "
                                               "during the first training step minus the "
                                               "resident set after loading model, data and "
                                               "libraries (Numba kernels from the cache)"))


def record_scaling(run_id, cases):
    """speedup_2t_vs_1t for neurosim from this run's s_per_sample records."""
    recs = [r for r in H.load_records([H.RESULTS_DIR / f"{BENCH}.jsonl"])
            if (r.get("extra") or {}).get("run_id") == run_id and r["impl"] == "neurosim"
            and r["metric"] == "s_per_sample"]
    for case in cases:
        by = {r["threads"]: r for r in recs if r["case"] == case}
        if 1 in by and 2 in by:
            a, b = by[1], by[2]
            H.record(BENCH, case, "neurosim", "speedup_2t_vs_1t", "x",
                     median=a["median"] / b["median"], min=a["min"] / b["max"],
                     max=a["max"] / b["min"], n_runs=min(a["n_runs"], b["n_runs"]), threads=2,
                     batch=b["batch"], goal=goal_for(case, "speedup_2t_vs_1t", 2),
                     extra=dict(run_id=run_id, **json.loads(os.environ.get(_ENV_SITTING) or "{}"),
                                definition="median s/sample at 1 thread / at 2 threads"))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_training",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 repetitions, no memory check")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--cases", default=",".join(DEFAULT_CASES),
                    help=f"subset of {','.join(CASES)} (default {','.join(DEFAULT_CASES)})")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions (default 7; >= 5)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--torch-batch", type=int, default=None,
                    help="batch of torch-dense (default: --batch; the first samples of it): "
                         "a dense CIFAR step takes seconds per sample")
    ap.add_argument("--torch-reps", type=int, default=None,
                    help="timed repetitions of torch-dense (default: --reps)")
    ap.add_argument("--sitting", default=None,
                    help="label of a before/after sitting: 'NAME:ROLE' stored as "
                         "extra.sitting / extra.sitting_role")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-mem", action="store_true", help="skip the peak-memory measurements")
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    ap.add_argument("--memory-only", action="store_true", help="only the peak-memory records")
    args = ap.parse_args(argv)
    if args.probe:
        _probe(args.probe)
        return 0
    cases = [c for c in args.cases.split(",") if c]
    bad = [c for c in cases if c not in CASES]
    if bad:
        ap.error(f"unknown case(s) {bad}; known: {list(CASES)}")
    reps = args.reps if args.reps is not None else (5 if args.quick else 7)
    if reps < 1:
        ap.error("--reps must be >= 1")
    if args.torch_reps is not None and args.torch_reps < 1:
        ap.error("--torch-reps must be >= 1")
    if args.torch_batch is not None and not 1 <= args.torch_batch <= args.batch:
        ap.error(f"--torch-batch must be between 1 and --batch ({args.batch}), got {args.torch_batch}")
    if args.sitting:
        name, _, role = args.sitting.partition(":")
        os.environ[_ENV_SITTING] = json.dumps(dict(sitting=name, sitting_role=role or None))
    try:
        _import_torch()
    except ImportError:
        ap.error("this benchmark compares against PyTorch: pip install torch==2.13.0 "
                 "(benchmark-only dependency)")
    if args.memory_only:
        record_memory(cases, H.parse_threads(args.threads), B=args.batch, seed=args.seed)
        return 0
    n = H.worker_threads()
    if n is not None:
        H.check_threads(n)
        for case in cases:
            bench_case(case, n, reps, args.seed, B=args.batch, mem=not (args.quick or args.no_mem),
                       torch_batch=args.torch_batch, torch_reps=args.torch_reps)
        return 0
    run_id = uuid.uuid4().hex[:12]
    os.environ[_ENV_RUN] = run_id
    wargs = ["--cases", ",".join(cases), "--reps", str(reps), "--seed", str(args.seed),
             "--batch", str(args.batch)]
    if args.quick:
        wargs.append("--quick")
    if args.no_mem:
        wargs.append("--no-mem")
    if args.torch_batch:
        wargs += ["--torch-batch", str(args.torch_batch)]
    if args.torch_reps:
        wargs += ["--torch-reps", str(args.torch_reps)]
    codes = H.run_workers("benchmarks.bench_training", H.parse_threads(args.threads), wargs)
    if not any(codes):
        record_scaling(run_id, cases)
    print(json.dumps(dict(run_id=run_id, exit_codes=codes)))
    return max(codes) if codes else 0


if __name__ == "__main__":
    sys.exit(main())
