"""The epoch loop of a training run: where a run stands (:class:`TrainState`) and SPIDE
epochs over a run's data with hooks (:func:`run_epochs`).

:func:`neurosim.training.trainer.train` composes the parts: it resolves the run
(:func:`~neurosim.training.trainer.resolve_run`: a frozen
:class:`~neurosim.training.trainer.RunSpec` and a :class:`TrainState`), builds the hooks
(progress, health, diagnostics, checkpoints, the epoch report) and calls
:func:`run_epochs`.  The loop owns only what makes the run's numbers: the batch order, the
SPIDE steps, the running sums, the test pass and the per-epoch history; everything else
happens in hooks, which never change the results.

A hook is any object with some of these methods (each called on every hook that has it,
in the order given):

``epoch_start(state, epoch, t0)``
    an epoch (0-based) begins (``t0``: its start on ``time.perf_counter``'s clock, moved
    back by the time already spent when a mid-epoch checkpoint is resumed);
``batch_end(state, info)``
    after every batch: ``info`` holds ``epoch`` (1-based), ``epochs``, ``batch``
    (1-based), ``n_batches``, ``done`` (batches run in this call), ``loss``, ``accuracy``
    (running means of the epoch), ``t0`` and ``forward`` (the batch's forward phase);
``epoch_end(state, record)``
    after the test pass, before the checkpoint (``record``: the epoch's history row);
``epoch_saved(state, record)``
    after the epoch's checkpoint.

Checkpoints are not hooks: the loop asks its ``checkpoint`` object (``due()``,
``save(state, part=None)``, ``interrupted(stop, epoch_done, batch, n_batches, signum=None,
written=True)`` and ``diverged(error, state, epoch, batch, n_batches)``) because a stop
request must write one before it ends the run.

A stop request is honoured between batches (``stop()``) and inside a phase: the engine
then raises :class:`~neurosim._interrupt.Interrupted` within one time step, the batch is
abandoned before its weight update, the random generator is rewound to the batch's start
and the checkpoint holds the state after the previous batch (none when no batch had been
trained yet), so that ``--resume`` runs the abandoned batch again, bit for bit.
"""
import time
from dataclasses import dataclass, field

import numpy as np

from .. import _testhooks, counting
from .._interrupt import Interrupted
from .checkpoint import HISTORY, OPS
from .spide import learning_rate, spide_phases, spide_step
from . import health


def model_input(net, population, x):
    """``x`` [B, ...] as input population ``population`` of ``net`` takes it: images
    [B, C, H, W] flattened for a flat (1-D) population, otherwise unchanged."""
    if np.ndim(x) == 4 and len(net.populations[population].shape) == 1:
        return x.reshape(len(x), -1)
    return x


@dataclass
class TrainState:
    """Where a training run stands (what a checkpoint stores besides the
    :class:`~neurosim.training.trainer.RunSpec`).

    ``model`` (:class:`~neurosim.training.spide.SPIDEModel`: the weights), ``opt``
    (:class:`~neurosim.training.spide.SGD`: the momentum buffers), ``rng`` (the generator
    of batch orders, dropout masks and augmentation), ``epoch`` (completed epochs),
    ``iteration`` (completed batches), ``history`` (one list per
    :data:`~neurosim.training.checkpoint.HISTORY` key), ``progress`` (the mid-epoch
    position of a resumed checkpoint, consumed by :func:`run_epochs`) and
    ``diagnostics`` (the last :func:`~neurosim.training.diagnose.diagnose` result)."""
    model: object
    opt: object
    rng: np.random.Generator
    epoch: int = 0
    iteration: int = 0
    history: dict = field(default_factory=lambda: {k: [] for k in HISTORY})
    progress: dict = None
    diagnostics: dict = None

    def record(self, epochs, part=None):
        """The state dict :func:`~neurosim.training.checkpoint.save_checkpoint` writes
        (with the spec's entries added by the caller); ``part``: a mid-epoch position."""
        d = dict(epoch=self.epoch, iteration=self.iteration, rng=self.rng.bit_generator.state,
                 optimizer=self.opt.state(), history=self.history,
                 finished=part is None and self.epoch == epochs,
                 wall_s=float(sum(self.history["wall_s"])))
        if self.diagnostics is not None:
            d["diagnostics"] = self.diagnostics
        return d


