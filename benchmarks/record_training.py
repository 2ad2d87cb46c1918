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
    from neurosim.training.trainer import load_checkpoint
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--command")
    ap.add_argument("--threads", type=int)
    a = ap.parse_args(argv)
    for r in record_run(a.run, a.command, a.threads):
        print(json.dumps({k: r[k] for k in ("case", "metric", "median")}))


if __name__ == "__main__":
    main()
