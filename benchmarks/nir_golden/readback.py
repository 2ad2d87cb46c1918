"""Do other tools read what neurosim exports?  (issue 31, item 3: the read-back table.)

Two steps, two interpreters (README.md beside this file):

1. ``--export DIR`` with neurosim's interpreter: writes to DIR the NIR files of some
   shipped models (``neurosim.simulate.export_nir``, the library behind ``export-nir``) and of
   a small hand-built network that NIR expresses exactly (value resets, LIF and IF, no
   refractoriness), with neurosim's own spike trains on the golden MLP input
   (``<name>.npz``: ``input`` [T, n], ``spikes.<population>`` [T, n]).
2. ``--read DIR`` with the frameworks' interpreter: for every file, ``nir.read`` with
   type checking, snnTorch's ``import_from_nir`` and Norse's ``from_nir``; where a module
   comes back, it is run on the recorded input and its output spikes are compared with
   neurosim's.  Prints one JSON object per file and tool.
"""
import argparse
import json
import sys
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_golden import fixed_inputs  # noqa: E402  (numpy only)

#: every shipped model that exports (alexnetf_cifar10, cifarnetf_cifar100: refused, too large)
MODELS = ("convnet_dvs", "convnetf_mnist", "fsnn_fc400_fmnist", "fsnn_mlp", "fsnn_mlp_fmnist",
          "fsnn_mlp_spiking", "lenet_mnist", "test_conv", "test_sparse")


def plain_network():
    """source(20) -> Dense -> LIF(leak 0.9, value reset) -> Dense -> IF(value reset)."""
    from neurosim import Network
    from neurosim.connectivity import Dense
    from neurosim.neurons import LIF
    rng = np.random.default_rng(31)
    net = Network(name="plain")
    net.add_population("inp", 20, "source")
    net.add_population("hid", 30, LIF(v_th=1.0, leak=0.9, reset="value", v_reset=0.0))
    net.add_population("out", 10, LIF(v_th=1.0, leak=1.0, reset="value", v_reset=0.0))
    net.add_projection("w1", "inp", "hid", Dense(rng.uniform(-0.6, 0.9, (20, 30)).astype(np.float32)))
    net.add_projection("w2", "hid", "out", Dense(rng.uniform(-0.4, 0.8, (30, 10)).astype(np.float32)))
    return net


def plain_lif_network():
    """source(20) -> Dense -> LIF -> Dense -> LIF (leak 0.9, value reset to 0): what
    snnTorch's importer can express (it turns IF into a leaky neuron, beta = 0.9)."""
    from neurosim import Network
    from neurosim.connectivity import Dense
    from neurosim.neurons import LIF
    rng = np.random.default_rng(32)
    net = Network(name="plain_lif")
    net.add_population("inp", 20, "source")
    for name in ("hid", "out"):
        net.add_population(name, 30 if name == "hid" else 10,
                           LIF(v_th=1.0, leak=0.9, reset="value", v_reset=0.0))
    net.add_projection("w1", "inp", "hid", Dense(rng.uniform(-0.6, 0.9, (20, 30)).astype(np.float32)))
    net.add_projection("w2", "hid", "out", Dense(rng.uniform(-0.6, 0.9, (30, 10)).astype(np.float32)))
    return net


def _euler_taus(graph, dt):
    """Hand edit: every LIF's tau rewritten for forward Euler, tau = dt/(1 - leak) with the
    leak neurosim keeps in the node's metadata, and r = tau/dt (input gain 1)."""
    import nir
    for node in graph.nodes.values():
        if isinstance(node, nir.LIF):
            lam = json.loads(node.metadata["neurosim_neuron"])["leak"]
            tau = np.full_like(np.asarray(node.tau), dt / (1.0 - lam))
            node.tau, node.r = tau, tau / dt
    return graph


def _fold_r(graph, dt):
    """Hand edit after :func:`_euler_taus`: r folded into the weights of the Linear /
    Affine node feeding each LIF (rows times r), r = 1 (Norse's importer ignores r)."""
    import nir
    for a, b in graph.edges:
        na, nb = graph.nodes[a], graph.nodes[b]
        if isinstance(nb, nir.LIF) and isinstance(na, (nir.Linear, nir.Affine)):
            r = np.asarray(nb.r, np.float64)
            na.weight = (np.asarray(na.weight, np.float64) * r[:, None]).astype(np.float32)
            if isinstance(na, nir.Affine):
                na.bias = (np.asarray(na.bias, np.float64) * r).astype(np.float32)
            nb.r = np.ones_like(np.asarray(nb.r))
    return graph


