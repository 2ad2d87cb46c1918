"""Propagation benchmarks: stand-alone scatter kernels and a whole forward phase.

Run ``python -m benchmarks.bench_propagation [--quick] [--threads 1,2] [--cases ...]``.
Every thread count runs in a fresh worker process pinned by environment variables (see
:mod:`benchmarks._harness`); records go to ``benchmarks/results/propagation.jsonl``.

Cases (details and caveats in benchmarks/README.md)

``csr-l2``
    ``csr_propagate`` on a random CSR of 2,000 pre x 2,000 post neurons, fan-out 100 on
    average (``Sparse.fixed_probability``, p = 0.05), float32 weights, uint32 indices:
    ~2.4 MB, resident in L2.  Each sample is a list of 2,000 steps, 10 % of the pre
    neurons spiking per step (sorted, as the engine emits them), concatenated into one
    kernel call.  Metric: synaptic events per second.  Goal: >= 1.4e9 on one thread.
``csr-dram``
    The same at 200,000 x 200,000 (20 M synapses, 160 MB of indices + weights), 10 steps
    per sample.  Reported, no goal.
``conv``
    ``conv_propagate``: 64 -> 64 channels, 5x5 kernel, stride 1, padding 2, 14x14 map
    (channel-last neurons, (kh, kw, C_in, C_out) weights); 100 steps at 10 % spike rate
    per sample.  Goal: >= 5e9 events/s on one thread.
``ff-forward``
    A whole forward phase (``neurosim.run_forward``) of a 784-500-10 IF network driven by
    Poisson spike trains, 100 steps, batch 128, vs a batched dense-matmul numpy twin of
    the same network.  Input: each pixel spikes with probability 0.1 x intensity per step
    (a Poisson rate of at most 100 Hz at dt = 1 ms, the usual range of Poisson-encoded
    MNIST; mean input rate ~1.3 % per step).  Metric: seconds per sample; goal: neurosim
    >= 2x faster than numpy-dense at the same thread count (``speedup_vs_numpy-dense``).
``ff-forward-r0.3``, ``ff-forward-r1``
    The same network with maximum spike probabilities 0.3 and 1.0 per step (1.0 is
    snnTorch-style rate coding, p = intensity; mean input rate ~13 %): where dense
    matrix products catch up with and overtake the event-driven engine (the crossover;
    no goal).

Stand-alone kernels are serial; with ``threads = n`` the ``batch`` samples (independent
spike lists with their own output arrays) are split over ``n`` Python threads calling the
``nogil`` kernel, which is how the engine parallelises (over samples).  The numpy twins
get their threads from BLAS.  Every impl is checked against another on the same input
(dyadic weights make float32 sums exact in any order) and the result is kept in ``extra``.
"""
import argparse
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _harness as H

BENCH = "propagation"
CASES = ("csr-l2", "csr-dram", "conv", "ff-forward", "ff-forward-r0.3", "ff-forward-r1")
#: goals of the task that asked for this benchmark (recorded with each matching record).
GOALS = {
    ("csr-l2", "neurosim", "events_per_s", 1): 1.4e9,
    ("conv", "neurosim", "events_per_s", 1): 5e9,
    ("ff-forward", "neurosim", "speedup_vs_numpy-dense", 1): 2.0,
    ("ff-forward", "neurosim", "speedup_vs_numpy-dense", 2): 2.0,
}
BATCH = 4            # samples per timed call of the stand-alone kernels
DTYPE = np.float32


def _goal(case, impl, metric, threads):
    return GOALS.get((case, impl, metric, threads))


def _dyadic(rng, n, k=64, den=64):
    """n weights uniform on {-k, ..., k} / den: float32 sums of them are exact."""
    return rng.integers(-k, k + 1, n) / den


