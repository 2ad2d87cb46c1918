"""Per-epoch speed-up of data-parallel SPIDE training over MPI (`docs/distributed.md`).

Times `neurosim train --model fsnn_mlp_fmnist` for one epoch on the first ``--max-train``
Fashion-MNIST training samples (a fixed number of batches; a full epoch of 60,000 is
~2 minutes per process on this machine) plus a test pass on ``--max-test`` samples, in
one process and under ``mpiexec -n P`` (one Numba / BLAS thread per rank), alternating
run by run so that a shared machine's load hits both alike.  The epoch time is the run
file's ``history/wall_s`` (batches + test pass; no process start-up, no compilation: one
untimed warm-up run of each kind first).  Every timed pair must give bit-identical run
files (weights, history, op counts), else nothing is recorded.

Records (``benchmarks/results/distributed.jsonl``): ``epoch_s`` for ``impl``
``neurosim`` (threads 1) and ``neurosim-mpi`` (threads = P ranks), and ``speedup``
(one-process time / P-rank time, per pair).

    python -m benchmarks.bench_distributed [--ranks 2] [--max-train 3840] [--max-test 1000] [--runs 5]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

from benchmarks import _harness as H

MODEL = "fsnn_mlp_fmnist"


def _mpiexec():
    here = Path(sys.executable).parent
    for name in ("mpiexec", "mpirun"):
        if (here / name).exists():
            return str(here / name)
    return shutil.which("mpiexec") or shutil.which("mpirun")


def _datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


def _same(a, b):
    da, db = _datasets(a), _datasets(b)
    return set(da) == set(db) and all(np.array_equal(da[k], db[k]) for k in da
                                      if k != "training/history/wall_s")


def _run(prefix, out, max_train, max_test, extra=()):
    env = dict(os.environ, **{k: "1" for k in H.THREAD_ENV_VARS})
    cmd = prefix + [sys.executable, "-m", "neurosim.cli", "train", "--model", MODEL,
                    "--epochs", "1", "--max-train", str(max_train), "--max-test", str(max_test),
                    "--out", str(out), "--force", *extra]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    with h5py.File(out, "r") as f:
        bs = json.loads(f["training"].attrs["config"])["batch_size"]
        return float(f["training/history/wall_s"][-1]), (int(f["training"].attrs["iteration"]), bs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--max-train", type=int, default=3840)
    ap.add_argument("--max-test", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="JSON-lines file (default results/).")
    a = ap.parse_args(argv)
    mpi = _mpiexec()
    if mpi is None:
        raise SystemExit("needs mpiexec: pip install 'neurosim[mpi]'")
    par = [mpi, "-n", str(a.ranks)]
    dist = ["--distributed", "mpi"]
    with tempfile.TemporaryDirectory(prefix="bench-dist-") as tmp:
        one, many = Path(tmp) / "one.h5", Path(tmp) / "many.h5"
        _run([], one, 256, 100)                         # warm-up: compile / load the cache
        _run(par, many, 256, 100, dist)
        t1, tp = [], []
        for i in range(a.runs):
            s1, (iters, bs) = _run([], one, a.max_train, a.max_test)
            sp, _ = _run(par, many, a.max_train, a.max_test, dist)
            if not _same(one, many):
                raise SystemExit("the MPI run differs from the one-process run; nothing recorded")
            t1.append(s1)
            tp.append(sp)
            print(f"run {i + 1}: 1 process {s1:.2f} s, {a.ranks} ranks {sp:.2f} s "
                  f"(speed-up {s1 / sp:.2f})", file=sys.stderr, flush=True)
    ups = [x / y for x, y in zip(t1, tp)]
    case = f"{MODEL}/fashion-mnist"
    extra = dict(what=f"one epoch on the first {a.max_train} training samples ({iters} batches "
                      f"of {bs}) + a test pass on {a.max_test} samples; history/wall_s of the run "
                      "file (no start-up, no compilation); runs alternate 1 process / MPI",
                 ranks=a.ranks, max_train=a.max_train, max_test=a.max_test, batches=iters,
                 bit_identical=True, loadavg=list(os.getloadavg()),
                 mpi=subprocess.run([mpi, "--version"], capture_output=True,
                                    text=True).stdout.splitlines()[:1])
    kw = dict(n_runs=a.runs, batch=bs, dtype="float32", seed=0, extra=extra, path=a.out)
    H.record("distributed", case, "neurosim", "epoch_s", "s", median=statistics.median(t1),
             min=min(t1), max=max(t1), threads=1, **kw)
    H.record("distributed", case, "neurosim-mpi", "epoch_s", "s", median=statistics.median(tp),
             min=min(tp), max=max(tp), threads=a.ranks, **kw)
    H.record("distributed", case, "neurosim-mpi", "speedup", "x", median=statistics.median(ups),
             min=min(ups), max=max(ups), threads=a.ranks, **kw)


if __name__ == "__main__":
    main()