class EvalStopped(Exception):
    """A test pass was abandoned on a stop request."""


def evaluate(model, cfg, x, y, batch_size=200, n_threads=None, stop=None, engine=None):
    """Forward-only test pass: accuracy, mean loss and forward op counts per sample
    (:data:`neurosim.counting.FORWARD_COUNT_NAMES`).

    ``stop`` (callable) is polled between batches; when it returns True the pass is
    abandoned with :class:`EvalStopped` (used by the trainer on SIGINT)."""
    correct, loss, n = 0, 0.0, 0
    ops = {k: 0 for k in counting.FORWARD_COUNT_NAMES}
    for i in range(0, len(x), batch_size):
        if stop is not None and stop():
            raise EvalStopped()
        r = spide_phases(model, x[i:i + batch_size], y[i:i + batch_size], cfg, None,
                         train=False, n_threads=n_threads, engine=engine)
        correct += r.correct
        loss += r.loss * r.batch
        n += r.batch
        for k in ops:
            ops[k] += int(np.sum(getattr(r, k)))
    return dict(accuracy=correct / max(n, 1), loss=loss / max(n, 1),
                **{k: v / max(n, 1) for k, v in ops.items()})


def _call(hooks, method, *args):
    for h in hooks:
        f = getattr(h, method, None)
        if f is not None:
            f(*args)


class _Epoch:
    """The running position and sums of one epoch (what a mid-epoch checkpoint stores)."""

    def __init__(self, state, n_train, batch_size, monitor):
        self.t0 = time.perf_counter()
        self.monitor = monitor
        p = state.progress
        if p is not None:
            self.perm = np.asarray(p["perm"], np.int64)
            self.batches = [self.perm[i:i + batch_size] for i in range(0, len(self.perm), batch_size)]
            self.bi0 = int(p["batch"])
            self.sums = {k: float(p["sums"][k]) for k in OPS}
            self.loss_sum, self.correct, self.n = (float(p["loss_sum"]), int(p["correct"]),
                                                   int(p["n"]))
            self.t0 -= float(p["wall_s"])
            monitor.saturated = dict(p["activity"]["saturated"])
            monitor.total = dict(p["activity"]["total"])
            state.progress = None
        else:
            self.perm = state.rng.permutation(n_train)
            self.batches = [self.perm[i:i + batch_size] for i in range(0, n_train, batch_size)]
            self.bi0, self.sums = 0, {k: 0.0 for k in OPS}
            self.loss_sum, self.correct, self.n = 0.0, 0, 0
            monitor.reset()

    def add(self, r):
        self.loss_sum += r.loss * r.batch
        self.correct += r.correct
        self.n += r.batch
        for k in OPS:
            self.sums[k] += float(np.sum(getattr(r, k)))

    def snapshot(self, next_batch):
        return dict(perm=self.perm, batch=next_batch, n_batches=len(self.batches),
                    loss_sum=self.loss_sum, correct=self.correct, n=self.n, sums=dict(self.sums),
                    wall_s=time.perf_counter() - self.t0,
                    activity=dict(saturated=self.monitor.saturated, total=self.monitor.total))


