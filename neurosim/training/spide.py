r"""SPIDE training, event by event (Xiao et al., Neural Networks 2023, arXiv:2302.00232).

One training step on a batch (``shared/spec/SPIDE.md`` sections 1-4):

1. **Forward phase**, ``T`` steps: binary spikes; the analog input goes through the input
   map once (direct encoding) and is injected every step; dropout masks (one per map
   output, drawn per batch) are fixed for both phases.
2. Forward rates :math:`a_l`, activation masks :math:`m_l = 1[1 \le N_l \le T-1]`.
3. Loss on the output: the paper's linear readout + cross-entropy on the last layer's
   rates, or Spikemax / rate-MSE on a spiking output population
   (:mod:`neurosim.losses`).  :math:`g = \kappa\, \partial L / \partial a_{out}`.
4. **Backward phase**, ``T_b`` steps: ternary couples through the transposed projections,
   :math:`g` injected as a constant current into the output population, events sent only
   by gated neurons; :math:`\beta_l = (\Theta_b / T_b) \sum_t q_l(t)`.
5. **Local updates**: post error :math:`\delta_l = m_l \odot \beta_l / \Theta_l`; each
   projection's gradient is (pre rate) × (post error) summed over the batch
   (:mod:`neurosim.local_rule`), divided by :math:`\kappa`; the input map uses the analog
   input as its "pre rate".  SGD with momentum, weight decay, step milestones, linear
   warm-up.

Where neurosim differs from the reference code (SPIDE.md section 8), by default:

* gradients include the dropout mask of the projection (``D ⊙ δ``; the code omits it,
  quirk 2) — ``spide_quirks=True`` omits it too;
* weight decay applies to the unscaled gradient, ``lr·(∇ + wd·W)`` (the code's decay on the
  κ-scaled gradient gives an effective ``wd/κ``, quirk 1) — ``spide_quirks=True`` restores it;
* the Frobenius-norm cap ``W = V·min(1, R/‖V‖_F)`` uses the exact norm (the code estimates it
  with 64 random probes, quirk 4); the gradient flows to ``V`` through the cap exactly;
* ``m`` is read off integer spike counts (quirk 13), for LIF too.
"""
import copy
import math
import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from .. import _blas
from .. import _validate as V
from .. import counting, losses
from .. import local_rule as rule
from ..engine import run_backward, run_forward
from ..local_rule import OUTPUT_GATES, output_gate
from ..neurons import NEURON_KINDS
from . import batchnorm as bn
from . import health
from .loss_kinds import LOSS_KINDS

#: the loss names, in the order of :data:`~neurosim.training.loss_kinds.LOSS_KINDS`
LOSSES = tuple(LOSS_KINDS)
_HINT = "lower the learning rate (lr), the loss scale (kappa) or the initial weights"


def _set(obj, name, value):
    object.__setattr__(obj, name, value)      # a frozen dataclass normalising its fields


