"""Figures of a run's operation counts (``neurosim ops RUN.h5 --plot DIR``).

:func:`plot_run` writes PNG files (matplotlib's Agg renderer, no display needed):

``ops_by_phase.png``
    operations per sample of every projection and phase (log scale), with the
    dense-equivalent MACs of the forward and backward phases as markers;
``firing_rates.png``
    histograms of the per-neuron firing rates (spikes per neuron per step, mean over the
    samples) of every spiking population, forward and backward;
``kernel_counts_<projection>.png``
    for every conv / conv-transpose / pooling projection: events per sample per kernel
    weight, summed over the channels (a ``kh x kw`` map) and per (receiving, sending)
    channel pair summed over the kernel offsets, forward and backward;
``rate_convergence.png``
    running average rate of every spiking population over the time steps of both phases,
    and its mean distance to the final rate (needs spike trains: a simulate run without
    them is re-simulated from the file, a training run is recomputed with recording).

matplotlib is optional (extras ``plot`` / ``test``); it is imported here only, and a
missing installation raises :class:`PlotError` saying how to install it.
"""
from pathlib import Path

import numpy as np

from .. import _validate as V
from .. import counting
from ..io.atomic import OutputExistsError, atomic_open, output_lock
from .runfile import DEFAULT_SAMPLES, RunData, load_run_data, table_from_data

_PHASE_STYLE = (("input_encoding", "input encoding (MAC)", "#7f7f7f"),
                ("forward", "forward (AC)", "#1f77b4"),
                ("backward_pos", "backward +1 (AC)", "#2ca02c"),
                ("backward_neg", "backward -1 (AC)", "#d62728"),
                ("weight_update", "weight update (MAC)", "#9467bd"))


class PlotError(V.NeurosimError):
    """Figures cannot be drawn (matplotlib missing, bad output folder)."""


def _figure(**kw):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise PlotError("figures need matplotlib, which is not installed: "
                        "pip install 'neurosim-events[plot]' (matplotlib >= 3.7)") from e
    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    """Write the PNG atomically (:func:`neurosim.io.atomic.atomic_open`; replaces ``path``)."""
    path = Path(path)
    with atomic_open(path, "wb", force=True) as fh:
        fig.savefig(fh, format="png", dpi=110)
    return path


def _title_suffix(data):
    s = data.source
    if data.kind == "training":
        return f"{s['model']} on {s['dataset']}, epoch {s['epoch']}, {data.forward.batch} samples"
    return f"{Path(s['file']).name}, {data.forward.batch} sample(s)"