def _step_lists(rng, n_pre, rate, n_steps):
    """Concatenated spike lists of ``n_steps`` steps, ``rate * n_pre`` sorted spikes each."""
    k = max(1, int(round(rate * n_pre)))
    steps = [np.sort(rng.choice(n_pre, k, replace=False)) for _ in range(n_steps)]
    return np.concatenate(steps).astype(np.int32), k


class _Batch:
    """Run ``fn(*item)`` for every item, split over ``threads`` Python threads (nogil)."""

    def __init__(self, threads):
        self.threads = threads
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def __call__(self, fn, items):
        if self.pool is None:
            return [fn(*it) for it in items]
        chunks = [items[k::self.threads] for k in range(self.threads)]
        parts = self.pool.map(lambda ch: [fn(*it) for it in ch], chunks)
        return [r for part in parts for r in part]

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()


def _compile_time(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


# ---------------------------------------------------------------------------------------
# C anchor for the CSR scatter (the hardware reference the goal is set against)
_C_SRC = r"""
#include <stdint.h>
int64_t csr_propagate(const int32_t *spk, int64_t n_spk, const int64_t *indptr,
                      const uint32_t *indices, const float *weights, float *out) {
    int64_t n = 0;
    for (int64_t e = 0; e < n_spk; e++) {
        int64_t j = spk[e], s0 = indptr[j], s1 = indptr[j + 1];
        for (int64_t s = s0; s < s1; s++) out[indices[s]] += weights[s];
        n += s1 - s0;
    }
    return n;
}
"""
_C_FLAGS = ["-O3", "-march=native", "-shared", "-fPIC"]


def _c_anchor():
    """(ctypes function, description) of the plain C loop, or (None, reason)."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler found"
    d = tempfile.mkdtemp(prefix="neurosim-bench-")
    src, lib = os.path.join(d, "csr.c"), os.path.join(d, "csr.so")
    with open(src, "w") as f:
        f.write(_C_SRC)
    r = subprocess.run([cc, *_C_FLAGS, src, "-o", lib], capture_output=True, text=True)
    if r.returncode != 0:
        return None, f"C compile failed: {r.stderr.strip()[:200]}"
    fn = ctypes.CDLL(lib).csr_propagate
    shutil.rmtree(d, ignore_errors=True)            # the library stays mapped
    ptr = lambda dt: np.ctypeslib.ndpointer(dt, flags="C_CONTIGUOUS")
    fn.argtypes = [ptr(np.int32), ctypes.c_int64, ptr(np.int64), ptr(np.uint32), ptr(np.float32),
                   ptr(np.float32)]
    fn.restype = ctypes.c_int64
    ver = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()
    return (lambda s, ip, ix, w, out: fn(s, s.shape[0], ip, ix, w, out)), \
        f"{ver[0] if ver else cc} {' '.join(_C_FLAGS[:2])}"


# ---------------------------------------------------------------------------------------
def bench_csr(case, threads, reps, seed, n_pre, n_post, fan_out, rate, n_steps, np_steps):
    import neurosim
    from neurosim.kernels.scatter import csr_propagate
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    proj = neurosim.Sparse.fixed_probability(n_pre, n_post, fan_out / n_post, weight=_dyadic,
                                             seed=seed)
    build_s = time.perf_counter() - t0
    indptr, indices = proj.indptr, proj.indices
    w = proj.weight.astype(DTYPE)
    samples = [_step_lists(rng, n_pre, rate, n_steps) for _ in range(BATCH)]
    spk = [s for s, _ in samples]
    k_step = samples[0][1]
    outs = [np.zeros(n_post, DTYPE) for _ in range(BATCH)]
    events = int(sum(int((indptr[s + 1] - indptr[s]).sum()) for s in spk))
    common = dict(n_pre=n_pre, n_post=n_post, nnz=int(indices.size),
                  mean_fan_out=float(indices.size / n_pre), rate_per_step=rate,
                  spikes_per_step=k_step, steps_per_sample=n_steps, events_per_call=events,
                  bytes_csr=int(indptr.nbytes + indices.nbytes + w.nbytes),
                  index_dtype=str(indices.dtype), build_s=round(build_s, 3))
    pool = _Batch(threads)
    try:
        # -- neurosim kernel (compile time only where this process compiles it first)
        fresh = not csr_propagate.signatures
        comp = _compile_time(csr_propagate, spk[0][:1], indptr, indices, w, np.zeros(n_post, DTYPE))
        if fresh:
            H.record(BENCH, case, "neurosim", "compile_s", "s", median=comp, min=comp, max=comp,
                     n_runs=1, threads=threads, batch=1, dtype=DTYPE, seed=seed,
                     extra=dict(kernel="neurosim.kernels.scatter.csr_propagate",
                                numba_cache=os.environ.get("NEUROSIM_NO_CACHE") != "1"))
        items = list(zip(spk, [indptr] * BATCH, [indices] * BATCH, [w] * BATCH, outs))
        tm = H.time_it(lambda: pool(csr_propagate, items), reps)
        got = [np.zeros(n_post, DTYPE) for _ in range(BATCH)]
        n_ret = sum(int(csr_propagate(s, indptr, indices, w, o)) for s, o in zip(spk, got))
        H.record(BENCH, case, "neurosim", "events_per_s", "events/s", **tm.rate(events),
                 threads=threads, batch=BATCH, dtype=DTYPE, seed=seed,
                 goal=_goal(case, "neurosim", "events_per_s", threads),
                 extra=dict(common, kernel="neurosim.kernels.scatter.csr_propagate",
                            kernel_event_count_ok=n_ret == events,
                            first_call_s=tm.first_s, loadavg=_loadavg(), **_thr(threads)))
        # -- plain C loop (hardware anchor)
        cfn, cdesc = _c_anchor()
        if cfn is not None:
            ref = [np.zeros(n_post, DTYPE) for _ in range(BATCH)]
            for s, o in zip(spk, ref):
                cfn(s, indptr, indices, w, o)
            same = all(np.array_equal(a, b) for a, b in zip(ref, got))
            tm = H.time_it(lambda: pool(cfn, items), reps)
            H.record(BENCH, case, "c-loop", "events_per_s", "events/s", **tm.rate(events),
                     threads=threads, batch=BATCH, dtype=DTYPE, seed=seed,
                     extra=dict(common, compiler=cdesc, same_as_neurosim=same,
                                loadavg=_loadavg(), **_thr(threads)))
        else:
            print(f"[bench] {case}: c-loop skipped ({cdesc})", file=sys.stderr)
        # -- numpy dense twin: per step out += s_t @ W over the batch (only where W fits)
        if np_steps:
            Wd = proj.to_dense().astype(DTYPE)
            S = np.zeros((np_steps, BATCH, n_pre), DTYPE)
            for b, s in enumerate(spk):
                for t in range(np_steps):
                    S[t, b, s[t * k_step:(t + 1) * k_step]] = 1.0
            np_events = int(sum(int((indptr[s[:np_steps * k_step] + 1] - indptr[s[:np_steps * k_step]]).sum())
                                for s in spk))
            out_np = np.zeros((BATCH, n_post), DTYPE)

            def dense():
                for t in range(np_steps):
                    out_np[...] += S[t] @ Wd
            out_np[...] = 0.0
            dense()
            chk = [np.zeros(n_post, DTYPE) for _ in range(BATCH)]
            for s, o in zip(spk, chk):
                csr_propagate(s[:np_steps * k_step], indptr, indices, w, o)
            same = bool(np.array_equal(np.stack(chk), out_np))
            tm = H.time_it(dense, reps)
            H.record(BENCH, case, "numpy-dense", "events_per_s", "events/s", **tm.rate(np_events),
                     threads=threads, batch=BATCH, dtype=DTYPE, seed=seed,
                     extra=dict(common, steps_per_sample=np_steps, events_per_call=np_events,
                                what="per step out += s_t @ W (dense W, float32 BLAS)",
                                same_as_neurosim=same, loadavg=_loadavg(), **_thr(threads)))
    finally:
        pool.close()


def _im2col(x, kh, kw, pad):
    """x [B, H, W, C] -> [B*Ho*Wo, kh*kw*C] (stride 1), rows in (ky, kx, c) order."""
    B, Hh, Ww, C = x.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))  # B,Ho,Wo,C,kh,kw
    Ho, Wo = win.shape[1], win.shape[2]
    return np.ascontiguousarray(win.transpose(0, 1, 2, 4, 5, 3)).reshape(B * Ho * Wo, kh * kw * C)


def bench_conv(case, threads, reps, seed, C=64, Hw=14, k=5, pad=2, rate=0.1, n_steps=100,
               np_steps=100):
    import neurosim
    from neurosim.kernels.scatter import conv_propagate
    rng = np.random.default_rng(seed)
    Wt = _dyadic(rng, C * C * k * k, 32).reshape(C, C, k, k)      # PyTorch (C_out, C_in, kh, kw)
    conv = neurosim.Conv2d(Wt, pre_shape=(C, Hw, Hw), stride=1, padding=pad)
    wf = conv.kernel_weights()[0].astype(DTYPE)                  # (kh, kw, C_in, C_out)
    wflat = wf.ravel()
    Co, Ho, Wo = conv.post_shape
    geo = np.array([C, Hw, Hw, Co, Ho, Wo, k, k, 1, pad], np.int64)
    n_pre, n_post = C * Hw * Hw, Co * Ho * Wo
    samples = [_step_lists(rng, n_pre, rate, n_steps) for _ in range(BATCH)]
    spk = [s for s, _ in samples]
    k_step = samples[0][1]
    deg_cl = conv.out_degree()          # per pre neuron, neurosim's channel-last order
    events = int(sum(int(deg_cl[s].sum()) for s in spk))
    outs = [np.zeros(n_post, DTYPE) for _ in range(BATCH)]
    common = dict(shape_in=[C, Hw, Hw], shape_out=[Co, Ho, Wo], kernel=[k, k], stride=1,
                  padding=pad, rate_per_step=rate, spikes_per_step=k_step,
                  steps_per_sample=n_steps, events_per_call=events,
                  mean_events_per_spike=events / (BATCH * n_steps * k_step))
    pool = _Batch(threads)
    try:
        fresh = not conv_propagate.signatures
        comp = _compile_time(conv_propagate, spk[0][:1], wflat, geo, np.zeros(n_post, DTYPE))
        if fresh:
            H.record(BENCH, case, "neurosim", "compile_s", "s", median=comp, min=comp, max=comp,
                     n_runs=1, threads=threads, batch=1, dtype=DTYPE, seed=seed,
                     extra=dict(kernel="neurosim.kernels.scatter.conv_propagate",
                                numba_cache=os.environ.get("NEUROSIM_NO_CACHE") != "1"))
        items = list(zip(spk, [wflat] * BATCH, [geo] * BATCH, outs))
        n_chk = conv_propagate(spk[0], wflat, geo, np.zeros(n_post, DTYPE))
        tm = H.time_it(lambda: pool(conv_propagate, items), reps)
        H.record(BENCH, case, "neurosim", "events_per_s", "events/s", **tm.rate(events),
                 threads=threads, batch=BATCH, dtype=DTYPE, seed=seed,
                 goal=_goal(case, "neurosim", "events_per_s", threads),
                 extra=dict(common, kernel="neurosim.kernels.scatter.conv_propagate",
                            kernel_event_count_ok=int(n_chk) == int(deg_cl[spk[0]].sum()),
                            first_call_s=tm.first_s, loadavg=_loadavg(), **_thr(threads)))
        # -- numpy dense twin: per step, im2col of the batch's spike maps @ W (float32 BLAS)
        if np_steps:
            Wm = wf.reshape(k * k * C, Co)
            X = np.zeros((np_steps, BATCH, n_pre), DTYPE)
            for b, s in enumerate(spk):
                for t in range(np_steps):
                    X[t, b, s[t * k_step:(t + 1) * k_step]] = 1.0
            np_events = int(sum(int(deg_cl[s[:np_steps * k_step]].sum()) for s in spk))
            out_np = np.zeros((BATCH, n_post), DTYPE)

            def dense():
                for t in range(np_steps):
                    cols = _im2col(X[t].reshape(BATCH, Hw, Hw, C), k, k, pad)
                    out_np[...] += (cols @ Wm).reshape(BATCH, n_post)
            dense()
            chk = np.zeros((BATCH, n_post), DTYPE)
            for b, s in enumerate(spk):
                conv_propagate(s[:np_steps * k_step], wflat, geo, chk[b])
            out_np[...] = 0.0
            dense()
            same = bool(np.array_equal(chk, out_np))
            tm = H.time_it(dense, reps, warmup=False)
            H.record(BENCH, case, "numpy-dense", "events_per_s", "events/s", **tm.rate(np_events),
                     threads=threads, batch=BATCH, dtype=DTYPE, seed=seed,
                     extra=dict(common, steps_per_sample=np_steps, events_per_call=np_events,
                                what="per step im2col(spike map) @ W[(kh,kw,C_in),C_out], float32 BLAS",
                                same_as_neurosim=same, loadavg=_loadavg(), **_thr(threads)))
    finally:
        pool.close()


# ---------------------------------------------------------------------------------------
def pixel_images(rng, B, side=28):
    """MNIST-like grey images in [0, 1]: a few Gaussian strokes, clipped (mean ~0.13)."""
    yy, xx = np.mgrid[0:side, 0:side]
    out = np.zeros((B, side, side))
    for b in range(B):
        img = np.zeros((side, side))
        for _ in range(rng.integers(3, 6)):
            cy, cx = rng.uniform(0.25 * side, 0.75 * side, 2)
            sy, sx = rng.uniform(1.0, 4.0, 2)
            img += np.exp(-0.5 * (((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2))
        out[b] = np.clip(1.3 * img - 0.3, 0.0, 1.0)
    return out.reshape(B, side * side)


def ff_network(rng, n_in=784, n_hid=500, n_out=10):
    """The 784-500-10 IF network (LIF(v_th=1) defaults) and its float32 weights.

    Weights and biases lie on the grid 2^-8 so that every float32 sum in either
    implementation is exact and spike counts must agree bit for bit.  A bias rounded to
    exactly 0 is moved to 2^-8: a trained float bias is never exactly zero (and a zero
    bias changes the engine's path: only populations whose every neuron has a constant
    current are marked "dense" and skip touched-site bookkeeping)."""
    import neurosim
    q = 2.0 ** -8

    def grid(a):
        return np.round(a / q) * q

    def nonzero(b):
        return np.where(b == 0.0, q, b)
    W1 = grid(rng.normal(0.0, 0.08, (n_in, n_hid)))
    b1 = nonzero(grid(rng.normal(0.0, 0.02, n_hid)))
    W2 = grid(rng.normal(0.0, 0.15, (n_hid, n_out)))
    b2 = nonzero(grid(rng.normal(0.0, 0.02, n_out)))
    net = neurosim.Network(dtype=DTYPE, name="ff-784-500-10")
    net.add_population("source", n_in, "source")
    net.add_population("hidden", n_hid, neurosim.LIF(v_th=1.0))
    net.add_population("out", n_out, neurosim.LIF(v_th=1.0))
    net.add_projection("fc1", "source", "hidden", neurosim.Dense(W1, bias=b1))
    net.add_projection("fc2", "hidden", "out", neurosim.Dense(W2, bias=b2))
    return net, [a.astype(DTYPE) for a in (W1, b1, W2, b2)]


def numpy_forward(spikes, W1, b1, W2, b2, v_th=1.0, subtract=2.0):
    """Batched dense twin of the IF network: spikes bool [B, T, n_in] -> spike counts."""
    B, T, _ = spikes.shape
    s_in = np.ascontiguousarray(spikes.transpose(1, 0, 2), dtype=DTYPE)   # [T, B, n_in]
    u1 = np.zeros((B, W1.shape[1]), DTYPE)
    u2 = np.zeros((B, W2.shape[1]), DTYPE)
    c1 = np.zeros(u1.shape, np.int32)
    c2 = np.zeros(u2.shape, np.int32)
    th, sub = DTYPE(v_th), DTYPE(subtract)
    for t in range(T):
        u1 += s_in[t] @ W1 + b1
        s1 = u1 >= th
        u1 -= sub * s1
        c1 += s1
        u2 += s1.astype(DTYPE) @ W2 + b2
        s2 = u2 >= th
        u2 -= sub * s2
        c2 += s2
    return c1, c2


def bench_ff(case, threads, reps, seed, T=100, B=128, max_rate=0.1):
    import neurosim
    rng = np.random.default_rng(seed)
    net, (W1, b1, W2, b2) = ff_network(rng)
    x = pixel_images(rng, B)
    spikes = rng.random((B, T, x.shape[1])) < max_rate * x[:, None, :]   # Poisson (Bernoulli)
    common = dict(network="784-500-10 IF, LIF(v_th=1.0), Dense+bias, delay 0", steps=T,
                  input=f"Bernoulli spikes with p = {max_rate} x pixel intensity per step",
                  max_rate_per_step=max_rate,
                  mean_pixel=float(x.mean()), frac_nonzero_pixels=float((x > 0).mean()),
                  mean_input_rate=float(spikes.mean()))
    # compile time: the first call in this (fresh, cache-off) process, on one sample
    t0 = time.perf_counter()
    neurosim.run_forward(net, T, spikes={"source": spikes[:1]})
    comp = time.perf_counter() - t0
    H.record(BENCH, case, "neurosim", "compile_s", "s", median=comp, min=comp, max=comp,
             n_runs=1, threads=threads, batch=1, dtype=DTYPE, seed=seed,
             extra=dict(what="first run_forward call of the process (batch 1), compile included",
                        numba_cache=os.environ.get("NEUROSIM_NO_CACHE") != "1"))
    res = {}
    kernel_s = []

    def run_ns():
        r = neurosim.run_forward(net, T, spikes={"source": spikes})
        kernel_s.append(r.wall_s)
        res["ns"] = r
    tm_ns = H.time_it(run_ns, reps)
    kernel_s = kernel_s[1:]                      # drop the warm-up call
    r = res["ns"]
    c1, c2 = numpy_forward(spikes, W1, b1, W2, b2)
    mism_h = int((c1 != r.counts["hidden"]).sum())
    mism_o = int((c2 != r.counts["out"]).sum())
    check = dict(identical_spike_counts=(mism_h == 0 and mism_o == 0),
                 mismatched_neurons_hidden=mism_h, mismatched_neurons_out=mism_o,
                 total_spikes_hidden=int(c1.sum()), total_spikes_out=int(c2.sum()))
    rates = dict(hidden_rate=float(c1.mean() / T), out_rate=float(c2.mean() / T))
    syn_events = int(sum(int(v.sum()) * net.projections[k].n_post for k, v in r.sent.items()))
    H.record(BENCH, case, "neurosim", "s_per_sample", "s", **tm_ns.stats(1.0 / B),
             threads=threads, batch=B, dtype=DTYPE, seed=seed,
             extra=dict(common, **rates, check=check, synaptic_events=syn_events,
                        kernel_s_per_sample_median=float(np.median(kernel_s)) / B,
                        kernel_share_of_wall=float(np.median(kernel_s) / tm_ns.median),
                        events_per_s_kernel=syn_events / float(np.median(kernel_s)),
                        what="neurosim.run_forward wall time (validation + packing + run_phase)",
                        loadavg=_loadavg(), **_thr(threads)))
    tm_np = H.time_it(lambda: numpy_forward(spikes, W1, b1, W2, b2), reps)
    H.record(BENCH, case, "numpy-dense", "s_per_sample", "s", **tm_np.stats(1.0 / B),
             threads=threads, batch=B, dtype=DTYPE, seed=seed,
             extra=dict(common, **rates, check=check,
                        what="per step u += s @ W + b; s = u >= th; u -= 2 th s (float32 BLAS)",
                        loadavg=_loadavg(), **_thr(threads)))
    sp = [a / b for a, b in zip(tm_np.times, tm_ns.times)]
    H.record(BENCH, case, "neurosim", "speedup_vs_numpy-dense", "x",
             median=tm_np.median / tm_ns.median, min=tm_np.min / tm_ns.max,
             max=tm_np.max / tm_ns.min, n_runs=min(tm_np.n_runs, tm_ns.n_runs),
             threads=threads, batch=B, dtype=DTYPE, seed=seed,
             goal=_goal(case, "neurosim", "speedup_vs_numpy-dense", threads),
             extra=dict(definition="median(numpy-dense) / median(neurosim); min = min(np)/max(ns), "
                                   "max = max(np)/min(ns)",
                        median_of_paired_ratios=float(np.median(sp)), check=check,
                        loadavg=_loadavg()))


def _thr(threads):
    info = H.thread_info()
    return dict(numba_threads=info["numba_threads"], blas_threads=info["blas_threads"],
                parallelism=("serial" if threads == 1 else
                             f"{threads} Python threads over the batch (nogil kernel); BLAS {threads} threads"))


# ---------------------------------------------------------------------------------------
def run_cases(cases, threads, reps, seed):
    H.check_threads(threads)
    for case in cases:
        if case == "csr-l2":
            bench_csr(case, threads, reps, seed, n_pre=2000, n_post=2000, fan_out=100, rate=0.1,
                      n_steps=2000, np_steps=200)
        elif case == "csr-dram":
            bench_csr(case, threads, reps, seed, n_pre=200_000, n_post=200_000, fan_out=100,
                      rate=0.1, n_steps=10, np_steps=0)
        elif case == "conv":
            bench_conv(case, threads, reps, seed)
        elif case == "ff-forward":
            bench_ff(case, threads, reps, seed, max_rate=0.1)
        elif case.startswith("ff-forward-r"):
            bench_ff(case, threads, reps, seed, max_rate=float(case[len("ff-forward-r"):]))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_propagation",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 repetitions instead of 7")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"subset of {','.join(CASES)}")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions per case (>= 7 by default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", action="store_true",
                    help="keep Numba's on-disk cache on (compile_s then measures a cache load)")
    args = ap.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    bad = [c for c in cases if c not in CASES]
    if bad:
        ap.error(f"unknown case(s) {bad}; known: {list(CASES)}")
    reps = args.reps if args.reps is not None else (3 if args.quick else 7)
    if reps < 1:
        ap.error("--reps must be >= 1")
    n = H.worker_threads()
    if n is not None:                       # we are a worker: run everything at n threads
        run_cases(cases, n, reps, args.seed)
        return 0
    wargs = ["--cases", ",".join(cases), "--reps", str(reps), "--seed", str(args.seed)]
    if args.cache:
        wargs.append("--cache")
    codes = H.run_workers("benchmarks.bench_propagation", H.parse_threads(args.threads), wargs,
                          cache=args.cache)
    return max(codes) if codes else 0


if __name__ == "__main__":
    sys.exit(main())