@dataclass(frozen=True)
class SPIDEConfig:
    """Hyper-parameters of SPIDE training (defaults: SPIDE's MNIST scripts); frozen: a
    resolved run's configuration never changes (:func:`dataclasses.replace` makes a new
    one, e.g. a resumed run's new ``epochs``).

    Parameters
    ----------
    T, T_b : int
        Forward and backward time steps (30, 100).
    kappa : float
        Loss scale κ (100); the learning rate is used as given (see module docstring).
    lr, momentum, weight_decay : float
        SGD (0.1, 0.9, 5e-4).
    epochs, batch_size : int
    milestones : tuple of int
        Epochs after which the learning rate is multiplied by ``gamma``.
    warmup_iters : int
        Linear learning-rate warm-up over this many iterations (0: none).
    loss : {"ce", "spikemax", "spikemax-sliding", "rate-mse"}
    spikemax_mode, spikemax_beta, window : Spikemax options (prob / softmax, temperature,
        sliding window length in steps).
    rate_true, rate_false : targets of the rate MSE.
    output_gate : {"one-sided", "all"}
        Backward gate of a spiking output population (no readout), :func:`output_gate`:
        ``"one-sided"`` (default) passes the loss gradient straight through the clamp only
        in the direction that brings a silent or saturated neuron back into its range;
        ``"all"`` gates every output neuron (pushes silent neurons further down).
    dropout : dict projection -> p
        Variational dropout on the projection's output, fixed across both phases.
    norm_cap : dict projection -> R
        Frobenius-norm cap on (feedback) weights.
    spide_quirks : bool
        Reproduce the reference code's weight decay and mask-free gradients.
    batch_norm : tuple of str
        Input maps whose output is batch-normalised before it becomes the constant input
        current (IDE's ``SNNFC(BN=True)``; :mod:`neurosim.training.batchnorm`): dense maps
        of the input population with a bias.  Empty by default (and then not written by
        :meth:`to_dict`, so run files of models without it are unchanged).
    seed : int
    """

    T: int = 30
    T_b: int = 100
    kappa: float = 100.0
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 10
    batch_size: int = 128
    milestones: tuple = ()
    gamma: float = 0.1
    warmup_iters: int = 0
    loss: str = "ce"
    spikemax_mode: str = "prob"
    spikemax_beta: float = 1.0
    window: int = 10
    rate_true: float = 0.2
    rate_false: float = 0.03
    output_gate: str = "one-sided"
    dropout: dict = field(default_factory=dict)
    norm_cap: dict = field(default_factory=dict)
    spide_quirks: bool = False
    batch_norm: tuple = ()
    seed: int = 0

    def __post_init__(self):
        _set(self, "T", V.check_steps(self.T, "T"))
        _set(self, "T_b", V.check_steps(self.T_b, "T_b"))
        _set(self, "kappa", V.check_real(self.kappa, "kappa", positive=True))
        _set(self, "lr", V.check_real(self.lr, "lr", nonneg=True))
        _set(self, "momentum", V.check_real(self.momentum, "momentum", low=0.0, high=1.0))
        _set(self, "weight_decay", V.check_real(self.weight_decay, "weight_decay", nonneg=True))
        _set(self, "epochs", V.check_int(self.epochs, "epochs", low=0))
        _set(self, "batch_size", V.check_int(self.batch_size, "batch_size", low=1))
        if not isinstance(self.milestones, (list, tuple)):
            raise V.NeurosimTypeError(f"milestones must be a list of epochs such as [20, 27], "
                                      f"got {type(self.milestones).__name__} {self.milestones!r}")
        _set(self, "milestones", tuple(V.check_int(m, "milestone", low=1) for m in self.milestones))
        _set(self, "gamma", V.check_real(self.gamma, "gamma", positive=True))
        _set(self, "warmup_iters", V.check_int(self.warmup_iters, "warmup_iters", low=0))
        V.check_choice(self.loss, "loss", set(LOSS_KINDS))
        V.check_choice(self.output_gate, "output_gate", set(OUTPUT_GATES))
        V.check_choice(self.spikemax_mode, "spikemax_mode", set(losses.SPIKEMAX_MODES))
        _set(self, "window", V.check_int(self.window, "window", low=1))
        _set(self, "spikemax_beta", V.check_real(self.spikemax_beta, "spikemax_beta", positive=True))
        _set(self, "rate_true", V.check_real(self.rate_true, "rate_true", low=0.0, high=1.0))
        _set(self, "rate_false", V.check_real(self.rate_false, "rate_false", low=0.0, high=1.0))
        if not isinstance(self.spide_quirks, (bool, np.bool_)):
            raise V.NeurosimTypeError(f"spide_quirks must be true or false, got "
                                      f"{self.spide_quirks!r}")
        _set(self, "spide_quirks", bool(self.spide_quirks))
        bnl = self.batch_norm
        if not isinstance(bnl, (list, tuple)) or not all(isinstance(k, str) for k in bnl) \
                or len(set(bnl)) != len(bnl):
            raise V.NeurosimTypeError(f"batch_norm must be a list of distinct input-map names "
                                      f"such as [\"F\"], got {bnl!r}")
        _set(self, "batch_norm", tuple(bnl))
        _set(self, "seed", V.check_int(self.seed, "seed", low=0, high=V.SEED_MAX))
        for key in ("dropout", "norm_cap"):
            d = getattr(self, key)
            if not isinstance(d, dict):
                raise V.NeurosimTypeError(f"{key} must be a table projection -> value such as "
                                          f"{{ W1 = 0.2 }}, got {type(d).__name__} {d!r}")
        for k, p in self.dropout.items():
            V.check_real(p, f"dropout[{k!r}]", low=0.0, high=0.99)
        for k, r in self.norm_cap.items():
            V.check_real(r, f"norm_cap[{k!r}]", positive=True)

    def to_dict(self):
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        if self.batch_norm:
            d["batch_norm"] = list(self.batch_norm)
        else:
            del d["batch_norm"]         # run files of models without it stay unchanged
        return d

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise V.NeurosimError(f"unknown training option(s) {unknown}; allowed: {sorted(names)}")
        d = dict(d)
        for k in ("milestones", "batch_norm"):
            if isinstance(d.get(k), list):              # JSON / TOML arrays
                d[k] = tuple(d[k])
        return cls(**d)


