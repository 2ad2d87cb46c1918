"""Speed-up, time split and bytes of data-parallel SPIDE training over MPI
(`docs/distributed.md`, issue 30 item 3).

For each case (``fsnn_mlp_fmnist`` at batch 64, ``lenet_mnist`` at batch 128) a fixed
number of training steps on the first Fashion-MNIST images (random images where the data
set is not installed), timed in a worker process: one process (``spide_step`` without an
engine, the baseline) and ``mpiexec -n P`` (the sharded step,
:class:`neurosim.training.distributed.ShardedEngine`), one Numba / BLAS thread per rank,
alternating run by run so that a shared machine's load hits both alike.  Each worker first
runs one untimed step (compilation, caches).  The two must end with bit-identical
parameters and momentum (a hash of them), else nothing is recorded.

Records (``benchmarks/results/distributed.jsonl``, the project's record keys):
``s_per_step`` for ``neurosim`` (P = 1) and ``neurosim-mpi`` (threads = P ranks),
``speedup`` (per pair), ``bytes_per_step`` per rank (``extra.per_rank``: what each rank
sent: rank 0 the input / mask slices, its outputs and the new weights; the others their
output rows and their gradient subtree sums), with ``extra.split_s`` (seconds per step:
commands, forward, gather_outputs, backward, gradients, reduce, update) and
``extra.loadavg`` before and after.  The machine's load is recorded, not controlled:
numbers taken while other jobs run are a lower bound for P > 1 (the second rank has no
free core to run on).

    python -m benchmarks.bench_distributed [--ranks 2] [--steps 4] [--runs 3] [--cases lenet_mnist]
"""
import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import _harness as H

CASES = {"fsnn_mlp_fmnist": 64, "lenet_mnist": 128}


def _mpiexec():
    here = Path(sys.executable).parent
    for name in ("mpiexec", "mpirun"):
        if (here / name).exists():
            return str(here / name)
    return shutil.which("mpiexec") or shutil.which("mpirun")


def _digest(model, opt):
    h = hashlib.sha256()
    for k, v in sorted(model.parameters().items()):
        h.update(k.encode() + np.ascontiguousarray(v).tobytes())
    for k, v in sorted(opt.state().items()):
        h.update(k.encode() + np.ascontiguousarray(v).tobytes())
    return h.hexdigest()[:16]


def worker(case, B, steps, out, mpi):
    """Run ``steps`` timed SPIDE steps (after one untimed) and write a JSON summary."""
    from benchmarks.bench_training import load_inputs
    from neurosim.models import load_model
    from neurosim.training.spide import SGD, SPIDEModel, spide_step
    from neurosim.training.trainer import config_for
    from neurosim.training import distributed as dist
    eng = None
    if mpi:
        eng = dist.ShardedEngine(dist.mpi_comm())
        if eng.rank != 0:
            eng.serve()
            return
    net = load_model(case, seed=0)
    cfg, _ = config_for(net, {})
    model = SPIDEModel(net, 10, readout=True, seed=0)
    model.apply_norm_cap(cfg.norm_cap)
    opt = SGD(cfg.momentum, cfg.weight_decay)
    x, y, what = load_inputs(B * (steps + 1), 0)
    if len(net.populations[model.input].shape) == 1:
        x = x.reshape(len(x), -1)
    rng = np.random.default_rng(1)
    if eng is not None:
        eng.start(model)
    try:
        spide_step(model, x[:B], y[:B], cfg, rng, 0.01, opt, engine=eng)     # warm-up
        split = {}
        if eng is not None:
            eng.timing.clear()
        sent = []
        t0 = time.perf_counter()
        for i in range(1, steps + 1):
            sl = slice(i * B, (i + 1) * B)
            r = spide_step(model, x[sl], y[sl], cfg, rng, 0.01, opt, engine=eng)
            if eng is None:
                for k, v in (("forward", r.fwd_s), ("backward", r.bwd_s),
                             ("gradients_update", r.update_s)):
                    split[k] = split.get(k, 0.0) + v
            else:
                sent.append(list(eng.sent))
        wall = (time.perf_counter() - t0) / steps
    finally:
        if eng is not None:
            eng.stop()
    if eng is not None:
        split = dict(eng.timing)
        # the update on rank 0 (spide_step's update_s less the phases' share is not
        # separable here): what is left of the step's wall time
        split["update_and_rest"] = wall * steps - sum(split.values())
    Path(out).write_text(json.dumps(dict(
        s_per_step=wall, split_s={k: v / steps for k, v in split.items()},
        sent_per_rank=(np.mean(sent, axis=0).tolist() if sent else [0.0]),
        digest=_digest(model, opt), input=what)))


