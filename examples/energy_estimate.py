"""Estimate the energy of training and running a SPIDE model on event-driven hardware.

An ESTIMATE from exact operation counts and per-operation energy profiles
(:mod:`neurosim.ops`, ``docs/ops-energy.md``): by default 45 nm CMOS fp32 arithmetic,
0.9 pJ per accumulate (one synaptic event) and 4.6 pJ per multiply-accumulate
(Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014);
``--profile loihi`` prices synaptic events and neuron updates with the figures of Davies
et al., IEEE Micro 2018.  Memory traffic, routing and static power are not included.
The baselines are an ANN of the same shape (one dense pass; training = forward + error
propagation + weight gradient) and the same SNN trained densely with BPTT over T steps.

    python examples/energy_estimate.py RUN.h5        # a run file from `neurosim train`
    python examples/energy_estimate.py               # trains a tiny model first
    neurosim ops RUN.h5 --profile loihi              # the same numbers, per layer, from the CLI
"""
import argparse
import tempfile
from pathlib import Path

from neurosim import ops
from neurosim.training.trainer import train


def estimate(run_file, profile="cmos45-fp32", n_samples=32):
    """Energy per sample (joules) of SNN training and inference and of the baselines."""
    table = ops.read_ops(run_file, n_samples=n_samples)
    e = ops.estimate_table(table, profile)
    j = lambda pj: None if pj is None else pj * 1e-12
    return dict(train_j=j(e["snn"]["training_pj"]), infer_j=j(e["snn"]["inference_pj"]),
                ann_infer_j=j(e["ann"]["inference_pj"]), ann_train_j=j(e["ann"]["training_pj"]),
                bptt_infer_j=j(e["bptt"]["inference_pj"]), bptt_train_j=j(e["bptt"]["training_pj"]),
                ratios=e["ratios"], table=table, estimate=e)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", type=Path)
    ap.add_argument("--profile", default="cmos45-fp32", help="cmos45-fp32, loihi, or a .toml file")
    ap.add_argument("--max-train", type=int, default=300)
    a = ap.parse_args(argv)
    run = a.run
    if run is None:
        run = Path(tempfile.mkdtemp()) / "tiny.h5"
        train("fsnn_mlp", "digits", out=run, overrides={"epochs": 1}, max_train=a.max_train,
              handle_signals=False)
    e = estimate(run, a.profile)
    print(ops.format_energy(e["estimate"], e["table"]))
    return e


if __name__ == "__main__":
    main()