class SPIDEModel:
    """A network plus what training needs: which population is input / output, the
    readout (for cross-entropy) and the raw feedback weights under a norm cap.

    Parameters
    ----------
    net : Network
        Must have exactly one ``"input"`` population (analog input).
    classes : int
    output : str, optional
        Output population (default: the last spiking population in schedule order).
    readout : bool
        Linear readout ``C a + c`` on the output rates (cross-entropy); otherwise the
        output population has one neuron per class (Spikemax, rate MSE).
    """

    def __init__(self, net, classes, output=None, readout=True, seed=0):
        self.net = net
        inputs = [p.name for p in net.populations.values() if p.kind == "input"]
        if len(inputs) != 1:
            raise V.NeurosimError(f"SPIDE training needs exactly one 'input' population, found {inputs}")
        self.input = inputs[0]
        order = [n for n in net.schedule() if net.populations[n].spiking]
        self.output = order[-1] if output is None else output
        if self.output not in net.populations or not net.populations[self.output].spiking:
            raise V.NeurosimError(f"output population {self.output!r} is not a spiking population; "
                                  f"spiking: {order}")
        for p in net.spiking_populations:
            if p.neuron.forward_only:
                allowed = sorted(k for k, c in NEURON_KINDS.items() if not c.forward_only)
                raise V.NeurosimError(f"SPIDE training cannot train population {p.name!r} of "
                                      f"model {p.kind!r}; allowed models: {allowed}")
        self.classes = V.check_int(classes, "classes", low=2)
        n_out = net.populations[self.output].n
        self.readout = bool(readout)
        rng = np.random.default_rng(seed)
        if self.readout:
            bound = 1.0 / math.sqrt(n_out)            # PyTorch nn.Linear default
            self.C = rng.uniform(-bound, bound, (self.classes, n_out))
            self.c = rng.uniform(-bound, bound, self.classes)
        else:
            if n_out != self.classes:
                raise V.NeurosimError(f"without a readout the output population must have one neuron "
                                      f"per class ({self.classes}), {self.output!r} has {n_out}")
            self.C = self.c = None
        self.raw = {}          # projection name -> raw weight V under a norm cap
        self.bn = {}           # input map -> batch-norm state (batchnorm.STATE arrays)
        self._folded = None    # inference network with the batch norms folded in (cache)

    # -- parameters --------------------------------------------------------------------
    def parameters(self):
        """name -> array of every trainable array (views into the model)."""
        out = {}
        for name, pr in self.net.projections.items():
            if pr.has_weights:
                out[f"{name}.weight"] = self.raw.get(name, pr.weight)
            if pr.bias is not None:
                out[f"{name}.bias"] = pr.bias
        for name, st in self.bn.items():
            out[f"{name}.bn_gamma"] = st["gamma"]
            out[f"{name}.bn_beta"] = st["beta"]
        if self.readout:
            out["readout.weight"] = self.C
            out["readout.bias"] = self.c
        return out

    def add_batch_norm(self, names):
        """Batch-normalise the input maps ``names`` (fresh states; one-line errors for a
        projection that is not a dense map of the input population with a bias)."""
        for name in names:
            pr = self.net.projections.get(name)
            if pr is None or pr.pre != self.input or pr.kind != "dense" or pr.bias is None:
                what = ("does not exist" if pr is None else
                        f"is a {pr.kind} projection from {pr.pre!r}"
                        + ("" if pr.bias is not None else " without bias"))
                raise V.NeurosimError(
                    f"batch_norm names {name!r}, which {what}; allowed: dense input maps of "
                    f"{self.input!r} with bias = true: "
                    f"{[n for n, p in self.net.projections.items() if p.pre == self.input and p.kind == 'dense' and p.bias is not None]}")
            self.bn[name] = bn.init_state(pr.n_post)
        self._folded = None

    def inference_net(self):
        """The network the test pass simulates: ``net`` itself, or with batch norm a copy
        whose normalised maps have the running statistics folded into their weight and
        bias (:func:`neurosim.training.batchnorm.fold`); cached until the next update."""
        if not self.bn:
            return self.net
        if self._folded is None:
            net = copy.deepcopy(self.net)
            for name, st in self.bn.items():
                pr = net.projections[name]
                w, b = bn.fold(pr.weight, pr.bias, st)
                pr.set_weight(w)
                pr.bias = b
            self._folded = net
        return self._folded

    def apply_norm_cap(self, norm_cap):
        for name, R in norm_cap.items():
            pr = self.net.projections[name]
            V_ = self.raw.setdefault(name, pr.weight.copy())
            pr.weight = V_ * _cap_factor(V_, R)


