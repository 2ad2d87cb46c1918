"""Regenerate the results table of benchmarks/README.md from the JSON-lines records.

``python -m benchmarks.report`` keeps, for every (bench, case, impl, threads, metric), the
latest record of ``benchmarks/results/*.jsonl`` (leaving out the "before" records of
before/after sittings, ``extra.sitting_role`` starting with "before": they are history,
not the current state, whatever order a sitting ran in) and rewrites the text between
``<!-- results:start -->`` and ``<!-- results:end -->`` in benchmarks/README.md.
``--check`` only reports whether the README is up to date (exit status 1 if not);
``--print`` writes the generated section to stdout instead of the README.

Goals are lower bounds on the median (every goal of these benchmarks is a throughput or
a speedup).  Nobody types numbers into the README.
"""
import argparse
import sys
from pathlib import Path

from . import _harness as H

README = H.BENCH_DIR / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
KEY = ("bench", "case", "impl", "threads", "metric")
_METRIC_ORDER = {"events_per_s": 0, "s_per_sample": 1, "speedup_vs_numpy-dense": 2,
                 "speedup_vs_torch-dense": 2, "speedup_2t_vs_1t": 3, "peak_mem_mb": 4,
                 "compile_s": 9}
_IMPL_ORDER = {"neurosim": 0, "c-loop": 1, "torch-dense": 2, "numpy-dense": 3}


def latest(records):
    """Latest record per (bench, case, impl, threads, metric); later lines win ties."""
    out = {}
    for i, r in enumerate(records):
        k = tuple(r.get(f) for f in KEY)
        rank = (r.get("date") or "", i)
        if k not in out or rank >= out[k][0]:
            out[k] = (rank, r)
    return [r for _, r in out.values()]


def fmt(x):
    """Three significant digits for floats."""
    if x is None:
        return ""
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _check(r):
    """'ok' / 'MISMATCH' from the record's cross-check, '' when it has none."""
    e = r.get("extra") or {}
    flags = []
    if isinstance(e.get("check"), dict) and "identical_spike_counts" in e["check"]:
        flags.append(bool(e["check"]["identical_spike_counts"]))
    if "same_as_neurosim" in e:
        flags.append(bool(e["same_as_neurosim"]))
    if "kernel_event_count_ok" in e:
        flags.append(bool(e["kernel_event_count_ok"]))
    if "rates_agree" in e:
        flags.append(bool(e["rates_agree"]))
    if not flags:
        return ""
    return "ok" if all(flags) else "MISMATCH"


def _goal(r):
    g = r.get("goal")
    if g is None:
        return ""
    ok = r["median"] >= g
    return f">= {fmt(float(g))}: " + ("met" if ok else f"missed ({r['median'] / g:.2f} of goal)")


#: benches rendered elsewhere (the sparsity sweep: README.md, :func:`sparsity_section`; the
#: fidelity runs: docs/training.md, ``python -m benchmarks.bench_fidelity --table``; the
#: thread-contention runs: docs/reliability.md, "Shared machines: threads"; the step
#: profile: its own README section, ``python -m benchmarks.profile_steps --table``).
SEPARATE = ("sparsity", "fidelity", "contention", "profile")


def _loads(la):
    """The load-average triples of a record: one list, or ``{"before": .., "after": ..}``."""
    if isinstance(la, dict):
        return [v for v in la.values() if v]
    return [la] if la else []


def table(records):
    """Markdown for the latest records: one table per bench, then the provenance."""
    records = [r for r in records if r.get("bench") not in SEPARATE]
    recs = latest(records)
    if not recs:
        return "_No records yet: run a benchmark._\n"
    case_order = {}
    for r in records:
        case_order.setdefault((r["bench"], r["case"]), len(case_order))
    recs.sort(key=lambda r: (r["bench"], case_order[(r["bench"], r["case"])],
                             _METRIC_ORDER.get(r["metric"], 5), _IMPL_ORDER.get(r["impl"], 5),
                             r["impl"], r["threads"]))
    lines = []
    for bench in sorted({r["bench"] for r in recs}):
        rs = [r for r in recs if r["bench"] == bench]
        lines.append(f"### `{bench}`\n")
        lines.append("| case | impl | metric | threads | batch | median | min | max | unit | goal "
                     "| check | n | commit | date (UTC) |")
        lines.append("|---|---|---|--:|--:|--:|--:|--:|---|---|---|--:|---|---|")
        for r in rs:
            lines.append("| " + " | ".join([
                r["case"], r["impl"], r["metric"], str(r["threads"]), str(r["batch"]),
                f"**{fmt(r['median'])}**", fmt(r["min"]), fmt(r["max"]), r["unit"], _goal(r),
                _check(r), str(r["n_runs"]), r.get("commit", ""),
                (r.get("date") or "").replace("+00:00", "").replace("T", " ")]) + " |")
        lines.append("")
        if bench == "cuba":
            lines.extend(cuba_summary(rs))
        if bench == "compile":
            lines.extend(compile_summary(rs))
        machines = sorted({r.get("machine", "?") for r in rs})
        envs = sorted({f"numba {r.get('numba_version')}, numpy {r.get('numpy_version')}, "
                       f"python {r.get('python')}, neurosim {r.get('version')}" for r in rs})
        loads = [la[0] for r in rs for la in _loads((r.get("extra") or {}).get("loadavg"))]
        lines.append(f"Machine: {'; '.join(machines)}.  Software: {'; '.join(envs)}.")
        if loads:
            lines.append(f"1-min load average during the timed records: {min(loads):.2f} to "
                         f"{max(loads):.2f}.")
        lines.append("")
    return "\n".join(lines)


