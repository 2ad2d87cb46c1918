"""Numerical health of a training run: NaN / inf detection and runaway-activity warnings.

Checked at the end of every training batch (:func:`neurosim.training.spide.spide_step`),
cheaply (one ``np.isfinite`` pass over arrays that already exist):

* the final membrane potentials of every spiking population in both phases (a NaN or an
  inf input current shows up there);
* every gradient, before the optimizer uses it;
* every parameter, after the update (a finite gradient times a huge learning rate can
  still overflow).

The first non-finite array raises :class:`NumericalError` naming it; the trainer adds the
epoch and batch and stops without writing a checkpoint, so the run file on disk stays the
last good one.

Runaway activity: a spiking population in which (almost) every neuron fires at every
forward step carries no information in its rates, and SPIDE's activation mask
``m = 1[1 <= N <= T-1]`` zeroes all its gradients, so it stops learning.  The trainer
counts, per epoch, the fraction of (sample, neuron) pairs with ``N = T``; at or above
:data:`RUNAWAY_FRACTION` it issues one :class:`RunawayActivityWarning` per population and
epoch.
"""
import numpy as np

#: fraction of saturated (sample, neuron) pairs over an epoch that counts as runaway activity
RUNAWAY_FRACTION = 0.99


class NumericalError(RuntimeError):
    """Training produced NaN or inf (a runtime failure: exit code 1 on the command line).

    Attributes ``what`` (e.g. ``"gradient"``), ``name`` (the parameter or population),
    ``detail`` (the message without advice) and ``hint`` (how to fix it)."""

    def __init__(self, detail, what=None, name=None, hint=""):
        super().__init__(detail + (f"; {hint}" if hint else ""))
        self.detail, self.what, self.name, self.hint = detail, what, name, hint


class RunawayActivityWarning(UserWarning):
    """A spiking population fired at (almost) every step for every neuron in an epoch."""


def _describe(a):
    nan = int(np.isnan(a).sum())
    inf = int(np.isinf(a).sum())
    parts = ([f"{nan} NaN"] if nan else []) + ([f"{inf} inf"] if inf else [])
    return " and ".join(parts) + f" of {a.size} values"


def check_finite(arrays, what, hint="", dtype=None):
    """Raise :class:`NumericalError` for the first array of ``arrays`` (name -> array) that
    holds a NaN or an inf, or (with ``dtype``) a value too large for that float type.
    ``what`` says what the arrays are (``"gradient"``)."""
    big = None if dtype is None else float(np.finfo(dtype).max)
    for name, a in arrays.items():
        if a is None:
            continue
        a = np.asarray(a)
        if a.dtype.kind not in "fc" or a.size == 0:
            continue
        if not np.isfinite(a).all():
            raise NumericalError(f"{what} {name!r} is not finite ({_describe(a)})",
                                 what=what, name=name, hint=hint)
        if big is not None and float(np.abs(a).max()) > big:
            raise NumericalError(f"{what} {name!r} exceeds the largest "
                                 f"{np.dtype(dtype).name} ({float(np.abs(a).max()):.3g})",
                                 what=what, name=name, hint=hint)


class ActivityMonitor:
    """Per-epoch saturation statistics of the forward phase (see module docstring)."""

    def __init__(self, populations):
        self.populations = list(populations)
        self.reset()

    def reset(self):
        self.saturated = {p: 0 for p in self.populations}
        self.total = {p: 0 for p in self.populations}

    def add(self, fwd, T):
        act = getattr(fwd, "activity", None)     # a sharded step's totals (distributed)
        for p in self.populations:
            if act is not None:
                self.saturated[p] += act[p][0]
                self.total[p] += act[p][1]
                continue
            c = fwd.counts[p]
            self.saturated[p] += int(np.count_nonzero(c >= T))
            self.total[p] += int(c.size)

    def runaway(self):
        """[(population, fraction)] at or above :data:`RUNAWAY_FRACTION`."""
        return [(p, self.saturated[p] / self.total[p]) for p in self.populations
                if self.total[p] and self.saturated[p] / self.total[p] >= RUNAWAY_FRACTION]