def build_model(net, cfg, meta, classes):
    """The :class:`SPIDEModel` of ``net`` under ``cfg``: a readout exactly for the
    cross-entropy loss, the output population from the model file's ``[training]`` entries
    ``meta`` (``output``), the norm caps applied to the current weights."""
    readout = LOSS_KINDS[cfg.loss].readout
    model = SPIDEModel(net, classes, output=meta.get("output"), readout=readout, seed=cfg.seed)
    model.add_batch_norm(cfg.batch_norm)
    model.apply_norm_cap(cfg.norm_cap)
    return model


def _cap_factor(V_, R):
    n = float(np.sqrt(np.sum(V_ * V_)))
    return 1.0 if n <= R else R / n


def _cap_grad(V_, R, gW):
    """Gradient with respect to V of W = V min(1, R/‖V‖) given gW (exact)."""
    n = float(np.sqrt(np.sum(V_ * V_)))
    if n <= R:
        return gW
    return (R / n) * (gW - (np.sum(gW * V_) / (n * n)) * V_)


class SGD:
    """SGD with momentum and weight decay (PyTorch semantics), per named parameter."""

    def __init__(self, momentum=0.9, weight_decay=5e-4):
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.buf = {}

    def step(self, params, grads, lr, decay_scale=1.0):
        for name, g in grads.items():
            p = params[name]
            d = g + (self.weight_decay * decay_scale) * p   # PyTorch decays biases too
            if self.momentum:
                b = self.buf.get(name)
                b = d.copy() if b is None else self.momentum * b + d
                self.buf[name] = b
                d = b
            p -= lr * d

    def state(self):
        return {k: v.copy() for k, v in self.buf.items()}

    def load_state(self, st):
        self.buf = {k: np.array(v, np.float64) for k, v in st.items()}


def learning_rate(cfg, epoch, iteration):
    """lr at ``epoch`` (0-based) and global ``iteration``: milestones and warm-up."""
    lr = cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.warmup_iters and iteration < cfg.warmup_iters:
        lr *= (iteration + 1) / cfg.warmup_iters
    return lr


def dropout_masks(model, cfg, B, rng):
    """One Bernoulli(1-p)/(1-p) mask per projection output and sample (fixed for both phases)."""
    masks = {}
    for name, p in cfg.dropout.items():
        if p <= 0:
            continue
        if name not in model.net.projections:
            raise V.NeurosimError(f"dropout given for unknown projection {name!r}; known: "
                                  f"{list(model.net.projections)}")
        n = model.net.projections[name].n_post
        masks[name] = (rng.random((B, n)) >= p) / (1.0 - p)
    return masks


