"""Brian2 side of the CUBA benchmark: a worker that runs in Brian2's own virtualenv.

Started by :mod:`benchmarks.bench_cuba` as ``<venv python> -m benchmarks.brian_cuba
--target cpp_standalone|cython --case cuba-1x|cuba-4x --threads N`` from the repository
root; it imports only Brian2 and numpy (never neurosim: Brian2 needs numpy < 2, the
package numpy >= 2).  It answers JSON commands, one per line on stdin, with one JSON
line on stdout:

``{"cmd": "run", "seed": s}``
    simulate 1 s and return ``wall_s`` (Brian's own ``device._last_run_time``: the time
    of the main simulation loop, without code generation, compilation, synapse creation
    or initialisation), the spike count per neuron summarised (``spikes``), the
    synaptic events these spikes cause (``events`` = Σ spikes × out-degree) and the
    synapse count.
``{"cmd": "stats", "seed": s}`` (cython only)
    the same network with a recording SpikeMonitor: mean rate and the mean coefficient
    of variation of the inter-spike intervals (neurons with >= 3 spikes).
``{"cmd": "quit"}``

The model is Brian2's CUBA example (Vogels & Abbott 2005, as benchmarked by Brette et
al. 2007): 4,000 LIF neurons, ``dv/dt = (ge + gi - (v - El)) / taum``, exponential
currents ``ge``, ``gi`` (5 and 10 ms) jumped by ``we = 60*0.27/10 mV`` and
``wi = -20*4.5/10 mV``, threshold ``v > -50 mV``, reset -60 mV, refractory 5 ms,
El = -49 mV, 2 % random connectivity (80 % excitatory senders), random initial ``v`` in
[Vr, Vt], dt = 0.1 ms, exact integration.  ``cuba-4x`` has 16,000 neurons at p = 0.5 %
(the same fan-in of 80 synapses per neuron).

cpp_standalone: the project is generated and compiled once at start-up (``compile_s``
is reported), each ``run`` executes the compiled binary again; the binary draws a new
network (connectivity and initial potentials) from its own generator at every run.
The binary runs with ``prefs.devices.cpp_standalone.openmp_threads = --threads``.
cython: each ``run`` builds a new network with ``seed(s)`` (Brian's runtime mode is
single-threaded; ``--threads`` only pins the environment).
"""
import argparse
import json
import shutil
import sys
import tempfile
import time

import numpy as np

CASES = {"cuba-1x": (4000, 0.02), "cuba-4x": (16000, 0.005)}


def _model(N, p, record):
    import brian2 as b2
    from brian2 import mV, ms
    taum, taue, taui = 20 * ms, 5 * ms, 10 * ms
    Vt, Vr, El = -50 * mV, -60 * mV, -49 * mV
    eqs = """
    dv/dt  = (ge+gi-(v-El))/taum : volt (unless refractory)
    dge/dt = -ge/taue : volt
    dgi/dt = -gi/taui : volt
    """
    P = b2.NeuronGroup(N, eqs, threshold="v>Vt", reset="v = Vr", refractory=5 * ms,
                       method="exact", namespace=dict(taum=taum, taue=taue, taui=taui, Vt=Vt,
                                                      Vr=Vr, El=El))
    P.v = "Vr + rand() * (Vt - Vr)"
    P.ge = 0 * mV
    P.gi = 0 * mV
    we = (60 * 0.27 / 10) * mV
    wi = (-20 * 4.5 / 10) * mV
    ne = int(0.8 * N)
    Ce = b2.Synapses(P, P, on_pre="ge += we", namespace=dict(we=we))
    Ci = b2.Synapses(P, P, on_pre="gi += wi", namespace=dict(wi=wi))
    Ce.connect(f"i<{ne}", p=p)
    Ci.connect(f"i>={ne}", p=p)
    mon = b2.SpikeMonitor(P, record=record)
    return b2.Network(P, Ce, Ci, mon), P, Ce, Ci, mon


def _summary(N, Ce, Ci, mon):
    counts = np.asarray(mon.count[:], np.int64)
    outdeg = (np.bincount(np.asarray(Ce.i[:]), minlength=N)
              + np.bincount(np.asarray(Ci.i[:]), minlength=N))
    return dict(spikes=int(counts.sum()), events=int((counts * outdeg).sum()),
                synapses=int(len(Ce) + len(Ci)), rate_hz=float(counts.sum()) / N)


def _cv_isi(mon, N):
    t = np.asarray(mon.t[:], np.float64)
    i = np.asarray(mon.i[:], np.int64)
    order = np.lexsort((t, i))
    t, i = t[order], i[order]
    cvs = []
    starts = np.searchsorted(i, np.arange(N + 1))
    for j in range(N):
        tj = t[starts[j]:starts[j + 1]]
        if tj.size >= 3:
            d = np.diff(tj)
            cvs.append(d.std() / d.mean())
    return float(np.mean(cvs)) if cvs else float("nan"), len(cvs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", choices=("cpp_standalone", "cython"), required=True)
    ap.add_argument("--case", choices=sorted(CASES), required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import brian2 as b2
    from brian2 import second
    b2.BrianLogger.log_level_error()
    N, p = CASES[args.case]
    out = sys.stdout
    hello = dict(brian2_version=b2.__version__, numpy_version=np.__version__,
                 target=args.target, case=args.case, threads=args.threads)
    workdir = None
    if args.target == "cpp_standalone":
        workdir = tempfile.mkdtemp(prefix=f"neurosim-bench-brian2-{args.case}-t{args.threads}-")
        b2.set_device("cpp_standalone", directory=workdir, build_on_run=False)
        b2.prefs.devices.cpp_standalone.openmp_threads = args.threads
        net, P, Ce, Ci, mon = _model(N, p, record=False)
        net.run(1 * second)
        t0 = time.perf_counter()
        b2.device.build(directory=workdir, run=False, compile=True)
        hello["compile_s"] = time.perf_counter() - t0
    else:
        b2.prefs.codegen.target = "cython"
        t0 = time.perf_counter()                 # first network: code generation + Cython
        b2.seed(0)
        net, P, Ce, Ci, mon = _model(N, p, record=False)
        net.run(1 * second)
        hello["compile_s"] = time.perf_counter() - t0
    out.write(json.dumps(hello) + "\n")
    out.flush()
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["cmd"] == "quit":
                break
            if args.target == "cpp_standalone":
                if cmd["cmd"] != "run":
                    res = dict(error=f"{cmd['cmd']} is not supported by cpp_standalone")
                else:
                    t0 = time.perf_counter()
                    b2.device.run(with_output=False)
                    res = dict(wall_s=float(b2.device._last_run_time),
                               process_s=time.perf_counter() - t0, **_summary(N, Ce, Ci, mon))
            else:
                b2.start_scope()
                b2.seed(int(cmd["seed"]))
                record = cmd["cmd"] == "stats"
                net, P, Ce, Ci, mon = _model(N, p, record=record)
                net.run(1 * second)
                res = dict(wall_s=float(b2.device._last_run_time), **_summary(N, Ce, Ci, mon))
                if record:
                    res["cv_isi"], res["cv_neurons"] = _cv_isi(mon, N)
            out.write(json.dumps(res) + "\n")
            out.flush()
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
