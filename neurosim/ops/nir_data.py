"""A run's recorded spike trains as a NIR data file (``neurosim export-nir-data``).

The library behind the command: the run file's spike trains (recorded, or re-simulated
bit-identically when the file holds none; a training run is recomputed on its first
``samples`` training samples, as ``neurosim ops`` does) written by
:func:`neurosim.io.nir_data.write_nir_data` under the population names, which are the
node names of the network's NIR export (``neurosim export-nir --run``).  docs/nir.md,
"Recorded activity".
"""
from .. import _validate as V
from ..io.atomic import check_destination, owns_output
from ..io.nir import DEFAULT_DT
from ..io.nir_data import to_nir_data, write_nir_data
from .runfile import DEFAULT_SAMPLES, load_run_data


@owns_output
def export_nir_data(run, out=None, *, dt=None, events=False, n_samples=DEFAULT_SAMPLES,
                    data_dir=None, n_threads=None, force=False):
    """Write the forward spikes and, when the run has a backward phase, its signed
    ternary events of run file ``run`` to the NIR data file ``out`` (atomically, under
    the output's lock).  ``dt``: the time step of the traces (default: the dt a NIR
    import used, else 1e-3 as ``export-nir``).  Returns (path, dt, summary dict)."""
    if out is None:
        raise V.NeurosimError("--out is required")
    check_destination(out, force)
    data = load_run_data(run, n_samples=n_samples, record=True, data_dir=data_dir,
                         n_threads=n_threads)
    net = data.network
    if dt is None:
        dt = float(((net.metadata or {}).get("nir") or {}).get("dt", DEFAULT_DT))
    fwd, bwd = data.forward, data.backward
    nd = to_nir_data(net, fwd.spikes, None if bwd is None else bwd.spikes, dt=dt,
                     events=events)
    path = write_nir_data(out, nd, force=force)
    summary = dict(samples=int(fwd.batch), steps=int(fwd.steps),
                   backward_steps=None if bwd is None else int(bwd.steps),
                   nodes=sorted(nd.nodes), events=bool(events))
    return path, dt, summary