class StepResult:
    """Loss, predictions and op counts of one batch (attributes).

    ``counts`` (phase -> :class:`neurosim.counting.PhaseCounts`) is the one record of the
    step's op counts; the run file's names for them (``fwd_synops``, ...,
    :data:`neurosim.counting.STEP_COUNT_NAMES`) read it."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __getattr__(self, name):
        where = counting.STEP_COUNT_NAMES.get(name)
        counts = self.__dict__.get("counts")
        if where is None or counts is None:
            raise AttributeError(f"StepResult has no attribute {name!r}")
        return getattr(counts[where[0]], where[1])


def output_loss(model, cfg, fwd, y):
    """(loss result, dL/da_out [B, n_out], predictions) of the configured loss (batch mean):
    its :class:`~neurosim.training.loss_kinds.LossKind`'s ``evaluate``."""
    return LOSS_KINDS[cfg.loss].evaluate(model, cfg, fwd, y)


def spide_phases(model, x, y, cfg, rng, *, train=True, record=False, n_threads=None,
                 check=True, engine=None):
    """Everything of one SPIDE step on a batch except the parameter update.

    Forward phase (dropout masks drawn from ``rng``), loss, and with ``train`` the backward
    phase and the local gradients (:func:`local_gradients`, plus the readout's and the norm
    caps' terms).  The model is not changed.  :func:`spide_step` is this plus
    :func:`apply_update`; ``neurosim ops`` recomputes a stored run's step with it
    (:mod:`neurosim.ops.runfile`).

    Parameters
    ----------
    model : SPIDEModel
    x, y : array
        Analog input [B, ...] and labels [B].
    cfg : SPIDEConfig
    rng : numpy Generator
        Draws the dropout masks (unused without ``train``).
    train : bool
        False: forward phase and loss only (evaluation; no dropout).
    record : bool
        Record the spike trains of every population in both phases (the forward phase of a
        ``spikemax-sliding`` loss records its output population anyway).
    check : bool
        Raise :class:`~neurosim.training.health.NumericalError` on the first non-finite
        potential, loss or gradient.
    engine : optional
        Runs the two phases instead of :func:`run_forward` / :func:`run_backward` (its
        ``forward`` / ``backward`` take the same arguments), or, where it has a
        ``phases`` method, the whole of this function (same arguments and result): the
        data-parallel MPI step of :class:`neurosim.training.distributed.ShardedEngine`,
        whose op counts are totals (int64 [1]) and whose ``forward`` is a
        :class:`~neurosim.training.distributed.ShardedForward`.

    Returns
    -------
    StepResult
        ``loss``, ``pred``, ``correct``, ``batch``; the op counts per phase and sample
        (``fwd_synops``, ``fwd_updates``, ``fwd_spikes``, ``encoding_macs``,
        ``bwd_synops_pos``, ``bwd_synops_neg``, ``bwd_updates``, ``bwd_spikes``,
        ``update_macs``, all int64 [B]); ``forward`` and ``backward`` (PhaseResults),
        ``masks`` (dropout masks), ``gate`` (backward gate, None: the default),
        ``grads`` (parameter name -> gradient, None without ``train``), ``update_ops``
        (projection -> weight-update MACs int64 [B]); wall times ``fwd_s``, ``bwd_s``,
        ``update_s`` (so far: the local gradients) and ``wall_s``.
    """
    with _blas.single_threaded():      # BLAS on one thread (neurosim/_blas.py)
        return _spide_phases(model, x, y, cfg, rng, train=train, record=record,
                             n_threads=n_threads, check=check, engine=engine)


