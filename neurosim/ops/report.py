"""Text rendering of an operation table and its energy estimate (``neurosim ops``)."""
import textwrap

from ..counting import OP_KIND


def fmt(v):
    """Counts and rates, compactly: thousands separators, 3 significant digits."""
    if v is None:
        return "-"
    v = float(v)
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1e7:
        return f"{v:.3e}"
    if a >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def fmt_energy(pj):
    """Picojoules with an SI prefix (pJ, nJ, uJ, mJ, J)."""
    if pj is None:
        return "-"
    for unit, scale in (("pJ", 1.0), ("nJ", 1e3), ("uJ", 1e6), ("mJ", 1e9)):
        if abs(pj) < 1000 * scale:
            return f"{pj / scale:.3g} {unit}"
    return f"{pj / 1e12:.3g} J"


def _grid(header, rows, right=()):
    w = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).rjust(w[i]) if i in right else str(x).ljust(w[i])
                               for i, x in enumerate(r)).rstrip()
    return "\n".join([line(header), line(["-" * n for n in w])] + [line(r) for r in rows])


def _heading(table):
    s = table.source
    out = [f"neurosim ops: {s.get('file', '(phase results)')}"]
    T, Tb = table.steps["forward"], table.steps.get("backward")
    steps = f"T = {T}" + (f", T_b = {Tb}" if Tb else ", no backward phase")
    if s.get("kind") == "training":
        out.append(f"training run: {s['model']} on {s['dataset']}, network "
                   f"{s.get('stored', 'after epoch ' + str(s['epoch']))}; {steps}")
    else:
        out.append(f"{s.get('kind', 'phases')} run of network {table.network.name!r}; {steps}")
    if s.get("basis"):
        out.append(f"basis: {s['basis']}")
    out.append(f"per sample = mean over the {table.samples} sample(s); total = summed over them")
    return "\n".join(out)


def _projection_section(table):
    rows = []
    for r in table.projection_rows():
        phase = r["phase"]
        label = {"backward_pos": "  backward +1", "backward_neg": "  backward -1"}.get(phase, phase)
        rows.append([r["layer"], r["kind"], label, r["op"], fmt(r["synaptic_operations"]),
                     fmt(r["synaptic_operations_nonzero"]), fmt(r["dense_macs"]),
                     fmt(r["event_fraction"]), fmt(r["synaptic_operations_total"])])
    header = ["projection", "kind", "phase", "op", "ops/sample", "on nonzero w", "dense MACs",
              "ops/dense", "total ops"]
    return "Synaptic operations (op: AC = accumulate per event, MAC = multiply-accumulate)\n" + \
        _grid(header, rows, right=range(4, 9))


def _population_section(table):
    rows = []
    for r in table.population_rows():
        spikes = fmt(r["spikes"])
        if r["phase"] == "backward":
            spikes += f" (+{fmt(r['spikes_pos'])} / -{fmt(r['spikes_neg'])})"
        rows.append([r["layer"], r["kind"], r["phase"], fmt(r["neuron_updates"]),
                     fmt(r["dense_neuron_updates"]), spikes, fmt(r["firing_rate"]),
                     fmt(r["activation_sparsity"])])
    header = ["population", "kind", "phase", "updates/sample", "clock-driven", "spikes/sample",
              "firing_rate", "activation_sparsity"]
    return ("Neurons (firing_rate = spikes per neuron per step; clock-driven = neurons x steps)\n"
            + _grid(header, rows, right=range(3, 8)))


def _totals_section(table):
    rows = []
    for phase, m in table.phase_totals().items():
        rows.append([phase, OP_KIND.get(phase, ""), fmt(m["synaptic_operations"]),
                     fmt(m["synaptic_operations_nonzero"]), fmt(m["dense_macs"]),
                     fmt(m.get("neuron_updates")), fmt(m.get("spikes"))])
    header = ["phase", "op", "ops/sample", "on nonzero w", "dense MACs", "neuron updates",
              "spikes"]
    out = "Totals per sample\n" + _grid(header, rows, right=range(2, 7))
    h = table.source.get("history")
    if h:
        out += ("\nstored history, last epoch (means over all training samples): forward "
                f"{fmt(h['fwd_synops'])} synaptic ops + {fmt(h['encoding_macs'])} input MACs; "
                f"backward {fmt(h['bwd_synops_pos'])} (+1) / {fmt(h['bwd_synops_neg'])} (-1); "
                f"weight update {fmt(h['update_macs'])} MACs; test forward "
                f"{fmt(h['test_fwd_synops'])} synaptic ops, accuracy {h['test_accuracy']:.4f}")
    return out


def format_energy(e, table=None):
    """The energy section: SNN vs ANN vs BPTT, per sample, labelled as an estimate."""
    p = e["profile"]
    pj = p["energy_pj"]
    T = table.steps["forward"] if table is not None else "T"
    lines = [f"ENERGY ESTIMATE (not a measurement) - profile {p['name']}: "
             f"{pj['synaptic_op']:g} pJ/synaptic op, {pj['mac']:g} pJ/MAC, "
             f"{pj['weight_update']:g} pJ/weight-update term, {pj['neuron_update']:g} pJ/neuron "
             f"update, {pj['idle_neuron']:g} pJ/idle neuron-step"]
    if table is not None and table.source.get("energy_basis"):
        lines.append(f"counts: {table.source['energy_basis']}")
    r = e["ratios"]
    rows = []
    for what in ("inference", "training"):
        snn = e["snn"][f"{what}_pj"]
        rows.append([what, fmt_energy(snn), fmt_energy(e["ann"][f"{what}_pj"]),
                     fmt_energy(e["bptt"][f"{what}_pj"]),
                     fmt(r[f"{what}_vs_ann"]), fmt(r[f"{what}_vs_bptt"])])
    lines.append(_grid(["per sample", "SNN (event-driven)", "ANN (1 dense pass)",
                        f"BPTT (dense, {T} steps)", "SNN/ANN", "SNN/BPTT"], rows,
                       right=range(1, 6)))
    per = e["per_phase_pj"]
    lines.append("SNN " + ("training" if "backward" in per else "inference") + " by phase: "
                 + ", ".join(f"{k} {fmt_energy(v)}" for k, v in per.items()))
    lines.append("assumptions:")
    for a in e["assumptions"]:
        lines.append(textwrap.fill(a, 96, initial_indent="  - ", subsequent_indent="    "))
    lines.append(textwrap.fill(f"source: {p['source']}", 96, subsequent_indent="    "))
    return "\n".join(lines)


def format_table(table, energy=None):
    parts = [_heading(table), _projection_section(table), _population_section(table),
             _totals_section(table)]
    if energy is not None:
        parts.append(format_energy(energy, table))
    return "\n\n".join(parts)
