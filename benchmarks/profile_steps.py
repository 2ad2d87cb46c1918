"""Where a SPIDE step's time goes: seconds per named schedule step (the profiled build).

    python -m benchmarks.profile_steps                     # lenet_mnist, convnetf_mnist; 1 thread, 5 reps
    python -m benchmarks.profile_steps --cases lenet_mnist --reps 3 --batch 32
    python -m benchmarks.profile_steps --table             # rewrite the README section from the records

The worker process runs with ``NEUROSIM_PROFILE=1`` (the kernels built with the step
profile, docs/decisions.md 70; its own compilation, kept in the Numba cache) and one
thread (:mod:`benchmarks._harness`).  Per case: the inputs, weights and dropout masks of
``benchmarks/bench_training.py`` (batch 128, seed 0, learning rate 0), one untimed
:func:`neurosim.training.spide_step`, then ``--reps`` timed ones; each phase's
``PhaseResult.profile`` (cycles of each named step summed over the samples, converted
with the calibrated counter rate) gives seconds per sample per step.

Records (``benchmarks/results/profile.jsonl``): ``bench: "profile"``, ``case`` = model,
``impl: "neurosim"``, ``metric`` = ``"<phase>/<step>"`` (phase ``forward`` or
``backward``, step one of :data:`neurosim.kernels.layout.STEP_NAMES`), unit s per
sample (median, min and max over the reps); ``extra.share`` is the step's median share
of the phase's profiled total, ``extra.phase_wall_s_per_sample`` the phase's wall time
as ``spide_step`` measures it (so the part of the phase outside the kernel, in Python,
is the difference).  The profile's own cost is in the numbers (a counter read per step
and population, tens of cycles each), so compare shares, not these times with
``bench_training``'s.
"""
import argparse
import os
import sys
import time
import uuid

import numpy as np

from . import _harness as H

BENCH = "profile"
CASES = ("lenet_mnist", "convnetf_mnist")
_ENV_RUN = "NEUROSIM_BENCH_RUN_ID"
START, END = "<!-- profile:start -->", "<!-- profile:end -->"


def _loadavg():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def profile_case(case, threads, reps, seed, B):
    """The timed steps of one case; appends the records."""
    from neurosim import config
    from neurosim.engine import cycles_per_second
    from neurosim.kernels.layout import STEP_NAMES
    from neurosim.training.spide import spide_step
    from .bench_training import _fixed_masks, _setup, load_inputs
    if not config.PROFILE:
        raise SystemExit("profile_steps: the worker needs NEUROSIM_PROFILE=1")
    x, y, input_desc = load_inputs(B, seed)
    net, cfg, model, masks, opt = _setup(case, B, seed)
    _fixed_masks(masks)
    rng = np.random.default_rng(seed)
    load0 = _loadavg()
    spide_step(model, x, y, cfg, rng, 0.0, opt, n_threads=threads)      # compile / warm up
    per = {ph: {s: [] for s in STEP_NAMES} for ph in ("forward", "backward")}
    shares = {ph: {s: [] for s in STEP_NAMES} for ph in per}
    walls = {ph: [] for ph in per}
    for _ in range(reps):
        res = spide_step(model, x, y, cfg, rng, 0.0, opt, n_threads=threads)
        for ph, r, wall in (("forward", res.forward, res.fwd_s), ("backward", res.backward, res.bwd_s)):
            total = sum(r.profile.values())
            walls[ph].append(wall / B)
            for s, sec in r.profile.items():
                per[ph][s].append(sec / B)
                shares[ph][s].append(sec / total)
    common = dict(run_id=os.environ.get(_ENV_RUN, ""), input=input_desc, T=cfg.T, T_b=cfg.T_b,
                  loadavg=dict(before=load0, after=_loadavg()),
                  cycles_per_s=cycles_per_second(),
                  what="PhaseResult.profile of spide_step's phases (NEUROSIM_PROFILE=1), "
                       "seconds per sample per named schedule step (thread time)")
    for ph in per:
        wall = float(np.median(walls[ph]))
        for s in STEP_NAMES:
            v = per[ph][s]
            H.record(BENCH, case, "neurosim", f"{ph}/{s}", "s", median=float(np.median(v)),
                     min=min(v), max=max(v), n_runs=len(v), threads=threads, batch=B, seed=seed,
                     dtype="float32",
                     extra=dict(common, phase=ph, step=s, share=float(np.median(shares[ph][s])),
                                phase_wall_s_per_sample=wall))


