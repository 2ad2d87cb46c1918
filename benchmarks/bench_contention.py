"""Threads against other processes: the default digits training on a loaded machine.

    python -m benchmarks.bench_contention                       # this checkout only
    python -m benchmarks.bench_contention --before DIR          # and a checkout without the fix

Runs ``neurosim train --epochs 3 --max-train 400`` (the default model and data set) as a
fresh process, at the default thread count and at ``--threads 1``, with 0 and 2 busy-loop
processes (``while True: pass``) as extra load, and records the wall time of the whole
command (median, min, max over ``--reps`` runs, taken round-robin over the configurations
so that drift of the machine's own load hits all of them alike) in
``benchmarks/results/contention.jsonl``.  ``--before DIR`` runs the same commands with
``PYTHONPATH=DIR`` (e.g. ``git archive`` of the commit before the fix, unpacked), recorded
with ``extra.variant = "before"``.

What it shows: with ``OMP_WAIT_POLICY`` unset, libgomp's worker threads (Numba's ``prange``
kernels) spin while they wait; with other busy processes on the cores they burn the time
slices the working threads need.  neurosim now sets ``OMP_WAIT_POLICY=PASSIVE`` unless the
user set it (:mod:`neurosim.config`).  Every run file is hashed
(:func:`benchmarks.fingerprint.runfile_hash`): the hashes of one thread count must agree
between the variants (results identical), recorded in ``extra.runfile_hash``.

The machine's load average before each run is recorded (``extra.loadavg_runs``): on a
shared machine the "0 busy loops" case is whatever the other users run.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import _harness as H
from .fingerprint import runfile_hash

BUSY = "while True:\n    pass\n"


def _env(src, threads_default):
    env = {k: v for k, v in os.environ.items()
           if k not in H.THREAD_ENV_VARS + ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                            "NUMBA_THREADING_LAYER", "NEUROSIM_NO_CACHE")}
    env["PYTHONPATH"] = str(src)
    return env


def _one(src, threads, out, args):
    cmd = [sys.executable, "-m", "neurosim.cli", "train", "--out", str(out), "--force", *args]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=_env(src, threads), capture_output=True, text=True, cwd=src)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"[bench] failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return dt, load


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", type=Path, help="checkout without the fix (PYTHONPATH)")
    ap.add_argument("--after", type=Path, default=H.REPO_ROOT,
                    help="checkout with the fix (default: this one)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-train", type=int, default=400)
    ap.add_argument("--loads", default="0,2", help="busy-loop processes, e.g. 0,2")
    ap.add_argument("--out", type=Path, help="results file (default results/contention.jsonl)")
    a = ap.parse_args(argv)
    args = ["--epochs", str(a.epochs), "--max-train", str(a.max_train)]
    variants = [("after", a.after.resolve())] + ([("before", a.before.resolve())] if a.before else [])
    threads = [None, 1]
    work = Path(tempfile.mkdtemp(prefix="bench-contention-"))
    for name, src in variants:                       # compile (or load) the kernels, untimed
        for t in threads:
            print(f"[bench] warm-up {name} threads={t or 'default'}", file=sys.stderr, flush=True)
            _one(src, t, work / "warm.h5", args)
    import numba
    n_default = numba.config.NUMBA_DEFAULT_NUM_THREADS
    for k in [int(x) for x in a.loads.split(",")]:
        busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(k)]
        try:
            times = {(v, t): [] for v, _ in variants for t in threads}
            loads = {key: [] for key in times}
            hashes = {}
            for _ in range(a.reps):
                for v, src in variants:
                    for t in threads:
                        out = work / f"{v}-{t}.h5"
                        dt, load = _one(src, t, out, args)
                        times[(v, t)].append(dt)
                        loads[(v, t)].append(load)
                        hashes[(v, t)] = runfile_hash(out)[0]
        finally:
            for p in busy:
                p.kill()
                p.wait()
        for (v, t), ts in times.items():
            policy = "PASSIVE (set by neurosim)" if v == "after" else "unset (libgomp default)"
            H.record("contention", f"digits-e{a.epochs}-n{a.max_train}-busy{k}", "neurosim",
                     "wall_s", "s", median=statistics.median(ts), min=min(ts), max=max(ts),
                     n_runs=len(ts), threads=t or n_default, batch=32, seed=0, path=a.out,
                     extra=dict(variant=v, busy_loops=k, threads_option=t, times_s=ts,
                                loadavg_runs=loads[(v, t)], omp_wait_policy=policy,
                                command="neurosim train " + " ".join(args)
                                        + ("" if t is None else f" --threads {t}"),
                                timer="whole command (process start to exit)",
                                runfile_hash=hashes[(v, t)],
                                identical_to_other_variant=len({hashes[(x, t)] for x, _ in
                                                                variants}) == 1,
                                shared_machine="yes: other engineers' jobs ran meanwhile "
                                               "(see loadavg_runs)"))


if __name__ == "__main__":
    main()
