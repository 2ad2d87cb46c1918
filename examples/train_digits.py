"""Train SPIDE's default feedback spiking MLP on the bundled 8x8 digits, through the Python API.

Reproduces the event-driven version of SPIDE training (Xiao et al., "SPIDE: A purely
spike-based method for training feedback spiking neural networks", Neural Networks 2023,
arXiv:2302.00232): forward phase with binary spikes, backward phase with ternary spikes,
local weight updates from the two phases' average rates.

    python examples/train_digits.py                 # the full default run (~15 s)
    python examples/train_digits.py --epochs 1 --max-train 200   # a smoke test
"""
import argparse
import tempfile
from pathlib import Path

from neurosim.training.checkpoint import load_checkpoint
from neurosim.training.trainer import train


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--max-train", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    out = a.out or Path(tempfile.mkdtemp()) / "digits-train.h5"
    summary = train("fsnn_mlp", "digits", out=out, force=True,
                    overrides={"epochs": a.epochs}, max_train=a.max_train,
                    report=lambda line: print(line, flush=True))
    _, st = load_checkpoint(out)
    h = st["history"]
    print(f"test accuracy {summary['test_accuracy']:.4f} after {summary['epochs']} epochs")
    print("per training sample, last epoch: forward %.0f synaptic events, backward %.0f "
          "(+1) / %.0f (-1), weight update %.0f MACs" % (h["fwd_synops"][-1], h["bwd_synops_pos"][-1],
                                                          h["bwd_synops_neg"][-1], h["update_macs"][-1]))
    print(f"run file: {out}")
    return summary


if __name__ == "__main__":
    main()