def cuba_summary(recs):
    """Markdown lines: the CUBA records side by side (wall time, speedup over Brian2
    cpp_standalone, spikes, synaptic events, events/s, mean rate ± run-to-run sd, ISI CV)."""
    walls = {(r["case"], r["threads"], r["impl"]): r for r in recs if r["metric"] == "wall_s"}
    if not walls:
        return []
    lines = ["", "| case | threads | impl | wall (ms) | vs brian2-cpp_standalone | spikes | "
             "synaptic events | events/s | rate (Hz) | rates agree | ISI CV | load |",
             "|---|--:|---|--:|--:|--:|--:|--:|--:|---|--:|---|"]
    impls = {"neurosim": 0, "brian2-cpp_standalone": 1, "brian2-cython": 2}
    for (case, th, impl), r in sorted(walls.items(), key=lambda kv: (
            kv[0][0], kv[0][1], impls.get(kv[0][2], 9))):
        e = r.get("extra") or {}
        b = walls.get((case, th, "brian2-cpp_standalone"))
        vs = f"{b['median'] / r['median']:.2f}x" if b else ""
        agree = "(reference)" if impl == "neurosim" else (
            "" if "rates_agree" not in e else ("yes" if e["rates_agree"] else "NO"))
        load = e.get("loadavg")
        lines.append("| " + " | ".join([
            case, str(th), impl + (f" ({e['engine_path']})" if e.get("engine_path") else ""),
            f"**{r['median'] * 1e3:.1f}**", vs, fmt(e.get("spikes")), fmt(e.get("events")),
            fmt(e.get("events_per_s")),
            f"{e['rate_hz_mean']:.2f} ± {e['rate_hz_sd']:.2f}" if "rate_hz_mean" in e else "",
            agree, fmt(e.get("cv_isi")), f"{load[0]:.1f}-{load[1]:.1f}" if load else ""]) + " |")
    lines.append("")
    return lines


#: rows of the per-function compile table of each stage (``bench_compile``)
COMPILE_TOP = 12


def compile_summary(recs):
    """Markdown lines: per stage of ``bench_compile``, the functions that took longest to
    compile (exclusive seconds: without the functions compiled inside them)."""
    lines = []
    for r in recs:
        fns = (r.get("extra") or {}).get("functions")
        if r["metric"] != "compile_s" or not fns:
            continue
        key = "exclusive_cpu_s" if "exclusive_cpu_s" in fns[0] else "exclusive_s"
        total = sum(f[key] for f in fns)
        e = r.get("extra") or {}
        lines.append(f"Stage `{r['case']}`: {len(fns)} functions, {e.get('n_compiles')} "
                     f"compiles, {r['median']:.1f} s wall (LLVM {e.get('llvm_s', 0):.1f} s)"
                     + (f", {total:.1f} CPU s" if key == "exclusive_cpu_s" else "")
                     + f"; the {min(COMPILE_TOP, len(fns))} longest (by {key}):\n")
        lines.append("| function | compiles | exclusive CPU s | inclusive CPU s | exclusive s "
                     "| inclusive s | LLVM s | share |")
        lines.append("|---|--:|--:|--:|--:|--:|--:|--:|")
        for f in fns[:COMPILE_TOP]:
            lines.append(f"| `{f['function'].removeprefix('neurosim.')}` | {f['count']} | "
                         f"{f.get('exclusive_cpu_s', float('nan')):.2f} | "
                         f"{f.get('inclusive_cpu_s', float('nan')):.2f} | "
                         f"{f['exclusive_s']:.2f} | {f['inclusive_s']:.2f} | {f['llvm_s']:.2f} | "
                         + (f"{f[key] / total:.0%} |" if total else " |"))
        lines.append("")
    return lines


def render(readme_text, body):
    if START not in readme_text or END not in readme_text:
        raise SystemExit(f"{README}: markers {START} / {END} not found")
    head, rest = readme_text.split(START, 1)
    _, tail = rest.split(END, 1)
    return head + START + "\n<!-- generated by `python -m benchmarks.report`; do not edit -->\n\n" \
        + body + "\n" + END + tail


# ---------------------------------------------------------------------------------------
# the sparsity sweep (README.md)
SPARSITY_README = H.REPO_ROOT / "README.md"
SP_START, SP_END = "<!-- sparsity-results:start -->", "<!-- sparsity-results:end -->"


