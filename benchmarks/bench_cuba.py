"""CUBA benchmark: neurosim against Brian2 (cpp_standalone and cython) in one run.

Run ``python -m benchmarks.bench_cuba [--threads 1,2] [--cases cuba-1x,cuba-4x]
[--reps 7] [--impls neurosim,brian2-cpp_standalone,brian2-cython]``; records go to
``benchmarks/results/cuba.jsonl`` (``bench: "cuba"``).  Brian2 lives in its own
virtualenv (it needs numpy < 2): ``--brian-venv DIR`` (default ``$NEUROSIM_BRIAN_VENV``,
else ``/work/venvs/brian2`` when it exists, else ``~/.cache/neurosim/brian2-venv``);
``--setup-brian`` creates it (``python -m venv DIR`` + ``pip install brian2 "numpy<2"``).

The network (Brian2's CUBA example; Vogels & Abbott 2005 as benchmarked by Brette et
al. 2007): N LIF neurons with exponential current synapses,
``tau_m dv/dt = El - v + ge + gi`` (El = -49 mV, tau_m = 20 ms), ``ge`` / ``gi`` decaying
with 5 / 10 ms and jumped by we = 60*0.27/10 mV (senders 0 .. 0.8 N) and
wi = -20*4.5/10 mV (the other 20 %), threshold -50 mV, reset -60 mV, refractory 5 ms,
random initial v in [-60, -50) mV, every pair connected with probability p (self
connections allowed), 1 s at dt = 0.1 ms (10,000 steps).  ``cuba-1x``: N = 4,000,
p = 2 %.  ``cuba-4x``: N = 16,000 with the *fan-in kept* (p = 0.5 %, 80 synapses per
neuron as in cuba-1x), so every neuron sees the same input statistics and the rates
stay comparable; the work per step grows 4x (neurons and synapses).

neurosim runs the same model as one ``CubaLIF(v_rest=-49, v_th=-50, v_reset=-60,
tau_mem=20, tau_syn=(5, 10), t_ref=4.9, dt=0.1)`` population (mV, ms) in float64 (as
Brian2) with two ``Sparse`` projections of delay 1 on ports 0 and 1: an event of step t
moves the current before the update of step t+1, as Brian2's ``on_pre`` in the
``synapses`` slot after the update.  ``t_ref = 4.9 ms`` (49 held steps) because Brian2
integrates again at the step 5 ms after the spike (49 steps held), and neurosim holds
``round(t_ref/dt)`` steps after the spike step.

Timing (medians of ``--reps`` timed runs, one untimed warm-up first; implementations
alternate within every repetition, in rotating order):

- ``neurosim``: the whole ``neurosim.run_forward`` call (validation, flattening the
  network, allocation, the kernel, result arrays); the kernel alone is in
  ``extra.kernel_s``.  A new network (seed) per run; building it is not timed.
- ``brian2-cpp_standalone``: ``device._last_run_time`` of the compiled binary, i.e. the
  time of its main simulation loop (no code generation, compilation, synapse
  creation or initialisation); the binary draws a new network at every run.
- ``brian2-cython``: ``device._last_run_time`` of ``Network.run(1*second)`` on a new
  network per run (Brian2's own timer around its main loop; code generation and
  Cython compilation happen before it and are cached).  Runtime mode is
  single-threaded: it runs at threads = 1 only unless ``--cython-all-threads``.

Threads: neurosim workers run with ``NUMBA_NUM_THREADS = n``; the engine runs one sample
of this network with its recurrent CubaLIF runner, one neuron range per thread
(``extra.engine_path``).  Brian2's
cpp_standalone binary is built with ``openmp_threads = n``.  Every worker process has
``OMP_NUM_THREADS`` etc. set to n (see :mod:`benchmarks._harness`).

Checks: spikes, synaptic events (Σ over neurons of spikes × out-degree: the events these
spikes cause) and events/s per run; the population mean rate of every implementation is
compared with neurosim's over the runs (different random networks): they agree when the
difference of the means is within 3 standard errors (Welch, from the run-to-run
spread) — ``extra.rates_agree``.  One extra untimed recorded run per case and
implementation family gives the mean coefficient of variation of the inter-spike
intervals (neurosim and brian2-cython).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import _harness as H

BENCH = "cuba"
CASES = {"cuba-1x": (4000, 0.02), "cuba-4x": (16000, 0.005)}
IMPLS = ("neurosim", "brian2-cpp_standalone", "brian2-cython")
#: what each implementation's wall_s measures.
TIMERS = {"neurosim": "whole run_forward call",
          "brian2-cpp_standalone": "device._last_run_time (main loop of the compiled binary)",
          "brian2-cython": "device._last_run_time (main loop of Network.run)"}
GOAL_SPEEDUP = 1.2            # neurosim wall time >= 1.2x shorter than Brian2 cpp_standalone
T_STEPS = 10_000
DT_MS = 0.1


# ---------------------------------------------------------------------------------------
# neurosim side
def build_network(case, seed, dtype=np.float64):
    """(network, v_init) of ``case`` drawn with ``seed`` (see the module docstring)."""
    import neurosim as ns
    N, p = CASES[case]
    rng = np.random.default_rng(seed)
    ne = int(0.8 * N)
    nr = ns.CubaLIF(v_rest=-49.0, v_th=-50.0, v_reset=-60.0, tau_mem=20.0, tau_syn=(5.0, 10.0),
                    t_ref=4.9, dt=DT_MS)
    net = ns.Network(dtype=dtype, name=case)
    net.add_population("P", N, nr)

    def edges(lo, hi):               # every (pre, post) pair independently with prob. p
        m = (hi - lo) * N
        flat = rng.choice(m, rng.binomial(m, p), replace=False)
        return flat // N + lo, flat % N

    for name, (lo, hi), w, port in (("Ce", (0, ne), 60 * 0.27 / 10, 0),
                                    ("Ci", (ne, N), -20 * 4.5 / 10, 1)):
        pre, post = edges(lo, hi)
        net.add_projection(name, "P", "P", ns.Sparse.from_edges(pre, post, w, pre_shape=N,
                                                                post_shape=N, delay=1, port=port))
    v0 = -60.0 + 10.0 * rng.random(N)
    return net, {"P": v0}


def _cv_isi(spikes):
    """Mean CV of the inter-spike intervals of neurons with >= 3 spikes ([T, N] trains)."""
    t, i = np.nonzero(spikes)
    order = np.lexsort((t, i))
    t, i = t[order], i[order]
    starts = np.searchsorted(i, np.arange(spikes.shape[1] + 1))
    cvs = []
    for j in range(spikes.shape[1]):
        tj = t[starts[j]:starts[j + 1]]
        if tj.size >= 3:
            d = np.diff(tj).astype(np.float64)
            cvs.append(d.std() / d.mean())
    return (float(np.mean(cvs)) if cvs else float("nan")), len(cvs)


def _neurosim_run(case, seed, threads, stats=False):
    import neurosim as ns
    N, _ = CASES[case]
    net, v0 = build_network(case, seed)
    t0 = time.perf_counter()
    r = ns.run_forward(net, T_STEPS, batch=1, n_threads=threads, v_init=v0, record=stats)
    wall = time.perf_counter() - t0
    counts = r.counts["P"][0].astype(np.int64)
    outdeg = sum(pr.out_degree() for pr in net.projections.values())
    res = dict(wall_s=wall, kernel_s=r.wall_s, spikes=int(counts.sum()),
               events=int((counts * outdeg).sum()),
               synapses=int(sum(pr.n_synapses for pr in net.projections.values())),
               rate_hz=float(counts.sum()) / N / (T_STEPS * DT_MS / 1000.0))
    if stats:
        res["cv_isi"], res["cv_neurons"] = _cv_isi(r.spikes["P"][0])
    return res


def neurosim_worker():
    """JSON-lines worker (stdin commands, stdout answers) in a thread-pinned process."""
    from neurosim import engine
    threads = H.worker_threads()
    info = H.check_threads(threads)
    out = sys.stdout
    sys.stdout = sys.stderr                     # stray prints must not break the protocol
    hello = dict(threads=threads, thread_info=info, split_min_neurons=engine.SPLIT_MIN_NEURONS)
    out.write(json.dumps(hello) + "\n")
    out.flush()
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        t0 = time.perf_counter()
        res = _neurosim_run(cmd["case"], cmd["seed"], threads, stats=cmd["cmd"] == "stats")
        res["call_s"] = time.perf_counter() - t0
        ranges = threads if CASES[cmd["case"]][0] >= engine.SPLIT_MIN_NEURONS else 1
        res["engine_path"] = f"CubaLIF runner, {ranges} range{'s' if ranges > 1 else ''}"
        out.write(json.dumps(res) + "\n")
        out.flush()
    return 0


# ---------------------------------------------------------------------------------------
# parent: workers, alternation, records
class Worker:
    """A long-lived worker process answering one JSON line per JSON command."""

    def __init__(self, name, argv, env):
        self.name = name
        self.proc = subprocess.Popen(argv, cwd=H.REPO_ROOT, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.hello = self._read()

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise RuntimeError(f"worker {self.name} exited with status {code} (see stderr)")
        return json.loads(line)

    def ask(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        res = self._read()
        if "error" in res:
            raise RuntimeError(f"worker {self.name}: {res['error']}")
        return res

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps(dict(cmd="quit")) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def default_brian_venv():
    env = os.environ.get("NEUROSIM_BRIAN_VENV")
    if env:
        return Path(env)
    if Path("/work/venvs/brian2").is_dir():
        return Path("/work/venvs/brian2")
    return Path.home() / ".cache" / "neurosim" / "brian2-venv"


def setup_brian(venv):
    """Create the Brian2 virtualenv (``python -m venv`` + pip) if it has no brian2."""
    py = venv / "bin" / "python"
    if not py.exists():
        print(f"[bench] creating {venv}", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "brian2", "numpy<2"], check=True)
    return py


def brian_python(venv):
    py = Path(venv) / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import brian2"], capture_output=True,
                                      cwd=H.REPO_ROOT).returncode == 0:
        return py
    raise SystemExit(
        f"Brian2 is not installed in {venv}.  Create it with\n"
        f"    python -m benchmarks.bench_cuba --setup-brian --brian-venv {venv}\n"
        f"or by hand:\n"
        f"    python -m venv {venv} && {venv}/bin/python -m pip install brian2 'numpy<2'\n"
        f"(Brian2 needs numpy < 2; neurosim needs numpy >= 2, hence the separate venv), "
        f"or leave Brian2 out with --impls neurosim.")


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _welch(a, b):
    """(difference of means, its standard error, agree within 3 SE)."""
    ma, mb = statistics.mean(a), statistics.mean(b)
    va = statistics.variance(a) if len(a) > 1 else 0.0
    vb = statistics.variance(b) if len(b) > 1 else 0.0
    se = (va / len(a) + vb / len(b)) ** 0.5
    return ma - mb, se, abs(ma - mb) <= 3.0 * se + 1e-12


def run_group(threads, cases, impls, reps, seed, venv_py, cache, cython_here):
    """All timed runs of one thread count: workers started once, impls alternating."""
    env = H.thread_env(threads, cache=cache)
    env[H._ENV_PROVENANCE] = json.dumps(H.provenance())
    workers = {}
    results = {}
    try:
        for case in cases:
            for impl in impls:
                if impl == "brian2-cython" and not cython_here:
                    continue
                name = f"{impl}/{case}/t{threads}"
                print(f"[bench] starting {name}", file=sys.stderr, flush=True)
                if impl == "neurosim":
                    key = ("neurosim", None)
                    if key not in workers:
                        workers[key] = Worker(f"neurosim/t{threads}", [sys.executable, "-m",
                                              "benchmarks.bench_cuba", "--worker"], env)
                    w = workers[key]
                    t0 = time.perf_counter()
                    w.ask(cmd="run", case=case, seed=seed + 10_000)      # warm-up / compile
                    compile_s = time.perf_counter() - t0
                else:
                    target = impl.split("-", 1)[1]
                    w = Worker(name, [str(venv_py), "-m", "benchmarks.brian_cuba", "--target",
                                      target, "--case", case, "--threads", str(threads)], env)
                    workers[(impl, case)] = w
                    w.ask(cmd="run", seed=seed + 10_000)                  # warm-up
                    compile_s = w.hello.get("compile_s")
                results[(case, impl)] = dict(runs=[], compile_s=compile_s, hello=w.hello)
        order = [(c, i) for (c, i) in results]
        for rep in range(reps):
            k = rep % len(impls)
            for case in cases:
                row = [i for (c, i) in order if c == case]
                row = row[k % len(row):] + row[:k % len(row)]
                for impl in row:
                    w = workers[("neurosim", None)] if impl == "neurosim" else workers[(impl, case)]
                    la = _loadavg()
                    args = dict(cmd="run", seed=seed + rep)
                    if impl == "neurosim":
                        args["case"] = case
                    res = w.ask(**args)
                    res["loadavg"] = la
                    results[(case, impl)]["runs"].append(res)
                    print(f"[bench] {case} {impl:<22s} t={threads} rep {rep}: "
                          f"{res['wall_s'] * 1e3:8.2f} ms, {res['spikes']} spikes, "
                          f"load {la[0] if la else '?'}", file=sys.stderr, flush=True)
        # untimed recorded runs: ISI statistics
        for case in cases:
            if ("neurosim", None) in workers and (case, "neurosim") in results:
                results[(case, "neurosim")]["stats"] = workers[("neurosim", None)].ask(
                    cmd="stats", case=case, seed=seed)
            if ("brian2-cython", case) in workers:
                results[(case, "brian2-cython")]["stats"] = workers[("brian2-cython", case)].ask(
                    cmd="stats", seed=seed)
    finally:
        for w in workers.values():
            w.close()
    return results


def write_records(threads, results, seed, path=None):
    recs = []
    cases = sorted({c for c, _ in results}, key=list(CASES).index)
    for case in cases:
        N, p = CASES[case]
        ref = results.get((case, "neurosim"))
        ref_rates = [r["rate_hz"] for r in ref["runs"]] if ref else None
        for impl in IMPLS:
            g = results.get((case, impl))
            if g is None:
                continue
            runs = g["runs"]
            times = [r["wall_s"] for r in runs]
            rates = [r["rate_hz"] for r in runs]
            tm = H.Timing(times, float("nan"))
            loads = [r["loadavg"][0] for r in runs if r.get("loadavg")]
            extra = dict(
                n_neurons=N, p=p, fan_in=round(N * p), steps=T_STEPS, dt_ms=DT_MS,
                scaling="fan-in kept (p = 0.02 * 4000 / N)",
                spikes=int(statistics.median(r["spikes"] for r in runs)),
                events=int(statistics.median(r["events"] for r in runs)),
                synapses=int(statistics.median(r["synapses"] for r in runs)),
                events_per_s=statistics.median(r["events"] / r["wall_s"] for r in runs),
                neuron_updates_per_s=N * T_STEPS / tm.median,
                rate_hz_mean=statistics.mean(rates), rate_hz_sd=statistics.stdev(rates)
                if len(rates) > 1 else 0.0, rates_hz=rates, times_s=times,
                compile_s=g.get("compile_s"), loadavg=[min(loads), max(loads)] if loads else None,
                loadavg_runs=loads, timer=TIMERS[impl])
            if impl == "neurosim":
                extra["kernel_s"] = statistics.median(r["kernel_s"] for r in runs)
                extra["engine_path"] = runs[0].get("engine_path")
                extra["thread_info"] = g["hello"].get("thread_info")
            else:
                extra["brian2_version"] = g["hello"].get("brian2_version")
                extra["brian2_numpy_version"] = g["hello"].get("numpy_version")
            if "stats" in g:
                extra["cv_isi"] = g["stats"].get("cv_isi")
                extra["cv_isi_neurons"] = g["stats"].get("cv_neurons")
                extra["stats_rate_hz"] = g["stats"].get("rate_hz")
            if ref_rates and impl != "neurosim":
                d, se, ok = _welch(rates, ref_rates)
                extra["rates_agree"] = bool(ok)
                extra["rate_diff_vs_neurosim_hz"] = d
                extra["rate_diff_se_hz"] = se
            recs.append(H.record(BENCH, case, impl, "wall_s", "s", **tm.stats(), threads=threads,
                                 batch=1, dtype=np.float64, seed=seed, extra=extra, path=path))
        # neurosim vs Brian2 cpp_standalone
        b = results.get((case, "brian2-cpp_standalone"))
        if ref and b:
            tn = [r["wall_s"] for r in ref["runs"]]
            tb = [r["wall_s"] for r in b["runs"]]
            d, se, ok = _welch([r["rate_hz"] for r in b["runs"]], ref_rates)
            kern = statistics.median(tb) / statistics.median(r["kernel_s"] for r in ref["runs"])
            recs.append(H.record(
                BENCH, case, "neurosim", "speedup_vs_brian2-cpp_standalone", "x",
                median=statistics.median(tb) / statistics.median(tn), min=min(tb) / max(tn),
                max=max(tb) / min(tn), n_runs=min(len(tn), len(tb)), threads=threads, batch=1,
                dtype=np.float64, seed=seed, goal=GOAL_SPEEDUP,
                extra=dict(rates_agree=bool(ok), rate_diff_hz=-d, rate_diff_se_hz=se,
                           speedup_kernel_only=kern, loadavg=[min(
                               r["loadavg"][0] for r in ref["runs"] + b["runs"]), max(
                               r["loadavg"][0] for r in ref["runs"] + b["runs"])]),
                path=path))
    return recs


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_cuba",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", action="store_true", help="keep Numba's on-disk cache on")
    ap.add_argument("--brian-venv", default=None, help="Brian2 virtualenv (see module doc)")
    ap.add_argument("--setup-brian", action="store_true", help="create the Brian2 venv first")
    ap.add_argument("--cython-all-threads", action="store_true",
                    help="also run brian2-cython at thread counts > 1 (it is single-threaded)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return neurosim_worker()
    cases = [c for c in args.cases.split(",") if c]
    impls = [i for i in args.impls.split(",") if i]
    for c in cases:
        if c not in CASES:
            raise SystemExit(f"--cases: unknown case {c!r}; known: {', '.join(CASES)}")
    for i in impls:
        if i not in IMPLS:
            raise SystemExit(f"--impls: unknown implementation {i!r}; known: {', '.join(IMPLS)}")
    if args.reps < 1:
        raise SystemExit("--reps must be >= 1")
    venv = Path(args.brian_venv) if args.brian_venv else default_brian_venv()
    venv_py = None
    if any(i.startswith("brian2") for i in impls):
        venv_py = setup_brian(venv) if args.setup_brian else brian_python(venv)
    threads = H.parse_threads(args.threads)
    print(f"[bench] cuba: load average {_loadavg()} at start", file=sys.stderr, flush=True)
    for n in threads:
        res = run_group(n, cases, impls, args.reps, args.seed, venv_py, args.cache,
                        cython_here=(n == min(threads) or args.cython_all_threads))
        write_records(n, res, args.seed)
    print(f"[bench] cuba: load average {_loadavg()} at the end", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
