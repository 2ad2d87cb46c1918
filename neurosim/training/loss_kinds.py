"""The output losses SPIDE trains with, one registry entry each (the pattern of
:data:`neurosim.neurons.NEURON_KINDS` and :data:`neurosim.connectivity.PROJECTION_KINDS`).

A loss is a pure function of :mod:`neurosim.losses` (per-sample value and its exact gradient
with respect to the output rates or counts) plus what the trainer must know about it: whether
it trains a linear readout on the output rates (the paper's cross-entropy), whether the
forward phase must record the output population's spike trains (the sliding-window
Spikemax), which :class:`~neurosim.training.spide.SPIDEConfig` fields it reads, and how its
predictions are made.  Code outside this module asks these attributes instead of testing
the loss's name; adding a loss is one function in :mod:`neurosim.losses` and one entry in
:data:`LOSS_KINDS` (docs/architecture.md).
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import losses


@dataclass(frozen=True)
class LossKind:
    """What the trainer knows about one output loss.

    Attributes
    ----------
    name : str
        The ``loss`` value of model files, ``--loss`` and run files.
    readout : bool
        A linear readout ``C a + c`` on the output rates is trained with the network (and
        stored in run files as ``/training/readout_weight`` / ``readout_bias``).
    records_output : bool
        The loss reads the output population's spike trains, so the forward phase records
        them.
    options : tuple of str
        The ``SPIDEConfig`` fields the loss reads (documentation, ``neurosim info``).
    evaluate : callable
        ``evaluate(model, cfg, fwd, y) -> (loss result, dL/da_out [B, n_out], predictions)``,
        the batch mean; ``fwd`` is the forward :class:`~neurosim.results.PhaseResult`.
    """

    name: str
    readout: bool
    records_output: bool
    options: tuple
    evaluate: Callable


def _ce(model, cfg, fwd, y):
    a = fwd.rates(model.output)
    r = losses.cross_entropy_readout(a, y, model.C, model.c, reduction="mean")
    logits = a @ model.C.T + model.c
    return r, r.grad, np.argmax(logits, 1)


def _spikemax(model, cfg, fwd, y):
    counts = fwd.counts[model.output]
    r = losses.spikemax(counts, y, cfg.T, mode=cfg.spikemax_mode, beta=cfg.spikemax_beta,
                        reduction="mean")
    return r, r.grad, losses.predict(counts)


def _spikemax_sliding(model, cfg, fwd, y):
    out = model.output
    r = losses.spikemax_sliding(fwd.spikes[out].astype(np.float64), y, min(cfg.window, cfg.T),
                                mode=cfg.spikemax_mode, beta=cfg.spikemax_beta,
                                reduction="mean")
    return r, r.grad, losses.predict(fwd.counts[out])


def _rate_mse(model, cfg, fwd, y):
    out = model.output
    r = losses.rate_mse(fwd.rates(out), y, cfg.rate_true, cfg.rate_false, reduction="mean")
    return r, r.grad, losses.predict(fwd.counts[out])


#: name -> :class:`LossKind`, in the order ``--loss`` lists them.
LOSS_KINDS = {k.name: k for k in (
    LossKind("ce", readout=True, records_output=False, options=(), evaluate=_ce),
    LossKind("spikemax", readout=False, records_output=False,
             options=("spikemax_mode", "spikemax_beta"), evaluate=_spikemax),
    LossKind("spikemax-sliding", readout=False, records_output=True,
             options=("spikemax_mode", "spikemax_beta", "window"), evaluate=_spikemax_sliding),
    LossKind("rate-mse", readout=False, records_output=False,
             options=("rate_true", "rate_false"), evaluate=_rate_mse),
)}
