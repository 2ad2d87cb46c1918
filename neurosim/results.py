"""What one phase of a run produced: :class:`PhaseResult`.

Below both the engine (which builds it: :func:`neurosim.engine.run_forward` /
:func:`~neurosim.engine.run_backward`) and the file layer (:mod:`neurosim.io.runfile`
rebuilds it from a run file), so that io/ need not import the engine.
"""
import dataclasses

import numpy as np

from . import _validate as V


@dataclasses.dataclass(eq=False, repr=False)
class PhaseResult:
    """What one phase produced, per population / projection and per sample.

    Built by :func:`run_forward` / :func:`run_backward`, and from stored or joined results
    (:func:`neurosim.io.hdf5.read_run`, the MPI shards): the fields after
    ``neuron_updates`` are optional (None where the source does not have them).

    Attributes
    ----------
    phase : "forward" or "backward"
    steps, batch : int
    network : Network
    program : the compiled program the kernel ran (None for a result read from a file)
    counts : dict name -> int32 [B, n]
        Forward: spikes per neuron.  Backward: +1 spikes per couple.
    counts_neg : dict name -> int32 [B, n]
        Backward only: -1 spikes per couple (zeros in the forward phase).
    v_final : dict name -> [B, n]
        Potential after the last step (after its leak).
    weighted_counts : dict name -> [B, n] or None
        Σ_t λ^(T-1-t) s(t) for leaky populations (None for λ = 1).
    sent, sent_neg : dict projection -> int64 [B, n_sender]
        Events delivered by each sender neuron through each projection (backward: +1 and
        -1 separately; only gated senders deliver).
    neuron_updates : dict name -> int64 [B]
    input_ops : dict input-map projection -> int64 [B]
        Multiply-accumulates of the analog input encoding (nonzero inputs × fan-out).
    spikes : dict name -> int8 [B, T, n] or None
        Spike trains (values in {0, 1}, backward {-1, 0, +1}) when recorded.
    synops, synops_neg : dict projection -> int64 [B]
        Synaptic events per sample (forward; backward +1 and -1 apart): ``sent`` times the
        senders' degrees, summed by the kernel after each sample (the formulas of
        :mod:`neurosim.counting`, which uses them when present).
    spike_totals : dict name -> int64 [B]
        Spikes per sample (+1 and -1).
    counts_all, counts_neg_all : int32 [B, N]
        The arrays ``counts`` / ``counts_neg`` are column ranges of (neurons in
        ``program.arrays.pop_off`` order), for kernels that want C-contiguous rows.
    masks : dict projection -> [B, n_post] or None
        The forward phase's masks (the backward phase keeps the forward's).
    wall_s : float
    profile : dict step -> float or None
        Profiled build only (``NEUROSIM_PROFILE=1``, :data:`neurosim.config.PROFILE`):
        seconds spent in each named step of the schedule
        (:data:`neurosim.kernels.layout.STEP_NAMES`, in that order), summed over the
        samples, so thread time: with several threads their sum exceeds ``wall_s``.
        None in the default build, for results read from files and for the one-sample
        CubaLIF split runner.
    """

    phase: str
    steps: int
    batch: int
    network: object = None
    program: object = None
    counts: dict = None
    counts_neg: dict = None
    v_final: dict = None
    weighted_counts: dict = None
    sent: dict = None
    sent_neg: dict = None
    neuron_updates: dict = None
    input_ops: dict = None
    masks: dict = None
    spikes: dict = None
    synops: dict = None
    synops_neg: dict = None
    spike_totals: dict = None
    counts_all: np.ndarray = None
    counts_neg_all: np.ndarray = None
    wall_s: float = 0.0
    profile: dict = None

    def rates(self, pop):
        """Forward: (weighted) average rate a.  Backward: β = (Θ_b / T_b) Σ_t q(t)."""
        p = self.network.populations[pop]
        if self.phase == "forward":
            lam = p.neuron.leak if p.spiking else 1.0
            if self.weighted_counts.get(pop) is not None:
                return self.weighted_counts[pop] / np.sum(lam ** np.arange(self.steps))
            return self.counts[pop] / self.steps
        lam = p.ternary.leak
        if self.weighted_counts.get(pop) is not None:
            return p.ternary.subtract * self.weighted_counts[pop] / np.sum(lam ** np.arange(self.steps))
        # Θ_b · (n₊ − n₋) / T_b in float64, in place (one array, not four): the
        # difference of two small counts is exact in float64, so this is the same
        # rounding as the int64 expression
        r = np.subtract(self.counts[pop], self.counts_neg[pop], dtype=np.float64)
        np.multiply(p.ternary.subtract, r, out=r)
        r /= self.steps
        return r

    def mask(self, pop):
        """m = 1[1 <= count <= T-1] (forward only): the clamp's derivative read off the counts."""
        if self.phase != "forward":
            raise V.NeurosimError("mask() is defined on a forward-phase result")
        c = self.counts[pop]
        return (c >= 1) & (c <= self.steps - 1)

    def profile_table(self):
        """The profile as text: one line per named step with its seconds per sample and
        its share of the profiled total (None in the default build)."""
        if self.profile is None:
            return None
        total = sum(self.profile.values())
        lines = [f"{'step':<18} {'s/sample':>10} {'share':>7}"]
        for name, sec in self.profile.items():
            share = sec / total if total > 0 else 0.0
            lines.append(f"{name:<18} {sec / self.batch:>10.3e} {share:>7.1%}")
        lines.append(f"{'total':<18} {total / self.batch:>10.3e} {1:>7.1%}")
        return "\n".join(lines)

    def __repr__(self):
        return f"PhaseResult({self.phase}, steps={self.steps}, batch={self.batch})"
