r"""How well the spiking backward phase solves SPIDE's linear system (issue 12, item 4).

SPIDE's backward phase (``shared/spec/SPIDE.md`` section 2) approximates the adjoints β of
the linear system

.. math::  \beta_{pre} = g\,[pre = out] + \sum_{q:\,pre \to post}
           \frac{1}{\Theta_{post}} W_q\,(D_q \odot m_{post} \odot \beta_{post})

by ternary spike rates over ``T_b`` steps.  :func:`diagnose` runs one SPIDE step (forward
and backward phase, no update) on a few samples, solves the same system exactly — the same
forward masks m (or the output gate), dropout masks D and loss gradient g — with a sparse
direct solver, and reports per spiking population

* ``bwd_rate_pos`` / ``bwd_rate_neg``: +1 / −1 ternary events per couple per backward step
  (gated couples included, as SPIDE's statistic counts them);
* ``beta_rel_error``: ‖β_spiking − β_exact‖ / ‖β_exact‖ over the samples (0 when both are
  0; ``nan`` when only β_exact is 0);

and per trained projection (weight, or bias if it has no weight)

* ``grad_cosine``: cosine similarity of the spiking weight gradient against the gradient
  the same local rule gives with β_exact (``nan`` when either is all zero).

The exact solve builds the projections' matrices (:func:`projection_matrix`) and one sparse
system per sample; it refuses networks with more than ``max_neurons`` spiking neurons.
"""
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .. import _validate as V
from .. import local_rule as rule
from .spide import local_gradients, output_loss, spide_phases

#: default limit on the spiking neurons of a network for the exact solve.
MAX_NEURONS = 50_000


def projection_matrix(pr):
    """scipy.sparse CSR ``W[n_pre, n_post]`` of a projection (its ``sparse_matrix()``)."""
    return pr.sparse_matrix()


def _check_size(net, max_neurons):
    N = sum(p.n for p in net.spiking_populations)
    if N > max_neurons:
        raise V.NeurosimError(f"diagnose: the exact backward solve needs one sparse {N}×{N} "
                              f"system per sample, above the limit of {max_neurons} spiking "
                              "neurons; use a smaller model or raise max_neurons")
    return N


def exact_beta(model, fwd, g, masks=None, gate=None, max_neurons=MAX_NEURONS):
    """β (population -> [B, n]) solving SPIDE's backward linear system exactly for the
    forward phase ``fwd`` (its masks m, or ``gate`` where given), dropout ``masks`` and
    the output current ``g`` [B, n_out] (κ-scaled)."""
    net = model.net
    pops = [p for p in net.spiking_populations]
    N = _check_size(net, max_neurons)
    masks = masks or {}
    off, o = {}, 0
    for p in pops:
        off[p.name], o = o, o + p.n
    projs = [(q, projection_matrix(q)) for q in net.projections.values()
             if q.pre in off and q.post in off]
    B = g.shape[0]
    beta = {p.name: np.zeros((B, p.n)) for p in pops}
    for b in range(B):
        blocks = []
        for q, W in projs:
            post = net.populations[q.post]
            col = rule.gate(fwd, q.post, gate)[b].astype(np.float64) / post.neuron.subtract
            if q.name in masks:
                col = col * masks[q.name][b]
            Wb = (W @ sp.diags(col)).tocoo()
            blocks.append(sp.coo_matrix((Wb.data, (Wb.row + off[q.pre], Wb.col + off[q.post])),
                                        shape=(N, N)))
        M = sum(blocks, sp.csr_matrix((N, N)))
        rhs = np.zeros(N)
        rhs[off[model.output]:off[model.output] + g.shape[1]] = g[b]
        x = spla.spsolve((sp.identity(N, format="csc") - M).tocsc(), rhs)
        for p in pops:
            beta[p.name][b] = x[off[p.name]:off[p.name] + p.n]
    return beta


class _Rates:
    """A backward PhaseResult stand-in holding given β (for :func:`local_gradients`)."""

    def __init__(self, beta):
        self.beta = beta

    def rates(self, name):
        return self.beta[name]


def _cosine(a, b):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(np.dot(a.ravel(), b.ravel()) / (na * nb)) if na > 0 and nb > 0 else float("nan")


def diagnose(model, cfg, x, y, *, seed=0, max_neurons=MAX_NEURONS, n_threads=None):
    """Backward firing, β error and gradient agreement of SPIDE's spiking backward phase
    on the samples ``x`` [B, ...] (model input layout), ``y`` [B].

    One SPIDE step without update (:func:`~neurosim.training.spide.spide_phases`, dropout
    masks drawn from ``numpy.random.default_rng(seed)``); the model is not changed.

    Returns
    -------
    dict
        ``samples`` (B), ``T_b``; ``populations``: name -> dict(``bwd_rate_pos``,
        ``bwd_rate_neg``, ``beta_rel_error``) in schedule order; ``projections``: name ->
        dict(``grad_cosine``) for every projection into a spiking population that has a
        weight or a bias (the cosine uses the weight when there is one).
    """
    net = model.net
    V.check_int(max_neurons, "max_neurons", low=1)
    _check_size(net, max_neurons)          # refuse before simulating
    res = spide_phases(model, x, y, cfg, np.random.default_rng(seed), train=True,
                       n_threads=n_threads)
    fwd, bwd = res.forward, res.backward
    g = cfg.kappa * output_loss(model, cfg, fwd, y)[1]
    ex = exact_beta(model, fwd, g, res.masks, res.gate, max_neurons=max_neurons)
    grads_ex, _ = local_gradients(model, cfg, x, fwd, _Rates(ex), res.masks, gate=res.gate)
    grads_sp, _ = local_gradients(model, cfg, x, fwd, bwd, res.masks, gate=res.gate)
    out = dict(samples=int(x.shape[0]), T_b=int(cfg.T_b), populations={}, projections={})
    for name in net.schedule():
        p = net.populations[name]
        if not p.spiking:
            continue
        denom = p.n * bwd.steps * x.shape[0]
        diff = np.linalg.norm(bwd.rates(name) - ex[name])
        ref = np.linalg.norm(ex[name])
        err = diff / ref if ref > 0 else (0.0 if diff == 0 else float("nan"))
        out["populations"][name] = dict(
            bwd_rate_pos=float(np.sum(bwd.counts[name])) / denom,
            bwd_rate_neg=float(np.sum(bwd.counts_neg[name])) / denom,
            beta_rel_error=float(err))
    for name, pr in net.projections.items():
        key = f"{name}.weight" if f"{name}.weight" in grads_sp else f"{name}.bias"
        if key in grads_sp:
            out["projections"][name] = dict(grad_cosine=_cosine(grads_sp[key], grads_ex[key]))
    return out


def format_table(d):
    """The per-layer table of a :func:`diagnose` result, as lines of text."""
    lines = [f"backward diagnostics ({d['samples']} samples, T_b = {d['T_b']}):",
             f"  {'population':<16} {'+1/step':>9} {'-1/step':>9} {'β rel. error':>13}"]
    for n, r in d["populations"].items():
        lines.append(f"  {n:<16} {r['bwd_rate_pos']:>9.4f} {r['bwd_rate_neg']:>9.4f} "
                     f"{r['beta_rel_error']:>13.4f}")
    lines.append(f"  {'projection':<16} {'grad cosine vs exact':>21}")
    for n, r in d["projections"].items():
        lines.append(f"  {n:<16} {r['grad_cosine']:>21.4f}")
    return lines
