"""Simulate a sparse recurrent LIF network (Brunel-style, excitatory/inhibitory) and plot a raster.

Classic current-based LIF neurons with exponential synapses (neurosim.CubaLIF), 80 %
excitatory / 20 % inhibitory, random fixed-probability connectivity with delay 1 step,
driven by a constant suprathreshold current, as in the CUBA benchmark of Brette et al.,
"Simulation of networks of spiking neurons: a review of tools and strategies",
J. Comput. Neurosci. 2007.

    python examples/sparse_lif_raster.py --out raster.png
    python examples/sparse_lif_raster.py --n 200 --steps 200 --out /tmp/r.png   # quick
"""
import argparse
from pathlib import Path

import numpy as np

import neurosim as ns
from neurosim import counting


def build(n=4000, p=0.02, dt=0.1, seed=0):
    n_exc = int(0.8 * n)
    cuba = ns.CubaLIF(v_rest=-49.0, v_th=-50.0, v_reset=-60.0, tau_mem=20.0, tau_syn=(5.0, 10.0),
                      t_ref=5.0, dt=dt)
    net = ns.Network(dtype=np.float32, name="cuba")
    net.add_population("exc", n_exc, cuba)
    net.add_population("inh", n - n_exc, cuba)
    we, wi = 60 * 0.27 / 10, -20 * 4.5 / 10      # mV, Brian2's CUBA example
    for i, (pre, npre, w, port) in enumerate((("exc", n_exc, we, 0), ("inh", n - n_exc, wi, 1))):
        for j, (post, npost) in enumerate((("exc", n_exc), ("inh", n - n_exc))):
            net.add_projection(f"{pre}_{post}", pre, post, ns.Sparse.fixed_probability(
                npre, npost, p, w, seed=seed + 10 * i + j, delay=1, port=port))
    return net


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--steps", type=int, default=5000, help="steps of dt = 0.1 ms")
    ap.add_argument("--out", type=Path, default=Path("raster.png"))
    a = ap.parse_args(argv)
    net = build(a.n)
    rng = np.random.default_rng(1)
    pops = ("exc", "inh")
    # desynchronise: a random current during the first step only (v starts at v_rest)
    kick = {}
    for k in pops:
        c = np.zeros((1, a.steps, net.populations[k].n))
        c[0, 0] = rng.uniform(-2000, 0, net.populations[k].n)   # up to -10 mV after one step
        kick[k] = c
    res = ns.run_forward(net, a.steps, currents=kick, record=True)
    tot = counting.totals(res)
    secs = a.steps * 0.1e-3
    rate = sum(int(tot["populations"][k]["spikes"][0]) for k in pops) / a.n / secs
    print(f"{a.n} neurons, {secs:.2f} s simulated: mean rate {rate:.1f} Hz, "
          f"{sum(int(d['synaptic_operations'][0]) for d in tot['projections'].values())} synaptic events")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4))
    off = 0
    for k, color in zip(pops, ("tab:blue", "tab:red")):
        t, i = np.nonzero(res.spikes[k][0])
        show = i < 400 * net.populations[k].n // a.n + 1
        ax.scatter(t[show] * 0.1, i[show] + off, s=1, c=color, label=k)
        off += 400 * net.populations[k].n // a.n + 1
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("neuron index (first 400)")
    ax.set_title(f"Sparse CUBA LIF network, {a.n} neurons, mean rate {rate:.1f} Hz")
    ax.legend(loc="upper right", markerscale=5)
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)
    print(f"raster: {a.out}")
    return rate


if __name__ == "__main__":
    main()