def plot_ops_by_phase(data, table, out):
    rows = table.projection_rows()
    names = [n for n in data.network.projections if any(r["layer"] == n for r in rows)]
    fig = _figure(figsize=(max(6.0, 1.3 * len(names) + 3), 4.6), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(_PHASE_STYLE)
    x = np.arange(len(names))
    val = {(r["layer"], r["phase"]): r for r in rows}
    for i, (phase, label, color) in enumerate(_PHASE_STYLE):
        h = [val.get((n, phase), {}).get("synaptic_operations") or 0 for n in names]
        if any(h):
            ax.bar(x + (i - 2) * width, h, width, label=label, color=color)
    for phase, marker, label in (("forward", "_", "dense-equivalent MACs, forward"),
                                 ("backward", "x", "dense-equivalent MACs, backward")):
        d = [val.get((n, phase), {}).get("dense_macs") for n in names]
        if any(v for v in d if v):
            ax.plot(x, [v if v else np.nan for v in d], linestyle="none", marker=marker,
                    markersize=14, color="black", label=label)
    ax.set_yscale("log")
    ax.set_xticks(x, names)
    ax.set_xlabel("projection")
    ax.set_ylabel("operations per sample (log scale)")
    ax.set_title(f"Operations per sample by projection and phase\n({_title_suffix(data)})",
                 fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, out)


def _rates(res, name):
    c = res.counts[name].astype(np.float64) + res.counts_neg[name]
    return c.mean(0) / res.steps


def plot_firing_rates(data, out):
    phases = [("forward", data.forward)] + ([("backward", data.backward)] if data.backward else [])
    pops = [p.name for p in data.network.spiking_populations]
    fig = _figure(figsize=(5.2 * len(phases), 4.0), layout="constrained")
    for k, (phase, res) in enumerate(phases):
        ax = fig.add_subplot(1, len(phases), k + 1)
        for name in pops:
            r = _rates(res, name)
            hi = max(float(r.max()), 1e-3)
            ax.hist(r, bins=np.linspace(0, hi * 1.0001, 31), histtype="step", linewidth=1.5,
                    label=f"{name} (mean {r.mean():.3g})")
        what = "spikes" if phase == "forward" else "+1 and -1 events"
        ax.set_xlabel(f"firing rate ({what} per neuron per step)")
        ax.set_ylabel("neurons")
        ax.set_title(f"{phase} phase (T = {res.steps}), mean over {res.batch} sample(s)",
                     fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(f"Per-neuron firing rates ({_title_suffix(data)})", fontsize=10)
    return _save(fig, out)


def _kernel_layouts(pr, per_kw):
    """(offset map [kh, kw], channel map [C_recv, C_send]) of a per-kernel-weight array."""
    return pr.kernel_count_maps(per_kw)


def _int_ticks(ax, shape, most=16):
    """Integer channel ticks (at most ``most`` per axis)."""
    for n, setter in ((shape[1], ax.set_xticks), (shape[0], ax.set_yticks)):
        step = max(1, -(-n // most))
        setter(range(0, n, step))


def plot_kernel_counts(data, name, out):
    pr = data.network.projections[name]
    # a projection out of a source population has no backward phase
    phases = [(ph, res) for ph, res in (("forward", data.forward), ("backward", data.backward))
              if res is not None and name in res.sent]
    maps = []
    for phase, res in phases:
        kw = counting.per_kernel_weight(res, name)
        per = sum(np.asarray(v, np.float64) for v in kw.values()) / res.batch
        maps.append((phase, _kernel_layouts(pr, per)))
    ncol = 1 if maps[0][1][1] is None else 2
    fig = _figure(figsize=(4.8 * ncol + 0.5, 3.9 * len(phases)), layout="constrained")
    for i, (phase, (off, chan)) in enumerate(maps):
        what = "events" if phase == "forward" else "+1 and -1 events"
        ax = fig.add_subplot(len(phases), ncol, i * ncol + 1)
        im = ax.imshow(off, cmap="viridis", origin="upper")
        ax.set_xticks(range(off.shape[1]))
        ax.set_yticks(range(off.shape[0]))
        ax.set_xlabel("kernel column kx")
        ax.set_ylabel("kernel row ky")
        ax.set_title(f"{phase}: per kernel offset, all channels", fontsize=9)
        fig.colorbar(im, ax=ax, label=f"{what} per sample")
        if chan is not None:
            ax = fig.add_subplot(len(phases), ncol, i * ncol + 2)
            im = ax.imshow(chan, cmap="viridis", aspect="auto", interpolation="nearest")
            _int_ticks(ax, chan.shape)
            ax.set_xlabel("sending channel (pre)")
            ax.set_ylabel("receiving channel (post)")
            ax.set_title(f"{phase}: per channel pair, all offsets", fontsize=9)
            fig.colorbar(im, ax=ax, label=f"{what} per sample")
    fig.suptitle(f"Per-kernel-weight event counts of {name} ({pr.kind}, kernel "
                 f"{pr.kernel_shape[0]}x{pr.kernel_shape[1]}; {_title_suffix(data)})", fontsize=10)
    return _save(fig, out)


def _running(trains, signed):
    """Mean over samples and neurons of |running average rate| [T] and of |r_t - r_T|
    (backward: the signed rate of +1 minus -1 events, whose magnitude is |β| / Θ_b)."""
    s = trains.astype(np.float64)
    if not signed:
        s = np.abs(s)
    cum = np.cumsum(s, axis=1) / np.arange(1, s.shape[1] + 1)[None, :, None]   # [B, T, n]
    final = cum[:, -1:, :]
    return np.abs(cum).mean((0, 2)), np.abs(cum - final).mean((0, 2))


def plot_rate_convergence(data, out):
    phases = [(ph, res) for ph, res in (("forward", data.forward), ("backward", data.backward))
              if res is not None and res.spikes is not None]
    pops = [p.name for p in data.network.spiking_populations]
    fig = _figure(figsize=(5.2 * len(phases), 7.0), layout="constrained")
    for k, (phase, res) in enumerate(phases):
        top = fig.add_subplot(2, len(phases), k + 1)
        bot = fig.add_subplot(2, len(phases), len(phases) + k + 1)
        t = np.arange(1, res.steps + 1)
        for name in pops:
            mean, dev = _running(res.spikes[name], signed=phase == "backward")
            top.plot(t, mean, label=name)
            bot.plot(t[:-1], np.maximum(dev[:-1], 1e-12), label=name)
        unit = "spikes per step" if phase == "forward" else "net (+1 minus -1) events per step"
        top.set_ylabel(f"mean |running average rate|\n({unit})")
        top.set_title(f"{phase} phase: rate averaged over steps 1..t", fontsize=9)
        bot.set_yscale("log")
        bot.set_xlabel("time step t")
        bot.set_ylabel(f"mean |rate(t) - rate(T)|\n({unit})")
        bot.set_title(f"{phase} phase: distance to the final rate", fontsize=9)
        top.set_xlabel("time step t")
        top.legend(fontsize=8)
        bot.legend(fontsize=8)
    note = ""
    if "re-simulated" in data.source.get("basis", ""):
        note = "; spike trains re-simulated from the run file"
    fig.suptitle(f"Convergence of firing rates over time ({_title_suffix(data)}{note})",
                 fontsize=10)
    return _save(fig, out)


def plot_run(run, out_dir, *, n_samples=DEFAULT_SAMPLES, data_dir=None, n_threads=None,
             force=False):
    """Write every figure of a run file (or :class:`RunData` with spike trains) to
    ``out_dir`` (created if missing).  Returns ``(written paths, skipped notes)``.

    A figure that exists already is only replaced with ``force`` (checked before any
    figure is drawn); while the figures are written this process owns the folder
    (:func:`neurosim.io.atomic.output_lock` on ``<out_dir>/.neurosim-plot``), so two
    commands plotting into one folder do not interleave."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise PlotError(f"--plot {str(out_dir)!r} exists and is not a folder")
    _figure()                                          # fail early without matplotlib
    if isinstance(run, RunData):
        data = run
    else:
        data = load_run_data(run, n_samples=n_samples, record=True, data_dir=data_dir,
                             n_threads=n_threads)
    convs = [n for n, pr in data.network.projections.items()
             if pr.spatial and n in data.forward.sent]
    rates = not (data.forward.spikes is None or any(
        n not in data.forward.spikes for n in (p.name for p in data.network.spiking_populations)))
    names = (["ops_by_phase.png", "firing_rates.png"]
             + [f"kernel_counts_{name}.png" for name in convs]
             + (["rate_convergence.png"] if rates else []))
    out_dir.mkdir(parents=True, exist_ok=True)
    with output_lock(out_dir / ".neurosim-plot"):
        existing = [n for n in names if (out_dir / n).exists()]
        if existing and not force:
            raise OutputExistsError(out_dir / existing[0],
                                    "already exists" if len(existing) == 1 else
                                    f"and {len(existing) - 1} more of the figures already exist")
        table = table_from_data(data)
        written, skipped = [], []
        written.append(plot_ops_by_phase(data, table, out_dir / "ops_by_phase.png"))
        written.append(plot_firing_rates(data, out_dir / "firing_rates.png"))
        for name in convs:
            written.append(plot_kernel_counts(data, name, out_dir / f"kernel_counts_{name}.png"))
        if not convs:
            skipped.append("kernel_counts: the network has no conv, conv-transpose or pooling "
                           "projection")
        if rates:
            written.append(plot_rate_convergence(data, out_dir / "rate_convergence.png"))
        else:
            skipped.append("rate_convergence: the run has no spike trains of every spiking "
                           "population")
    return written, skipped