def _load1(la):
    return f"{la[0]:.2f}" if la else "?"


def table(records):
    """Markdown of the latest run per case: per step, seconds per sample and share, both
    phases side by side."""
    from neurosim.kernels.layout import STEP_NAMES
    runs = {}
    for r in records:
        if r.get("bench") == BENCH:
            runs.setdefault(r["case"], {}).setdefault(r["extra"].get("run_id", ""), []).append(r)
    out = []
    for case, by_run in runs.items():
        rs = max(by_run.values(), key=lambda rr: max(r.get("date", "") for r in rr))
        m = {(r["extra"]["phase"], r["extra"]["step"]): r for r in rs}
        any_r = rs[0]
        la = any_r["extra"].get("loadavg") or {}
        out.append(f"**{case}**, batch {any_r['batch']}, {any_r['threads']} thread, "
                   f"T = {any_r['extra'].get('T')}, T_b = {any_r['extra'].get('T_b')}; "
                   f"median of {any_r['n_runs']} steps; commit {any_r.get('commit', '')}, "
                   f"{(any_r.get('date') or '')[:10]}, {any_r.get('machine', '?')}; "
                   f"1-min load average {_load1(la.get('before'))} before, "
                   f"{_load1(la.get('after'))} after.\n")
        out.append("| step | forward µs/sample | share | backward µs/sample | share |")
        out.append("|---|--:|--:|--:|--:|")
        tot = {}
        for s in STEP_NAMES:
            cells = [s]
            for ph in ("forward", "backward"):
                r = m.get((ph, s))
                if r is None:
                    cells += ["", ""]
                    continue
                tot[ph] = tot.get(ph, 0.0) + r["median"]
                cells += [f"{1e6 * r['median']:.1f}", f"{100 * r['extra']['share']:.1f} %"]
            out.append("| " + " | ".join(cells) + " |")
        cells = ["profiled total"]
        for ph in ("forward", "backward"):
            cells += [f"{1e6 * tot.get(ph, 0.0):.1f}", ""]
        out.append("| " + " | ".join(cells) + " |")
        cells = ["phase wall time (spide_step)"]
        for ph in ("forward", "backward"):
            r = m.get((ph, STEP_NAMES[0]))
            cells += [f"{1e6 * r['extra']['phase_wall_s_per_sample']:.1f}" if r else "", ""]
        out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out) if out else "_No records yet: run the benchmark._\n"


def write_table(readme=H.BENCH_DIR / "README.md"):
    text = readme.read_text()
    a, b = text.index(START), text.index(END)
    body = table(H.load_records([H.RESULTS_DIR / f"{BENCH}.jsonl"]))
    new = text[:a + len(START)] + "\n<!-- generated by `python -m benchmarks.profile_steps " \
        "--table`; do not edit -->\n" + body + "\n" + text[b:]
    if new != text:
        readme.write_text(new)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile_steps",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"subset of {','.join(CASES)}")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", action="store_true",
                    help="rewrite the profile section of benchmarks/README.md from the records")
    args = ap.parse_args(argv)
    if args.table:
        write_table()
        return 0
    cases = [c for c in args.cases.split(",") if c]
    bad = [c for c in cases if c not in CASES]
    if bad:
        ap.error(f"unknown case(s) {bad}; known: {list(CASES)}")
    if args.reps < 1:
        ap.error("--reps must be >= 1")
    n = H.worker_threads()
    if n is not None:
        H.check_threads(n)
        for case in cases:
            t0 = time.perf_counter()
            profile_case(case, n, args.reps, args.seed, args.batch)
            print(f"[profile] {case}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        return 0
    os.environ[_ENV_RUN] = uuid.uuid4().hex[:12]
    os.environ["NEUROSIM_PROFILE"] = "1"         # the worker's kernels: the profiled build
    codes = H.run_workers("benchmarks.profile_steps", [args.threads],
                          ["--cases", ",".join(cases), "--reps", str(args.reps), "--seed",
                           str(args.seed), "--batch", str(args.batch)], cache=True)
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