def _spide_phases(model, x, y, cfg, rng, *, train, record, n_threads, check, engine):
    if engine is not None and hasattr(engine, "phases"):       # the whole step, sharded
        return engine.phases(model, x, y, cfg, rng, train=train, record=record,
                             n_threads=n_threads, check=check)
    if model.bn and engine is not None:
        raise V.NeurosimError("batch_norm needs the statistics of the whole batch: train it in "
                              "one process (no sharded engine)")
    net = model.net if train else model.inference_net()
    B = x.shape[0]
    t0 = time.perf_counter()
    masks = dropout_masks(model, cfg, B, rng) if train else {}
    rec = True if record else ([model.output] if LOSS_KINDS[cfg.loss].records_output else False)
    bn_cache, norm = {}, None
    if train and model.bn:
        def _normaliser(name):
            def f(z):
                st = model.bn[name]
                c, bn_cache[name] = bn.forward_batch(z, st["gamma"], st["beta"])
                return c
            return f
        norm = {name: _normaliser(name) for name in model.bn}
    fwd = (run_forward if engine is None else engine.forward)(
        net, cfg.T, inputs={model.input: x}, masks=masks, record=rec, n_threads=n_threads,
        **({} if norm is None else {"input_norm": norm}))
    t_fwd = time.perf_counter()
    lres, dlda, pred = output_loss(model, cfg, fwd, y)
    for name in bn_cache:          # batch norm's MACs, counted on the input map's row
        fwd.input_ops[name] = fwd.input_ops[name] + bn.FORWARD_MACS * net.projections[name].n_post
    counts = {"input_encoding": counting.mac_counts(fwd.input_ops or {}, B),
              "forward": counting.phase_counts(fwd), "backward": counting.zero_counts(B),
              "weight_update": counting.zero_counts(B)}
    res = StepResult(loss=lres.loss, pred=pred, correct=int(np.sum(pred == y)), batch=B,
                     counts=counts, forward=fwd, backward=None,
                     masks=masks, gate=None, grads=None, update_ops={}, bn_stats={},
                     fwd_s=t_fwd - t0, bwd_s=0.0, update_s=0.0)
    if not train:
        res.wall_s = time.perf_counter() - t0
        return res
    if check:
        health.check_finite({p.name: fwd.v_final[p.name] for p in net.spiking_populations},
                            "forward-phase potential of population", _HINT)
        health.check_finite({"loss": np.asarray(lres.loss), "dL/da": dlda}, "value", _HINT)
    g = cfg.kappa * dlda
    if not model.readout:
        # spiking output: straight-through gate on the output layer (see output_gate)
        res.gate = {model.output: output_gate(fwd.counts[model.output], g, cfg.T,
                                              cfg.output_gate)}
    t_bwd = time.perf_counter()
    bwd = (run_backward if engine is None else engine.backward)(
        net, fwd, {model.output: g}, cfg.T_b, gate=res.gate, record=bool(record),
        n_threads=n_threads)
    res.backward = bwd
    t_upd = time.perf_counter()
    res.bwd_s = t_upd - t_bwd
    counts["backward"] = counting.phase_counts(bwd)
    grads, res.update_ops = local_gradients(model, cfg, x, fwd, bwd, masks, gate=res.gate,
                                            bn_cache=bn_cache)
    res.bn_stats = {k: (c[2], c[3]) for k, c in bn_cache.items()}
    for name in bn_cache:          # the batch norm's backward, on the map's update row
        res.update_ops[name] = res.update_ops[name] + bn.BACKWARD_MACS * net.projections[name].n_post
    counts["weight_update"] = counting.mac_counts(res.update_ops, B)
    res.grads = finish_grads(model, cfg, grads, lres)
    if check:
        health.check_finite({p.name: bwd.v_final[p.name] for p in net.spiking_populations
                             if p.name in bwd.v_final},
                            "backward-phase potential of population", _HINT)
        health.check_finite(grads, "gradient", _HINT)
    t_end = time.perf_counter()
    res.update_s = t_end - t_upd
    res.wall_s = t_end - t0
    return res


def finish_grads(model, cfg, grads, lres):
    """The local gradients of a step completed: the readout's (from the loss result
    ``lres``) added, and the norm caps' projections applied.  Returns ``grads``."""
    if model.readout:
        grads["readout.weight"] = lres.grad_C
        grads["readout.bias"] = lres.grad_c
    for name, R in cfg.norm_cap.items():
        key = f"{name}.weight"
        grads[key] = _cap_grad(model.raw[name], R, grads[key])
    return grads


