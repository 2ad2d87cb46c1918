"""Record the result of a training run file as benchmark JSON lines.

    python -m benchmarks.record_training RUN.h5 [--command "neurosim train ..."]

Appends to ``benchmarks/results/training_accuracy.jsonl`` one record per metric, read from
the run file (never typed by hand): ``test_accuracy`` (the last epoch), ``train_wall_s``
(the summed epoch wall times), and the op counts per training sample of the last epoch;
``case`` = ``<model>/<dataset>``, ``impl`` = ``neurosim``.  The README and
``benchmarks/README.md`` quote these records through ``benchmarks/report.py``.
"""
import argparse
import json

from benchmarks import _harness as H

BENCH = "training_accuracy"


def record_run(path, command=None, threads=None):
    from neurosim.training.checkpoint import load_checkpoint
    net, st = load_checkpoint(path)
    h = st["history"]
    cfg = st["config"]
    case = f"{st['model']}/{st['dataset']}"
    extra = dict(epochs=int(st["epoch"]), seed=int(cfg["seed"]), command=command or st.get("command"),
                 run_file=str(path), config=cfg,
                 ops_per_training_sample={k: h[k][-1] for k in (
                     "fwd_synops", "encoding_macs", "bwd_synops_pos", "bwd_synops_neg",
                     "update_macs", "fwd_spikes", "bwd_spikes")},
                 test_accuracy_per_epoch=[float(a) for a in h["test_accuracy"]])
    thr = threads or H.worker_threads() if hasattr(H, "worker_threads") else threads
    out = []
    for metric, unit, v in (("test_accuracy", "fraction", h["test_accuracy"][-1]),
                            ("train_wall_s", "s", float(sum(h["wall_s"])))):
        out.append(H.record(BENCH, case, "neurosim", metric, unit, median=v, min=v, max=v,
                            n_runs=1, threads=thr or 0, batch=int(cfg["batch_size"]),
                            dtype=str(net.dtype.__name__), seed=int(cfg["seed"]), extra=extra))
    return out


START, END = "<!-- training-results:start -->", "<!-- training-results:end -->"


def _row_key(r):
    """(case, loss, seed): runs of one model and data set with another loss or seed are
    rows of their own (records without a stored loss count as the model's default)."""
    cfg = r["extra"].get("config") or {}
    return r["case"], str(cfg.get("loss", "")), int(r["extra"].get("seed", r.get("seed", 0)))


def render_table(records):
    """Markdown table of the latest test_accuracy record per (case, loss, seed), with its
    run's facts."""
    latest, walls = {}, {}
    for r in records:
        if r.get("bench") != BENCH:
            continue
        if r["metric"] == "test_accuracy":
            latest[_row_key(r)] = r
        elif r["metric"] == "train_wall_s":
            walls[_row_key(r)] = r["median"]
    lines = ["| model / data set | loss | test accuracy | epochs | seed | training wall time | "
             "ops per training sample (fwd / bwd ±1 / update) | command | commit, date |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, r in sorted(latest.items()):
        case, loss, _ = key
        e = r["extra"]
        o = e["ops_per_training_sample"]
        lines.append(
            f"| {case} | {loss} | **{r['median']:.4f}** | {e['epochs']} | {e['seed']} | "
            f"{walls.get(key, float('nan')):.0f} s ({r['threads']} threads) | "
            f"{o['fwd_synops']:.3g} / {o['bwd_synops_pos'] + o['bwd_synops_neg']:.3g} / "
            f"{o['update_macs']:.3g} | `{e['command']}` | {r['commit']}, {r['date'][:10]} |")
    return "\n".join(lines)


def update_readme(path="README.md"):
    """Rewrite the README section between the training-results markers from the records."""
    from pathlib import Path
    p = Path(path)
    text = p.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{path}: markers {START} / {END} not found")
    recs = H.load_records([H.RESULTS_DIR / f"{BENCH}.jsonl"])
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    p.write_text(head + START + "\n" + render_table(recs) + "\n" + END + tail)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?")
    ap.add_argument("--command")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--readme", action="store_true",
                    help="regenerate the README's training-results table from the records")
    a = ap.parse_args(argv)
    if a.run:
        for r in record_run(a.run, a.command, a.threads):
            print(json.dumps({k: r[k] for k in ("case", "metric", "median")}))
    if a.readme:
        update_readme()


if __name__ == "__main__":
    main()