def run_epochs(spec, state, hooks, checkpoint, stop, *, monitor, n_threads=None, engine=None):
    """Run the epochs of ``spec`` from ``state`` (changed in place) to ``spec.cfg.epochs``.

    Per batch: the batch's images (augmented where the data set is, :meth:`Dataset.augment
    <neurosim.datasets.Dataset.augment>`), the learning rate, one
    :func:`~neurosim.training.spide.spide_step`, the running sums, the activity
    ``monitor`` (:class:`~neurosim.training.health.ActivityMonitor`), the ``batch_end``
    hooks, and a mid-epoch checkpoint when ``checkpoint.due()`` or ``stop()`` (then
    ``checkpoint.interrupted`` is raised).  Per epoch: the test pass (:func:`evaluate`),
    the history row, the ``epoch_end`` hooks, the checkpoint, the ``epoch_saved`` hooks.
    See the module docstring for the hooks."""
    cfg, data = spec.cfg, spec.data
    net, model = state.model.net, state.model
    for epoch in range(state.epoch, cfg.epochs):
        ep = _Epoch(state, len(data.x_train), cfg.batch_size, monitor)
        _call(hooks, "epoch_start", state, epoch, ep.t0)
        for bi in range(ep.bi0, len(ep.batches)):
            idx = ep.batches[bi]
            rng_before = state.rng.bit_generator.state    # a stop inside the batch rewinds
            try:
                x = data.dataset.augment(idx, state.rng) if data.dataset.augmented else \
                    data.x_train[idx]
                xb = model_input(net, model.input, x)
                lr = learning_rate(cfg, epoch, state.iteration)
                r = spide_step(model, xb, data.y_train[idx], cfg, state.rng, lr, state.opt,
                               n_threads=n_threads, engine=engine)
            except health.NumericalError as e:
                raise checkpoint.diverged(e, state, epoch, bi, len(ep.batches)) from None
            except Interrupted as e:
                # stopped inside a phase: the batch is abandoned before its update (the
                # weights and momentum are those after batch bi); the generator goes back
                # to where the batch found it, so the checkpoint resumes with this batch
                state.rng.bit_generator.state = rng_before
                if state.iteration == 0:        # nothing trained yet: nothing to keep
                    raise checkpoint.interrupted(stop, epoch, bi, len(ep.batches),
                                                 signum=e.signum, written=False) from None
                checkpoint.save(state, ep.snapshot(bi))
                raise checkpoint.interrupted(stop, epoch, bi, len(ep.batches),
                                             signum=e.signum) from None
            state.iteration += 1
            ep.add(r)
            monitor.add(r.forward, cfg.T)
            _testhooks.pause("batch")
            _call(hooks, "batch_end", state, dict(
                epoch=epoch + 1, epochs=cfg.epochs, batch=bi + 1, n_batches=len(ep.batches),
                done=bi + 1 - ep.bi0, loss=ep.loss_sum / ep.n, accuracy=ep.correct / ep.n,
                t0=ep.t0, forward=r.forward))
            if (stop() or checkpoint.due()) and bi + 1 < len(ep.batches):
                checkpoint.save(state, ep.snapshot(bi + 1))
                if stop():
                    raise checkpoint.interrupted(stop, epoch, bi + 1, len(ep.batches))
        xe = model_input(net, model.input, data.x_test)
        try:
            ev = evaluate(model, cfg, xe, data.y_test, n_threads=n_threads, stop=stop,
                          engine=engine)
        except (EvalStopped, Interrupted) as e:
            checkpoint.save(state, ep.snapshot(len(ep.batches)))
            raise checkpoint.interrupted(stop, epoch, len(ep.batches), len(ep.batches),
                                         signum=getattr(e, "signum", None)) from None
        record = dict(epoch=epoch + 1, lr=learning_rate(cfg, epoch, max(state.iteration - 1, 0)),
                      train_loss=ep.loss_sum / ep.n, train_accuracy=ep.correct / ep.n,
                      test_accuracy=ev["accuracy"], test_loss=ev["loss"],
                      wall_s=time.perf_counter() - ep.t0,
                      **{k: ep.sums[k] / ep.n for k in OPS},
                      **{"test_" + k: ev[k] for k in counting.FORWARD_COUNT_NAMES})
        for k in HISTORY:
            state.history[k].append(record[k])
        state.epoch = epoch + 1
        _call(hooks, "epoch_end", state, record)
        checkpoint.save(state)
        _call(hooks, "epoch_saved", state, record)
        if stop() and epoch + 1 < cfg.epochs:
            raise checkpoint.interrupted(stop, epoch + 1, 0, 0)
    return state