def export(out):
    import warnings
    from neurosim.io.nir import write_nir
    from neurosim.simulate import export_nir
    from neurosim.engine import run_forward
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    notes = {}
    for m in MODELS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                export_nir(model=m, out=out / f"{m}.nir", force=True)
                notes[m] = [str(w.message) for w in caught]
            except Exception as e:
                notes[m] = f"export failed: {type(e).__name__}: {e}"
    net = plain_network()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_nir(out / "plain.nir", net, dt=1e-3, force=True)
        # snnTorch's importer assumes dt = 1e-4: the same network written for that dt
        write_nir(out / "plain_dt1e-4.nir", net, dt=1e-4, force=True)
        notes["plain"] = [str(w.message) for w in caught]
    x = fixed_inputs()["mlp_spikes"]
    fwd = run_forward(net, x.shape[0], spikes={"inp": x[None].astype(np.uint8)}, record=True)
    for stem in ("plain", "plain_dt1e-4"):
        np.savez_compressed(out / f"{stem}.npz", input=x,
                            **{f"spikes.{p}": fwd.spikes[p][0] for p in ("hid", "out")})
    # LIF only, for snnTorch's dt = 1e-4; as exported (exact leak) and hand-edited to the
    # Euler time constants snnTorch and Norse integrate with
    import nir
    from neurosim.io.nir import to_nir
    lnet = plain_lif_network()
    fwd = run_forward(lnet, x.shape[0], spikes={"inp": x[None].astype(np.uint8)}, record=True)
    for stem, edit in (("plain_lif_dt1e-4", None), ("plain_lif_dt1e-4_euler", _euler_taus),
                       ("plain_lif_dt1e-4_euler_r1",
                        lambda g, dt: _fold_r(_euler_taus(g, dt), dt))):
        g = to_nir(lnet, dt=1e-4)
        if edit is not None:
            g = edit(g, 1e-4)
        nir.write(out / f"{stem}.nir", g)
        np.savez_compressed(out / f"{stem}.npz", input=x,
                            **{f"spikes.{p}": fwd.spikes[p][0] for p in ("hid", "out")})
    (out / "export_notes.json").write_text(json.dumps(notes, indent=1) + "\n")
    print(json.dumps(notes, indent=1))


def _err(e):
    tb = traceback.extract_tb(e.__traceback__)
    where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} ({where})"


def _run_executor(mod, x, tool):
    """Run an imported module step by step on x [T, n]; its output per step."""
    import torch
    outs, state = [], None
    with torch.no_grad():
        for t in range(x.shape[0]):
            xt = torch.as_tensor(x[t])[None]
            r = mod(xt) if state is None else mod(xt, state)
            if isinstance(r, tuple):                  # (output, state)
                r, state = r[0], r[1]
            if isinstance(r, dict):
                r = next(iter(r.values()))
            if isinstance(r, tuple):                  # snnTorch: (spk, mem)
                r = r[0]
            outs.append(np.asarray(r.detach().reshape(-1).numpy()))
    return np.stack(outs)


def read(dirname):
    import nir
    d = Path(dirname)
    rows = []
    for f in sorted(d.glob("*.nir")):
        name = f.stem
        row = {"file": f.name}
        try:
            nir.read(f)                                     # type_check=True (default)
            row["nir.read(type_check=True)"] = "ok"
        except Exception as e:
            row["nir.read(type_check=True)"] = _err(e)
        try:
            g = nir.read(f, type_check=False)
            row["nir.read(type_check=False)"] = "ok"
        except Exception as e:
            row["nir.read(type_check=False)"] = _err(e)
            rows.append(row)
            continue
        npz = d / f"{name}.npz"
        z = np.load(npz) if npz.exists() else None
        for tool in ("snntorch", "norse"):
            try:
                if tool == "snntorch":
                    from snntorch.import_nir import import_from_nir
                    mod = import_from_nir(nir.read(f, type_check=False))
                else:
                    import norse.torch as norse
                    # Norse's from_nir takes the dt (default 1e-3)
                    dt = 1e-4 if "dt1e-4" in name else 1e-3
                    mod = norse.from_nir(nir.read(f, type_check=False), dt=dt)
                row[tool] = "imported"
            except Exception as e:
                row[tool] = "import failed: " + _err(e)
                continue
            if z is None:
                continue
            try:
                got = _run_executor(mod, z["input"], tool)
                want = z["spikes.out"].reshape(got.shape[0], -1)
                if got.shape != want.shape:
                    row[tool] += f"; ran, output shape {got.shape} vs neurosim {want.shape}"
                    continue
                diff = np.argwhere(got != want)
                row[tool] += (f"; ran: output spikes {int(got.sum())} vs neurosim "
                              f"{int(want.sum())}, {len(diff)} (step, neuron) differ")
                if len(diff):
                    row[tool] += f", first at step {int(diff[0][0])} neuron {int(diff[0][1])}"
            except Exception as e:
                row[tool] += "; run failed: " + _err(e)
        rows.append(row)
        print(json.dumps(row))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--export", metavar="DIR")
    g.add_argument("--read", metavar="DIR")
    a = ap.parse_args(argv)
    if a.export:
        export(a.export)
    else:
        read(a.read)


if __name__ == "__main__":
    main()
