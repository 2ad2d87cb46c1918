"""Estimate the energy of training and running a trained SPIDE model on event-driven hardware.

An ESTIMATE from exact operation counts and per-operation energies, following common SNN
practice (Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm CMOS, fp32):
0.9 pJ per accumulate (a synaptic event) and 4.6 pJ per multiply-accumulate (the analog
input encoding and the weight update).  Neuron updates, memory traffic and routing are NOT
included.  The comparison is an ANN of the same shape doing one dense forward (and, for
training, forward + backward + weight gradient ≈ 3×) pass in MACs.

    python examples/energy_estimate.py RUN.h5        # a run file from `neurosim train`
    python examples/energy_estimate.py               # trains a tiny model first
"""
import argparse
import tempfile
from pathlib import Path

from neurosim.models import load_model
from neurosim.training.trainer import load_checkpoint, train

E_AC = 0.9e-12   # J per accumulate, 45 nm fp32
E_MAC = 4.6e-12  # J per multiply-accumulate, 45 nm fp32


def estimate(run_file):
    net, st = load_checkpoint(run_file)
    h = st["history"]
    fwd_ac = h["fwd_synops"][-1]
    bwd_ac = h["bwd_synops_pos"][-1] + h["bwd_synops_neg"][-1]
    enc_mac = h["encoding_macs"][-1]
    upd_mac = h["update_macs"][-1]
    infer_ac = h["test_fwd_synops"][-1]
    infer_mac = h["test_encoding_macs"][-1]
    ann_mac = sum(q.dense_macs for q in net.projections.values() if not q.delay)
    train_j = (fwd_ac + bwd_ac) * E_AC + (enc_mac + upd_mac) * E_MAC
    infer_j = infer_ac * E_AC + infer_mac * E_MAC
    return dict(train_j=train_j, infer_j=infer_j, ann_infer_j=ann_mac * E_MAC,
                ann_train_j=3 * ann_mac * E_MAC, fwd_ac=fwd_ac, bwd_ac=bwd_ac, enc_mac=enc_mac,
                upd_mac=upd_mac)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", type=Path)
    ap.add_argument("--max-train", type=int, default=300)
    a = ap.parse_args(argv)
    run = a.run
    if run is None:
        run = Path(tempfile.mkdtemp()) / "tiny.h5"
        train("fsnn_mlp", "digits", out=run, overrides={"epochs": 1}, max_train=a.max_train)
    e = estimate(run)
    print("ENERGY ESTIMATE (45 nm fp32: 0.9 pJ/AC, 4.6 pJ/MAC; neuron updates and memory excluded)")
    print(f"  training, per sample:  {e['train_j'] * 1e9:8.2f} nJ  (forward {e['fwd_ac']:.0f} AC, "
          f"backward {e['bwd_ac']:.0f} AC, input {e['enc_mac']:.0f} MAC, update {e['upd_mac']:.0f} MAC)")
    print(f"  inference, per sample: {e['infer_j'] * 1e9:8.2f} nJ")
    print(f"  same-shape ANN: inference {e['ann_infer_j'] * 1e9:.2f} nJ, training ~{e['ann_train_j'] * 1e9:.2f} nJ"
          " (one dense pass; 3 passes for training)")
    return e


if __name__ == "__main__":
    main()