def _run(prefix, case, B, steps, out, mpi):
    env = dict(os.environ, **{k: "1" for k in H.THREAD_ENV_VARS})
    cmd = prefix + [sys.executable, "-m", "benchmarks.bench_distributed", "--worker", case,
                    "--batch", str(B), "--steps", str(steps), "--json", str(out)] + \
        (["--mpi"] if mpi else [])
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return json.loads(Path(out).read_text())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--out", type=Path, default=None, help="JSON-lines file (default results/).")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    ap.add_argument("--mpi", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return worker(a.worker, a.batch, a.steps, a.json, a.mpi)
    mpi = _mpiexec()
    if mpi is None:
        raise SystemExit("needs mpiexec: pip install 'neurosim-events[mpi]'")
    par = [mpi, "-n", str(a.ranks)]
    for case in a.cases:
        B = CASES[case]
        load0 = list(os.getloadavg())
        one, many = [], []
        with tempfile.TemporaryDirectory(prefix="bench-dist-") as tmp:
            for i in range(a.runs):
                s1 = _run([], case, B, a.steps, Path(tmp) / "one.json", False)
                sp = _run(par, case, B, a.steps, Path(tmp) / "many.json", True)
                if s1["digest"] != sp["digest"]:
                    raise SystemExit(f"{case}: the MPI run differs from the one-process run; "
                                     "nothing recorded")
                one.append(s1)
                many.append(sp)
                print(f"{case} run {i + 1}: 1 process {s1['s_per_step']:.3f} s/step, "
                      f"{a.ranks} ranks {sp['s_per_step']:.3f} s/step (speed-up "
                      f"{s1['s_per_step'] / sp['s_per_step']:.2f})", file=sys.stderr, flush=True)
        t1 = [r["s_per_step"] for r in one]
        tp = [r["s_per_step"] for r in many]
        ups = [x / y for x, y in zip(t1, tp)]
        sent = np.mean([r["sent_per_rank"] for r in many], axis=0).tolist()
        med = lambda runs: {k: statistics.median(r["split_s"][k] for r in runs)
                            for k in runs[0]["split_s"]}
        extra = dict(what=f"{a.steps} SPIDE training steps of batch {B} after one untimed "
                          "step, in a worker process (spide_step; P ranks: ShardedEngine); "
                          "runs alternate 1 process / MPI; parameters and momentum "
                          "bit-identical",
                     ranks=a.ranks, steps=a.steps, input=one[0]["input"], bit_identical=True,
                     loadavg=dict(before=load0, after=list(os.getloadavg())),
                     note="shared machine: other engineers' jobs were running (load above); "
                          "not an idle-machine measurement",
                     mpi=subprocess.run([mpi, "--version"], capture_output=True,
                                        text=True).stdout.splitlines()[:1])
        kw = dict(n_runs=a.runs, batch=B, dtype="float32", seed=0, path=a.out)
        H.record("distributed", case, "neurosim", "s_per_step", "s", median=statistics.median(t1),
                 min=min(t1), max=max(t1), threads=1, extra=dict(extra, split_s=med(one)), **kw)
        H.record("distributed", case, "neurosim-mpi", "s_per_step", "s",
                 median=statistics.median(tp), min=min(tp), max=max(tp), threads=a.ranks,
                 extra=dict(extra, split_s=med(many)), **kw)
        H.record("distributed", case, "neurosim-mpi", "speedup", "x", median=statistics.median(ups),
                 min=min(ups), max=max(ups), threads=a.ranks,
                 goal=1.7 if case == "lenet_mnist" else None, extra=extra, **kw)
        H.record("distributed", case, "neurosim-mpi", "bytes_per_step", "B", median=max(sent),
                 min=min(sent), max=max(sent), threads=a.ranks,
                 extra=dict(extra, per_rank=sent), **kw)


if __name__ == "__main__":
    main()
