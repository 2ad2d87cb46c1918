"""Operation accounting and energy estimates.

The library behind ``neurosim ops`` (the CLI only calls these functions; ``docs/ops-energy.md`` defines every number):

- :func:`read_ops` — the operation table of a run file (either kind), an
  :class:`OpsTable` per layer and phase (input encoding, forward, backward ±1, weight
  update): synaptic operations, operations on nonzero weights, dense-equivalent MACs,
  neuron updates, firing rates and activation sparsity, per sample and in total;
- :func:`table_from_phases` — the same from :class:`~neurosim.PhaseResult` objects;
- :func:`estimate_energy` / :func:`load_profile` — energy estimates from per-operation
  profiles (``cmos45-fp32``, ``loihi``, or a user TOML file), with ANN and BPTT baselines;
- :func:`neurobench_metrics` / :func:`format_neurobench` — NeuroBench 2.x metric names
  (Footprint, ConnectionSparsity, ActivationSparsity, SynapticOperations, ...) computed
  from the exact counts (``neurosim ops --neurobench``);
- :func:`synapse_counts` — per-synapse counts aligned with the stored connectivity;
- :mod:`neurosim.ops.plots` (matplotlib), imported on use.

The sparsity sweep (``neurosim bench sparsity``), which trains models, lives above this
package and :mod:`neurosim.training`: :mod:`neurosim.experiments.sparsity`.
"""
from ..counting import OP_KIND
from ..local_rule import update_ops
from .energy import (DEFAULT_PROFILE, EnergyError, EnergyProfile, baseline_ops, list_profiles,
                     load_profile)
from .energy import estimate as estimate_energy
from .energy import estimate_table
from .neurobench import format_neurobench, needs_spike_trains, neurobench_metrics
from .report import format_energy
from .runfile import DEFAULT_SAMPLES, RunData, load_run_data, read_ops, run_kind, table_from_data
from .synapses import synapse_counts
from .table import (POPULATION_PHASES, PROJECTION_PHASES, OpsError, OpsTable, add_sums,
                    nonzero_in_degree, nonzero_out_degree, phase_sums, table_from_phases)

__all__ = ["DEFAULT_PROFILE", "DEFAULT_SAMPLES", "EnergyError", "EnergyProfile", "OP_KIND",
           "OpsError", "OpsTable", "POPULATION_PHASES", "PROJECTION_PHASES", "RunData",
           "add_sums", "baseline_ops", "estimate_energy", "estimate_table", "format_energy",
           "format_neurobench", "list_profiles", "load_profile", "load_run_data",
           "needs_spike_trains", "neurobench_metrics", "nonzero_in_degree", "nonzero_out_degree",
           "phase_sums", "read_ops", "run_kind", "synapse_counts", "table_from_data",
           "table_from_phases", "update_ops"]
