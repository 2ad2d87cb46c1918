"""Behaviour fingerprint: hashes that prove a refactor or a performance change changed nothing.

    python -m benchmarks.fingerprint                 # all parts, printed as JSON
    python -m benchmarks.fingerprint --parts step    # only the SPIDE step hashes
    python -m benchmarks.fingerprint --threads 2

Parts:

* ``step``: one SPIDE training step (:func:`neurosim.training.spide.spide_step`) of
  ``lenet_mnist`` and ``convnetf_mnist`` on a fixed batch of 8 random N(0, 1) images (seed
  0), learning rate 0.1: a sha256 over every forward and backward count array, every per-sample
  op array, every gradient and every parameter after the update (names sorted, raw bytes
  with dtype and shape);
* ``digits``: ``neurosim train --epochs 2 --max-train 400 --max-test 200`` on the bundled
  digits (seed 0): a sha256 over every dataset and attribute of the run file except
  :data:`_VOLATILE` (wall times, the command line, the creation time, the attribute digest
  that covers them), the ``*_version`` attributes and the ``source`` paths inside JSON
  attributes (where the checkout lies): what may differ between two honest runs of the
  same inputs.

Two commits whose fingerprints agree compute the same bits.  This is the check behind
"behaviour unchanged" in refactors (docs/decisions.md) and behind thread-count
independence (``--threads``).
"""
import argparse
import hashlib
import json
import os
import sys
import tempfile

import numpy as np

#: run-file names whose values may differ between honest runs of the same inputs
_VOLATILE = {"command", "created", "attrs_sha256", "wall_s", "network_sha256"}  # (derived)


def _h_update(h, name, a):
    a = np.ascontiguousarray(a)
    h.update(f"{name}:{a.dtype.str}:{a.shape}:".encode())
    h.update(a.tobytes())


def step_hashes(threads=1):
    from neurosim.models import load_model
    from neurosim.training.spide import SGD, SPIDEModel, spide_step
    from neurosim.training.trainer import config_for
    out = {}
    for case in ("lenet_mnist", "convnetf_mnist"):
        rng = np.random.default_rng(0)
        B = 8
        x = rng.normal(size=(B, 1, 28, 28)).astype(np.float32)
        y = rng.integers(0, 10, B).astype(np.int64)
        net = load_model(case, seed=0)
        cfg, _ = config_for(net, {})
        model = SPIDEModel(net, 10, readout=True, seed=0)
        model.apply_norm_cap(cfg.norm_cap)
        opt = SGD(cfg.momentum, cfg.weight_decay)
        res = spide_step(model, x, y, cfg, np.random.default_rng(1), 0.1, opt, n_threads=threads)
        hc, hg = hashlib.sha256(), hashlib.sha256()
        for ph, r in (("fwd", res.forward), ("bwd", res.backward)):
            for k in sorted(r.counts):
                _h_update(hc, f"{ph}.counts.{k}", r.counts[k])
            for k in sorted(getattr(r, "counts_neg", {}) or {}):
                _h_update(hc, f"{ph}.counts_neg.{k}", r.counts_neg[k])
        for k in ("fwd_synops", "fwd_updates", "fwd_spikes", "encoding_macs", "bwd_synops_pos",
                  "bwd_synops_neg", "bwd_updates", "bwd_spikes", "update_macs"):
            _h_update(hc, k, getattr(res, k))
        for k in sorted(res.grads):
            _h_update(hg, f"grad.{k}", res.grads[k])
        params = model.parameters()
        for k in sorted(params):
            _h_update(hg, f"param.{k}", params[k])
        _h_update(hg, "loss", np.asarray(res.loss, np.float64))
        out[case] = dict(counts=hc.hexdigest()[:16], grads_params=hg.hexdigest()[:16])
    return out


def _canonical_attr(v):
    """An attribute's value as hashed: JSON text without its ``source`` paths (the model
    file's absolute path depends on where the repository is checked out)."""
    if isinstance(v, str) and v[:1] in "{[":
        try:
            d = json.loads(v)
        except ValueError:
            return repr(v)

        def strip(o):
            if isinstance(o, dict):
                return {k: strip(x) for k, x in o.items() if k != "source"}
            if isinstance(o, list):
                return [strip(x) for x in o]
            return o
        return json.dumps(strip(d), sort_keys=True)
    return repr(v)


def _volatile(name):
    return name in _VOLATILE or name.endswith("_version")


def runfile_hash(path):
    """sha256 over a run file's datasets and attributes, volatile names excluded."""
    import h5py
    h = hashlib.sha256()
    skipped = []

    def visit(name, obj):
        if _volatile(name.split("/")[-1]):
            skipped.append(name)
            return
        if isinstance(obj, h5py.Dataset):
            data = obj[()]
            if isinstance(data, bytes):
                data = np.frombuffer(data, np.uint8)
            _h_update(h, name, np.asarray(data) if np.asarray(data).dtype != object
                      else np.frombuffer(repr(data.tolist()).encode(), np.uint8))
        for k in sorted(obj.attrs):
            if _volatile(k):
                continue
            v = obj.attrs[k]
            h.update(f"{name}@{k}={_canonical_attr(v)}".encode() if not isinstance(v, np.ndarray)
                     else f"{name}@{k}".encode() + v.tobytes())

    with h5py.File(path, "r") as f:
        for k in sorted(f.attrs):
            if not _volatile(k):
                h.update(f"/@{k}={_canonical_attr(f.attrs[k])}".encode())
        f.visititems(visit)
    return h.hexdigest()[:16], skipped


def digits_hash(threads=1):
    from neurosim.training.trainer import train
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "run.h5")
        train(out=out, overrides={"epochs": 2}, max_train=400, max_test=200, seed=0,
              n_threads=threads, handle_signals=False)
        h, skipped = runfile_hash(out)
    return dict(runfile=h, excluded=sorted(set(skipped)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="step,digits")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    parts = a.parts.split(",")
    res = dict(threads=a.threads)
    if "step" in parts:
        res["step"] = step_hashes(a.threads)
    if "digits" in parts:
        res["digits"] = digits_hash(a.threads)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    sys.exit(main())