def _sweep_points(recs):
    """Points of one sweep (records sharing ``sweep`` and ``case``), in record order."""
    points = {}
    for r in recs:
        p = points.setdefault(r["case"], dict(params=r["params"], extra=r.get("extra") or {},
                                              commit=r.get("commit"), date=r.get("date")))
        key = r["metric"] if r["metric"] != "s_per_sample" else f"s_{r['impl']}"
        p[key] = r["median"]
    return list(points.values())


def sparsity_section(records):
    """Markdown of the latest sweep of every model/data set in the sparsity records."""
    from neurosim.experiments.sparsity import crossover
    recs = [r for r in records if r.get("bench") == "sparsity"]
    if not recs:
        return "_No sparsity sweep recorded yet: run `neurosim bench sparsity`._\n"
    by_model = {}
    for r in recs:
        by_model.setdefault(r["case"].split(" ", 1)[0], []).append(r)
    lines = []
    for model, rs in sorted(by_model.items()):
        last = max(rs, key=lambda r: (r.get("date") or "", r["sweep"]))["sweep"]
        rs = [r for r in rs if r["sweep"] == last]
        pts = _sweep_points(rs)
        r0 = rs[0]
        prm = pts[0]["params"]
        cmd = pts[0]["extra"].get("command") or "neurosim bench sparsity"
        lines.append(f"**{model}** — sweep {last}: {len(pts)} points, {prm['epochs']} training "
                     f"epoch(s) each" + (f" on {prm['max_train']} training samples" if prm.get("max_train") else "")
                     + f", {r0['threads']} thread(s); `{cmd}`; commit {r0.get('commit')}, "
                     f"{r0.get('machine')}.\n")
        lines.append("| T | T_b | v_th | κ | dropout | test accuracy | training ops / sample | "
                     "inference ops / sample | dense-equivalent MACs / sample | activity | "
                     "event-driven µs / sample | dense µs / sample | event / dense |")
        lines.append("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        cx_pts = []
        for p in pts:
            q = p["params"]
            act = p["extra"].get("activity")
            ev, de = p.get("s_neurosim"), p.get("s_numpy-dense")
            ratio = ev / de if ev and de else None
            cx_pts.append(dict(activity=act, time_ratio=ratio))
            g = lambda v, spec=".3g": "-" if v is None else format(v, spec)
            lines.append("| " + " | ".join([
                str(q["T"]), str(q["T_b"]), g(q["v_th"], "g") if q["v_th"] is not None else "model",
                g(q["kappa"], "g"), "model" if q["dropout"] is None else g(q["dropout"], "g"),
                f"**{p['test_accuracy']:.4f}**", g(p.get("train_ops_per_sample")),
                g(p.get("inference_ops_per_sample")), g(p.get("inference_dense_macs_per_sample")),
                g(act), g(None if ev is None else ev * 1e6), g(None if de is None else de * 1e6),
                g(ratio)]) + " |")
        lines.append("")
        lines.append(f"Crossover: {crossover(cx_pts)['note']}.\n")
    return "\n".join(lines)


def write_sparsity_readme(records, path=SPARSITY_README, check=False):
    """Rewrite the sparsity section of README.md; with ``check`` only compare."""
    text = Path(path).read_text()
    if SP_START not in text or SP_END not in text:
        raise SystemExit(f"{path}: markers {SP_START} / {SP_END} not found")
    head, rest = text.split(SP_START, 1)
    _, tail = rest.split(SP_END, 1)
    new = (head + SP_START + "\n<!-- generated by `python -m benchmarks.report --sparsity`; "
           "do not edit -->\n\n" + sparsity_section(records) + "\n" + SP_END + tail)
    if check:
        return new == text
    if new != text:
        Path(path).write_text(new)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", help="JSON-lines files (default: benchmarks/results/*.jsonl)")
    ap.add_argument("--readme", default=str(README))
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="exit 1 if the README is out of date")
    g.add_argument("--print", action="store_true", help="print the section instead of writing")
    ap.add_argument("--sparsity", action="store_true",
                    help="the sparsity-sweep section of README.md instead (latest sweep per model)")
    args = ap.parse_args(argv)
    if args.sparsity:
        recs = H.load_records(args.files or [H.RESULTS_DIR / "sparsity.jsonl"])
        if args.print:
            sys.stdout.write(sparsity_section(recs))
            return 0
        ok = write_sparsity_readme(recs, check=args.check)
        if args.check and not ok:
            print(f"{SPARSITY_README} sparsity section is out of date: run python -m "
                  "benchmarks.report --sparsity", file=sys.stderr)
            return 1
        return 0
    recs = [r for r in H.load_records(args.files or None)
            if not str((r.get("extra") or {}).get("sitting_role", "")).startswith("before")]
    body = table(recs)
    if args.print:
        sys.stdout.write(body)
        return 0
    path = Path(args.readme)
    old = path.read_text()
    new = render(old, body)
    if args.check:
        if new != old:
            print(f"{path} is out of date: run python -m benchmarks.report", file=sys.stderr)
            return 1
        return 0
    if new != old:
        path.write_text(new)
    print(f"{path}: results section {'rewritten' if new != old else 'already up to date'}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
