"""A cost model of data-parallel SPIDE training over MPI (`docs/distributed.md`, issue 30
item 3): predicted parallel efficiency for P = 1 .. 64 ranks, one rank per node.

Per step on a global batch of ``B`` samples:

    T(P) = B * t_s / P_eff + T_comm(P),    E(P) = B * t_s / (P * T(P))

* ``t_s``: measured seconds per training sample of one process at 1 thread (the newest
  ``s_per_sample`` record of ``benchmarks/results/training.jsonl``; AlexNet-F has none,
  so it is *estimated* from LeNet's by the ratio of spiking neurons: say so);
* ``P_eff = min(P, blocks)``: a batch is sharded along its fixed sample blocks
  (``neurosim.kernels.spide.N_BLOCKS`` = 8, decision 58), so the code of today keeps at
  most 8 ranks busy; the column ``blocks >= P`` assumes ``N_BLOCKS`` raised to P (which
  changes the rounding of every batch gradient once);
* ``T_comm``: the gradient buffer of ``G`` parameters in float64 (``8 G`` bytes: the block
  rows are float64), link bandwidth ``bw`` (10 or 100 Gbit/s), latency ``alpha`` (3 us):
  - ``ring``: a ring allreduce, ``2 (P-1) (alpha + 8G / (P bw))`` (what an exact integer
    ``Allreduce`` would cost);
  - ``tree``: a fixed-order binomial reduction to rank 0 and a broadcast of the update,
    ``2 ceil(log2 P) (alpha + 8G / bw)`` (the block tree's order: ranks owning aligned
    subtrees combine pairwise);
  - ``root`` (what is implemented now): every rank sends its subtree sums to rank 0, which
    sends every rank the new weights, ``2 (P-1) (alpha + 8G / bw)`` through rank 0's link.

The messages of the loss (B x n_out rates, gathered) and of the input slices are left out
(a few kB to a few hundred kB per step); the update itself (rank 0, O(G)) is left out.

    python -m benchmarks.scaling_model [--alpha-us 3] [--markdown]
"""
import argparse
import json
import math
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "training.jsonl"
CASES = (("LeNet", "lenet_mnist"), ("ConvNet-F", "convnetf_mnist"), ("AlexNet-F", "alexnetf_cifar10"))
BATCH = 128
N_BLOCKS = 8
PS = (1, 2, 4, 8, 16, 32, 64)
LINKS = (("10 Gbit/s", 10e9 / 8), ("100 Gbit/s", 100e9 / 8))


def sizes(case):
    """(trained parameters incl. the readout, spiking neurons) of a bundled model."""
    from neurosim.models import load_model
    net = load_model(case, seed=0)
    G = 0
    for pr in net.projections.values():
        if pr.has_weights:
            G += pr.weight.size
        if pr.bias is not None:
            G += pr.bias.size
    out = [p for p in net.schedule() if net.populations[p].spiking][-1]
    G += 10 * net.populations[out].n + 10             # the readout C, c (10 classes)
    return G, sum(p.n for p in net.spiking_populations)


def measured_s_per_sample(case):
    best = None
    if RESULTS.exists():
        for line in RESULTS.read_text().splitlines():
            r = json.loads(line)
            if (r.get("case") == case and r.get("impl") == "neurosim" and r.get("threads") == 1
                    and r.get("metric") == "s_per_sample"):
                best = r if best is None or r["date"] >= best["date"] else best
    return None if best is None else (best["median"], best["commit"], best["date"][:10])


def comm_s(scheme, P, G, bw, alpha):
    if P == 1:
        return 0.0
    nbytes = 8.0 * G
    if scheme == "ring":
        return 2 * (P - 1) * (alpha + nbytes / (P * bw))
    if scheme == "tree":
        return 2 * math.ceil(math.log2(P)) * (alpha + nbytes / bw)
    return 2 * (P - 1) * (alpha + nbytes / bw)            # root


def efficiency(t_s, G, P, bw, alpha, scheme, cap):
    p_eff = min(P, N_BLOCKS) if cap else P
    T = BATCH * t_s / p_eff + comm_s(scheme, P, G, bw, alpha)
    return BATCH * t_s / (P * T), BATCH * t_s / p_eff, comm_s(scheme, P, G, bw, alpha)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha-us", type=float, default=3.0)
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args(argv)
    alpha = a.alpha_us * 1e-6
    info = {}
    for label, case in CASES:
        G, n = sizes(case)
        info[label] = dict(case=case, G=G, neurons=n, t=measured_s_per_sample(case))
    lenet = info["LeNet"]
    for label, d in info.items():
        if d["t"] is None:
            d["t"] = (lenet["t"][0] * d["neurons"] / lenet["neurons"], "estimated", "")
    print("| model | parameters G (8G bytes) | spiking neurons | s / sample (1 thread) |")
    print("|---|---|---|---|")
    for label, d in info.items():
        src = (f"measured ({d['t'][1]}, {d['t'][2]})" if d["t"][1] != "estimated" else
               "estimated: LeNet's x neuron ratio")
        print(f"| {label} | {d['G']:,} ({8 * d['G'] / 1e6:.1f} MB) | {d['neurons']:,} | "
              f"{d['t'][0] * 1e3:.2f} ms, {src} |")
    print()
    print(f"Predicted efficiency E(P), batch {BATCH}, latency {a.alpha_us:g} us "
          f"(today: at most {N_BLOCKS} busy ranks; '>=P': N_BLOCKS >= P).")
    print()
    print("| model | link | scheme | blocks | " + " | ".join(f"P={P}" for P in PS[1:]) +
          " | below 80 % from | dominant there |")
    print("|---|---|---|---|" + "---|" * (len(PS) - 1) + "---|---|")
    for label, d in info.items():
        for link, bw in LINKS:
            for scheme in ("root", "tree", "ring"):
                for cap in (True, False):
                    es, below, dom = [], None, ""
                    for P in PS[1:]:
                        e, comp, com = efficiency(d["t"][0], d["G"], P, bw, alpha, scheme, cap)
                        es.append(e)
                        if below is None and e < 0.8:
                            below = P
                            idle = cap and P > N_BLOCKS
                            lat = 2 * (P - 1) * alpha if scheme != "tree" else \
                                2 * math.ceil(math.log2(P)) * alpha
                            dom = ("idle ranks (no blocks)" if idle and com < comp else
                                   ("latency" if lat > com - lat else "bandwidth") +
                                   f" ({com * 1e3:.1f} ms comm vs {comp * 1e3:.1f} ms compute)")
                    print(f"| {label} | {link} | {scheme} | {'8' if cap else '>=P'} | " +
                          " | ".join(f"{100 * e:.0f}" for e in es) +
                          f" | {below if below else '> 64'} | {dom or '-'} |")


if __name__ == "__main__":
    main()