def apply_update(model, cfg, grads, lr, opt, *, check=True):
    """The parameter update of a SPIDE step: ``opt`` (:class:`SGD`) applies ``grads`` (from
    :func:`spide_phases`) at learning rate ``lr``, then the norm caps are re-applied.  With
    ``check`` the updated parameters must be finite (in the network's dtype)."""
    decay_scale = 1.0 / cfg.kappa if cfg.spide_quirks else 1.0
    opt.step(model.parameters(), grads, lr, decay_scale)
    model._folded = None
    model.apply_norm_cap(cfg.norm_cap)
    if check:
        health.check_finite(model.parameters(), "updated parameter", _HINT,
                            dtype=model.net.dtype)


def spide_step(model, x, y, cfg, rng, lr, opt, *, train=True, n_threads=None, check=True,
               engine=None):
    """One SPIDE training step on a batch (x [B, ...] analog input, y [B] labels):
    :func:`spide_phases` then, with ``train``, :func:`apply_update`.

    Returns the :class:`StepResult` of :func:`spide_phases` (loss, predictions, op counts
    per phase and per sample: forward / backward synaptic events, neuron updates, spikes,
    input-encoding MACs, weight-update MACs), with wall times ``fwd_s`` (forward phase),
    ``bwd_s`` (backward phase), ``update_s`` (loss bookkeeping, local gradients and the
    optimizer step) and ``wall_s`` (all).

    With ``check`` (default) a training step verifies that potentials, gradients and the
    updated parameters are finite and raises
    :class:`~neurosim.training.health.NumericalError` naming the first that is not
    (:mod:`neurosim.training.health`)."""
    res = spide_phases(model, x, y, cfg, rng, train=train, n_threads=n_threads, check=check,
                       engine=engine)
    if not train:
        return res
    t0 = time.perf_counter()
    apply_update(model, cfg, res.grads, lr, opt, check=check)
    for name, (mu, var) in res.bn_stats.items():      # running statistics (batchnorm)
        bn.update_running(model.bn[name], mu, var, res.batch)
        model._folded = None
    if engine is not None:
        engine.sync(model)              # the other ranks simulate with the new weights
    dt = time.perf_counter() - t0
    res.update_s += dt
    res.wall_s += dt
    return res


def local_gradients(model, cfg, x, fwd, bwd, masks, gate=None, bn_cache=None):
    """The local rule (:func:`neurosim.local_rule.local_gradients`) under ``cfg``:
    gradients (``proj.weight`` / ``proj.bias`` -> array, divided by κ) of every projection
    into a spiking population, and the weight-update MACs per projection (projection ->
    int64 [B]).  ``x`` is the model's input, ``masks`` the dropout masks (left out of the
    gradient with ``spide_quirks``), ``gate`` the backward gate where not the default.

    ``bn_cache`` (input map -> :func:`neurosim.training.batchnorm.forward_batch`'s cache):
    the post error of a batch-normalised map, ``g = D ⊙ δ`` (``δ`` with ``spide_quirks``), is
    taken back through the batch norm (:func:`~neurosim.training.batchnorm.backward`):
    the map's weight and bias are updated with ``dL/dz`` in its place, and the gradients
    ``map.bn_gamma`` / ``map.bn_beta`` (also divided by κ) are added."""
    if not bn_cache:
        return rule.local_gradients(model.net, fwd, bwd, {model.input: x}, masks=masks,
                                    given_gate=gate, masked=not cfg.spide_quirks,
                                    kappa=cfg.kappa)
    net, masked = model.net, not cfg.spide_quirks
    projs = rule.trained_projections(net)
    delta = rule.post_errors(net, fwd, bwd, gate, pops={pr.post for pr in projs})
    given, extra = {}, {}
    for name, (z_hat, r, _, _) in bn_cache.items():
        g = delta[net.projections[name].post]
        if masked and name in masks:
            g = g * masks[name]
        given[name], dgamma, dbeta = bn.backward(g, z_hat, r, model.bn[name]["gamma"])
        extra[f"{name}.bn_gamma"] = dgamma / cfg.kappa
        extra[f"{name}.bn_beta"] = dbeta / cfg.kappa
    grads, ops = rule.local_gradients(net, fwd, bwd, {model.input: x}, masks=masks,
                                      given_gate=gate, masked=masked, kappa=cfg.kappa,
                                      delta=delta, given_post=given)
    grads.update(extra)
    return grads, ops
