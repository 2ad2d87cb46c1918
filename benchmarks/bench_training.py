"""Benchmark: one SPIDE training step per sample, event-driven neurosim vs dense frameworks.

    python -m benchmarks.bench_training                    # lenet_mnist, convnetf_mnist; 1 and 2 threads
    python -m benchmarks.bench_training --quick            # 5 runs, no memory-vs-T check
    python -m benchmarks.bench_training --cases lenet_mnist --threads 2

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
CASES = ("lenet_mnist", "convnetf_mnist")
GOALS = {("neurosim", "speedup_vs_torch-dense", 2): 3.0,
         ("neurosim", "speedup_2t_vs_1t", 2): 1.7}
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
    x, y, _ = load_inputs(B, seed)
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


def load_inputs(B, seed):
    """(x [B, 1, 28, 28] float32 normalised, y [B], description)."""
    from neurosim import datasets as D
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
    model = SPIDEModel(net, 10, readout=True, seed=seed)
    model.apply_norm_cap(cfg.norm_cap)
    masks = dropout_masks(model, cfg, B, np.random.default_rng(seed + 1))
    opt = SGD(cfg.momentum, cfg.weight_decay)
    return net, cfg, model, masks, opt


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


def bench_case(case, threads, reps, seed, B=128, mem=True):
    torch = _import_torch()
    from neurosim.training.spide import spide_step
    from .torch_spide import TorchSPIDE, counts_flat, masks_nchw
    torch.set_num_threads(threads)
    run_id = os.environ.get(_ENV_RUN, "")
    x, y, input_desc = load_inputs(B, seed)
    net, cfg, model, masks, opt = _setup(case, B, seed)
    _fixed_masks(masks)
    ts = TorchSPIDE(net, model.C, model.c, cfg, model.output)
    xt, yt, mt = torch.tensor(x), torch.tensor(y), masks_nchw(net, masks)
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
                        numba_cache=os.environ.get("NEUROSIM_NO_CACHE") != "1", run_id=run_id))
    # warm-up both (untimed)
    res = spide_step(model, x, y, cfg, rng, 0.0, opt, n_threads=threads)
    ts.step(xt, yt, mt, 0.0)
    ns_t, th_t, ns_ph, th_ph = [], [], [], []
    for _ in range(reps):                               # alternate the implementations
        t0 = time.perf_counter()
        res = spide_step(model, x, y, cfg, rng, 0.0, opt, n_threads=threads)
        ns_t.append(time.perf_counter() - t0)
        ns_ph.append((res.fwd_s, res.bwd_s, res.update_s))
        t0 = time.perf_counter()
        cnt, beta = ts.step(xt, yt, mt, 0.0)
        th_t.append(time.perf_counter() - t0)
    # op counts per sample and checks
    fwd_ev = float(res.fwd_synops.mean())
    bwd_pos, bwd_neg = float(res.bwd_synops_pos.mean()), float(res.bwd_synops_neg.mean())
    events = fwd_ev + bwd_pos + bwd_neg
    tc = counts_flat(net, cnt)
    torch_mism = {p: int((tc[p] != res.forward.counts[p]).sum()) for p in tc}
    np_check, np_wall = numpy_check(net, cfg, model, x, y, masks, res.forward.counts)
    med = float(np.median(ns_t))
    ph = np.median(np.array(ns_ph), axis=0)
    fwd_rate = {p: float(res.forward.counts[p].mean() / cfg.T) for p in tc}
    bwd_rate = {p: float((res.backward.counts[p] + res.backward.counts_neg[p]).mean() / cfg.T_b)
                for p in tc}
    common = dict(run_id=run_id, input=input_desc, T=cfg.T, T_b=cfg.T_b, kappa=cfg.kappa,
                  dropout=cfg.dropout, lr_during_timing=0.0, loadavg=_loadavg(),
                  fwd_firing_rate_per_step=fwd_rate, bwd_firing_rate_per_step=bwd_rate)
    mem_ns = {}
    if mem:
        for impl in ("neurosim", "torch-dense"):
            by = {f"T{T}_Tb{Tb}": mem_probe(case, impl, threads, B, seed, T, Tb)
                  for T, Tb in ((cfg.T, cfg.T_b), (2 * cfg.T, 2 * cfg.T_b))}
            if impl == "neurosim":
                mem_ns = by
            v = by[f"T{cfg.T}_Tb{cfg.T_b}"]
            H.record(BENCH, case, impl, "peak_mem_mb", "MB", median=v, min=v, max=v, n_runs=1,
                     threads=threads, batch=B, seed=seed,
                     extra=dict(run_id=run_id, T=cfg.T, T_b=cfg.T_b, by_steps=by,
                                definition="fresh process: peak resident set (VmHWM) during "
                                           "the first training step minus the resident set "
                                           "after loading model, data and libraries"))
    ns_extra = dict(common, events_per_sample=dict(forward=fwd_ev, backward_pos=bwd_pos,
                                                   backward_neg=bwd_neg),
                    neuron_updates_per_sample=dict(forward=float(res.fwd_updates.mean()),
                                                   backward=float(res.bwd_updates.mean())),
                    weight_update_macs_per_sample=float(res.update_macs.mean()),
                    events_per_s=events * B / med,
                    phase_s_per_sample=dict(forward=ph[0] / B, backward=ph[1] / B,
                                            update=ph[2] / B),
                    check=np_check,
                    check_torch_dense=dict(mismatched_neurons=torch_mism,
                                           note="float32 sums in a different order: a few "
                                                "neurons at the threshold may differ"),
                    what="neurosim.training.spide_step (forward T, loss, backward T_b, local "
                         "updates, SGD)")
    H.record(BENCH, case, "neurosim", "s_per_sample", "s", median=med / B, min=min(ns_t) / B,
             max=max(ns_t) / B, n_runs=len(ns_t), threads=threads, batch=B, seed=seed,
             dtype="float32", extra=ns_extra)
    tmed = float(np.median(th_t))
    H.record(BENCH, case, "torch-dense", "s_per_sample", "s", median=tmed / B,
             min=min(th_t) / B, max=max(th_t) / B, n_runs=len(th_t), threads=threads, batch=B,
             seed=seed, dtype="float32",
             extra=dict(common, torch_version=torch.__version__,
                        torch_threads=torch.get_num_threads(),
                        events_per_s_equivalent=events * B / tmed,
                        what="benchmarks/torch_spide.py TorchSPIDE.step (dense clock-driven)"))
    H.record(BENCH, case, "numpy-dense", "s_per_sample", "s", median=np_wall / 2,
             min=np_wall / 2, max=np_wall / 2, n_runs=1, threads=threads, batch=2, seed=seed,
             dtype="float64",
             extra=dict(common, what="tests/reference.py run_phase forward + backward on 2 "
                                     "samples (the exactness oracle; not a contender)",
                        check=np_check))
    ratios = [a / b for a, b in zip(th_t, ns_t)]
    H.record(BENCH, case, "neurosim", "speedup_vs_torch-dense", "x", median=tmed / med,
             min=min(th_t) / max(ns_t), max=max(th_t) / min(ns_t), n_runs=len(ns_t),
             threads=threads, batch=B, seed=seed,
             goal=GOALS.get(("neurosim", "speedup_vs_torch-dense", threads)),
             extra=dict(run_id=run_id, definition="median(torch-dense) / median(neurosim)",
                        median_of_paired_ratios=float(np.median(ratios)),
                        identical_spike_counts_numpy=np_check["identical_spike_counts"],
                        loadavg=_loadavg()))
    print(f"[bench] {case} threads={threads}: neurosim {1e3 * med / B:.2f} ms/sample "
          f"(fwd {1e3 * ph[0] / B:.2f}, bwd {1e3 * ph[1] / B:.2f}, upd {1e3 * ph[2] / B:.2f}), "
          f"torch-dense {1e3 * tmed / B:.2f} ms/sample -> {tmed / med:.2f}x; numpy check "
          f"{np_check['identical_spike_counts']}; mem {mem_ns}", file=sys.stderr, flush=True)


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
                     batch=b["batch"], goal=GOALS.get(("neurosim", "speedup_2t_vs_1t", 2)),
                     extra=dict(run_id=run_id,
                                definition="median s/sample at 1 thread / at 2 threads"))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_training",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 repetitions, no memory check")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"subset of {','.join(CASES)}")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions (default 7; >= 5)")
    ap.add_argument("--batch", type=int, default=128)
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
            bench_case(case, n, reps, args.seed, B=args.batch, mem=not (args.quick or args.no_mem))
        return 0
    run_id = uuid.uuid4().hex[:12]
    os.environ[_ENV_RUN] = run_id
    wargs = ["--cases", ",".join(cases), "--reps", str(reps), "--seed", str(args.seed),
             "--batch", str(args.batch)]
    if args.quick:
        wargs.append("--quick")
    if args.no_mem:
        wargs.append("--no-mem")
    codes = H.run_workers("benchmarks.bench_training", H.parse_threads(args.threads), wargs)
    if not any(codes):
        record_scaling(run_id, cases)
    print(json.dumps(dict(run_id=run_id, exit_codes=codes)))
    return max(codes) if codes else 0


if __name__ == "__main__":
    sys.exit(main())
