r"""SPIDE's local learning rule, once: pure functions on the results of a forward and a
backward phase (``shared/spec/SPIDE.md`` sections 2-4).

Used by the trainer (:mod:`neurosim.training.spide`), the backward diagnostics
(:mod:`neurosim.training.diagnose`) and the operation accounting (:mod:`neurosim.ops`); it
sits below all three and imports neither (decisions 51).

* :func:`gate` — the backward gate ``m`` of a population: the gate given for it, else the
  forward mask :math:`m = 1[1 \le N \le T-1]`, exactly what :func:`neurosim.run_backward`
  gates the senders with when no gate is given (one default everywhere);
* :func:`output_gate` — the straight-through gate of a spiking output population
  (Spikemax, rate MSE), a training choice handed to both phases as a given gate;
* :func:`post_errors` — :math:`\delta_l = m_l \odot \beta_l / \Theta_l`;
* :func:`pre_activity` — the pre factor of a projection's update: the analog input of an
  input map (its mean over time when given per step), else the forward rate;
* :func:`projection_grads` — one projection's gradients and multiply-accumulates from a
  pre factor and a post error (:func:`neurosim.kernels.spide.weight_grad`);
* :func:`local_gradients` — every trained projection's gradients and update MACs;
* :func:`update_ops` — the update MACs alone (the ``weight_update`` rows of an op table).

Every arithmetic operation is the one the trainer has always done (float64), except the
order of the sums over a batch, fixed since decisions 58 (blocks of samples in a fixed
tree, independent of the thread count).
"""
import numpy as np

from . import _pool
from . import _validate as V
from .connectivity import chw_to_flat
from .engine import PhaseResult
from .kernels import threads as _th
from .kernels.spide import post_error as _post_error
from .kernels.spide import batch_sum, block_bounds, tree_sum, weight_grad

#: allowed rules of :func:`output_gate`.
OUTPUT_GATES = ("one-sided", "all")


def gate(fwd, name, given=None):
    """The backward gate (bool [B, n]) of population ``name``: ``given[name]`` where
    given, else the forward mask ``fwd.mask(name)`` (:func:`neurosim.run_backward`'s
    default)."""
    g = (given or {}).get(name)
    return fwd.mask(name) if g is None else np.asarray(g, bool)


def output_gate(counts, g, T, rule="one-sided"):
    """Backward gate (bool [B, K]) of a spiking output population (Spikemax, rate MSE).

    SPIDE's m = 1[1 <= N <= T-1] would leave a silent output neuron (m = 0) unable ever to
    be pushed to fire, so an all-silent output could never learn; the gate replaces the
    clamp's derivative by a straight-through estimate.  ``rule``:

    ``"one-sided"``
        m, plus silent neurons (N = 0) whose injected current g is negative (the loss asks
        for more spikes) and saturated neurons (N = T) whose g is positive (fewer spikes).
        A gradient that would drive a neuron further outside its range is dropped: it
        cannot change the output, but it keeps lowering the weights into a silent neuron
        (Spikemax gives every wrong class g = κ/S > 0, silent or not) and, through the
        shared hidden layer, silences the whole output layer (``docs/losses.md``,
        "Choosing a loss for a spiking output").
    ``"all"``
        every neuron (the first straight-through rule: m = 1).
    """
    if rule == "all":
        return np.ones(np.shape(counts), dtype=bool)
    c = np.asarray(counts)
    return ((c >= 1) & (c <= T - 1)) | ((c == 0) & (g < 0)) | ((c == T) & (g > 0))


def _columns(res, name, neg=False):
    """(C-contiguous [B, N] array, first column) holding ``res.counts[name]``
    (``counts_neg`` with ``neg``): the engine's own array where the result keeps it,
    else a contiguous copy and 0."""
    full = getattr(res, "counts_neg_all" if neg else "counts_all", None)
    prog = getattr(res, "program", None)
    if full is not None and prog is not None and name in prog.pop_names and \
            full.flags.c_contiguous:
        return full, int(prog.arrays.pop_off[prog.pop_names.index(name)])
    return np.ascontiguousarray((res.counts_neg if neg else res.counts)[name]), 0


def post_errors(net, fwd, bwd, given_gate=None, pops=None):
    """δ_l = m_l ⊙ β_l / Θ_l per spiking population of ``net`` (κ-scaled, [B, n]).

    ``m`` is :func:`gate` (``given_gate`` where given, else the forward mask).  ``pops``:
    the populations to compute (default: every spiking one).

    β = Θ_b (n₊ − n₋) / T_b, then (m · β) / Θ, every operation in float64: for a backward
    phase without leak one pass of :func:`neurosim.kernels.spide.post_error` per
    population on the engine's threads (the numpy expression, operation by operation);
    with a leaky backward (weighted counts), or for stand-ins that are not
    PhaseResults (``rates`` / ``mask`` only), the numpy expression itself."""
    out = {}
    given_gate = given_gate or {}
    names = None if pops is None else set(pops)
    nth = _th.get_threads()
    for p in net.spiking_populations:
        if names is not None and p.name not in names:
            continue
        g = given_gate.get(p.name)
        if isinstance(fwd, PhaseResult) and isinstance(bwd, PhaseResult) and \
                bwd.weighted_counts.get(p.name) is None:
            (cpos, c0), (cneg, c1), (cf, f0) = (_columns(bwd, p.name),
                                                 _columns(bwd, p.name, neg=True),
                                                 _columns(fwd, p.name))
            gm = (np.zeros((1, 1), np.uint8) if g is None
                  else np.ascontiguousarray(np.asarray(g) != 0).view(np.uint8))
            mode = 1 if g is not None else 0
            d = np.empty(bwd.counts[p.name].shape, np.float64)
            args = (cpos, cneg, cf, c0, c1, f0, gm, mode, int(fwd.steps),
                    float(p.ternary.subtract), float(bwd.steps), float(p.neuron.subtract))
            _pool.run_chunks(lambda c, b0, b1: _post_error(*args, b0, b1, d), d.shape[0], nth, nth)
            out[p.name] = d
            continue
        d = gate(fwd, p.name, given_gate) * bwd.rates(p.name)   # (m · β) / Θ, the division
        d /= p.neuron.subtract          # in place: same rounding (rates() may hand back
        out[p.name] = d                 # an array it keeps, so never in place on it)
    return out


def flat_input(x, pop):
    """``x`` as population ``pop`` takes it: images [..., C, H, W] of a 3-D population in
    neurosim's channel-last flat order, anything else unchanged."""
    x = np.asarray(x)
    if len(pop.shape) == 3 and x.ndim >= 4 and x.shape[-3:] == tuple(pop.shape):
        x = chw_to_flat(x)
    return x


def pre_activity(net, fwd, pr, inputs=None):
    """SPIDE's pre factor of projection ``pr``'s update (float64 [B, n_pre]): the analog
    input of an input map (``inputs[pre]``, images in channel-last order, its mean over
    time when given per step [B, T, n]), else the forward rate."""
    pre = net.populations[pr.pre]
    if pre.kind == "input":
        if inputs is None or pr.pre not in inputs:
            raise V.NeurosimError(f"the update of input map {pr.name!r} needs the input values "
                                  f"of population {pr.pre!r}")
        x = np.asarray(flat_input(inputs[pr.pre], pre), np.float64)
        return x.mean(1) if x.ndim == 3 else x
    if pre.kind == "source":
        return fwd.counts[pr.pre] / fwd.steps
    return fwd.rates(pr.pre)


def projection_grads(pr, a_pre, d_post):
    """Gradients of projection ``pr`` (dict ``"weight"`` / ``"bias"`` -> array, in the
    user-facing layout, summed over the batch) and the multiply-accumulates per sample
    (int64 [B]).

    * weight: ``Σ_b a_pre[b] ⊗ d_post[b]`` mapped through the projection's connectivity
      (dense outer product, per CSR synapse, or a conv weight gradient summed over
      positions); only nonzero pre factors are visited
      (:func:`neurosim.kernels.spide.weight_grad`), and a MAC is counted where both
      factors are nonzero;
    * bias: ``Σ_b d_post[b]`` (conv: also summed over positions, per output channel), one
      MAC per nonzero post error.

    Both sums over the batch are taken over fixed blocks of samples combined in a fixed
    tree (:func:`neurosim.kernels.spide.block_bounds`, ``tree_sum``): the same bits for
    any number of threads (docs/decisions.md, 58).  :func:`projection_parts` and
    :func:`projection_finish` are its two halves (block rows; from their sums to the
    user layout), which a rank of a sharded batch runs apart."""
    parts, ops = projection_parts(pr, a_pre, d_post, None)
    sums = {}
    for k, p in parts.items():
        s = np.empty(p.shape[1], np.float64)
        tree_sum(p, s)
        sums[k] = s
    return projection_finish(pr, sums), ops


def projection_parts(pr, a_pre, d_post, bounds):
    """The block rows of projection ``pr``'s gradients: dict ``"weight"`` / ``"bias"`` ->
    float64 [n_blocks, size] (row ``k`` the sum over the samples ``bounds[k] ..
    bounds[k+1] - 1``, in the kernel layout), and the MACs per sample (int64 [B]).
    ``bounds`` (int64, increasing from 0 to B): :func:`neurosim.kernels.spide.block_bounds`
    of the batch (None: that), or of a shard of whole blocks (decisions 58, 62)."""
    a = V.check_array(a_pre, "pre rates", shape=(None, pr.n_pre), dtype=np.float64)
    d = V.check_array(d_post, "post errors", shape=(a.shape[0], pr.n_post), dtype=np.float64)
    B = a.shape[0]
    out = {}
    ops = np.zeros(B, np.int64)
    bounds = block_bounds(B) if bounds is None else np.ascontiguousarray(bounds, np.int64)
    if pr.has_weights:
        k, w, ip, ix, geo, tab = pr.kernel_layout(backward=False)
        parts = np.empty((bounds.size - 1, w.size), np.float64)
        weight_grad(k, geo, tab, ip, ix.astype(np.uint32), a, d, bounds, parts, ops)
        out["weight"] = parts
    if pr.bias is not None:
        parts = np.empty((bounds.size - 1, pr.n_post), np.float64)
        batch_sum(d, bounds, parts)
        out["bias"] = parts
        ops += np.count_nonzero(d, axis=1)
    return out, ops


def projection_finish(pr, sums):
    """Projection ``pr``'s gradients in the user layout from the batch sums of its block
    rows (``sums``: ``"weight"`` / ``"bias"`` -> float64 [size], the :func:`tree_sum` of
    :func:`projection_parts`)."""
    out = {}
    if "weight" in sums:
        out.update(pr.grad_to_user(sums["weight"]))
    if "bias" in sums:
        s = sums["bias"]
        out["bias"] = s.reshape(-1, pr.post_shape[0]).sum(0) if len(pr.post_shape) == 3 else s
    return out


def trained_projections(net):
    """The projections the rule updates (a weight or a bias), in declaration order."""
    return [pr for pr in net.projections.values() if pr.has_weights or pr.bias is not None]


def local_gradients(net, fwd, bwd, inputs, *, masks=None, given_gate=None, masked=True,
                    kappa=1.0, delta=None, given_post=None):
    """Gradients of every trained projection and their update MACs.

    Parameters
    ----------
    net : Network
    fwd, bwd : PhaseResult (or stand-ins with ``rates`` / ``mask`` / ``counts``)
    inputs : dict
        Analog input per input population (for input maps, :func:`pre_activity`).
    masks : dict projection -> [B, n_post], optional
        Dropout masks; with ``masked`` the post error of a masked projection is
        multiplied by its mask (``D ⊙ δ``; ``spide_quirks`` training passes False).
    given_gate : dict, optional
        The backward gate where not the default (:func:`gate`).
    kappa : float
        The loss scale the gradients are divided by (post errors are κ-scaled).
    delta : dict, optional
        Post errors to use instead of :func:`post_errors` (projections into a population
        without one are skipped).
    given_post : dict projection -> [B, n_post], optional
        The post factor of the named projections' updates as given (no mask applied):
        a batch-normalised input map's ``dL/dz`` (:mod:`neurosim.training.batchnorm`).

    Returns
    -------
    (grads, ops)
        ``grads``: ``"proj.weight"`` / ``"proj.bias"`` -> array; ``ops``: projection ->
        int64 [B] update MACs.

    :func:`local_parts` and :func:`local_finish` are its two halves (a sharded batch,
    :mod:`neurosim.training.distributed`)."""
    parts, ops = local_parts(net, fwd, bwd, inputs, None, masks=masks,
                             given_gate=given_gate, masked=masked, delta=delta,
                             given_post=given_post)
    sums = {}
    for key, p in parts.items():
        s = np.empty(p.shape[1], np.float64)
        tree_sum(p, s)
        sums[key] = s
    return local_finish(net, sums, kappa), ops


def local_parts(net, fwd, bwd, inputs, bounds, *, masks=None, given_gate=None, masked=True,
                delta=None, given_post=None):
    """The block rows of every trained projection's gradients (``"proj.weight"`` /
    ``"proj.bias"`` -> float64 [n_blocks, size], :func:`projection_parts` over the blocks
    ``bounds`` of the samples given, None: :func:`~neurosim.kernels.spide.block_bounds` of
    them) and the update MACs (projection -> int64 [B]);
    arguments as :func:`local_gradients`."""
    projs = trained_projections(net)
    if delta is None:
        delta = post_errors(net, fwd, bwd, given_gate, pops={pr.post for pr in projs})
    masks, given_post = masks or {}, given_post or {}
    parts, ops = {}, {}
    for pr in projs:
        if pr.name in given_post:
            d = np.ascontiguousarray(given_post[pr.name], np.float64)
        elif pr.post not in delta:
            continue
        else:
            d = delta[pr.post]
            if masked and pr.name in masks:
                d = d * masks[pr.name]
        p, o = projection_parts(pr, pre_activity(net, fwd, pr, inputs), d, bounds)
        ops[pr.name] = o
        for k, v in p.items():
            parts[f"{pr.name}.{k}"] = v
    return parts, ops


def local_finish(net, sums, kappa=1.0):
    """Gradients (``"proj.weight"`` / ``"proj.bias"`` -> array, user layout, divided by
    ``kappa``) from the batch sums of :func:`local_parts`'s rows (same keys)."""
    grads = {}
    for pr in trained_projections(net):
        mine = {k: sums[f"{pr.name}.{k}"] for k in ("weight", "bias") if f"{pr.name}.{k}" in sums}
        if not mine:
            continue
        for k, v in projection_finish(pr, mine).items():
            grads[f"{pr.name}.{k}"] = v / kappa
    return grads


def update_ops(fwd, bwd, *, inputs=None, delta=None, gate=None, masked=True):
    """Weight-update MACs of SPIDE's local rule per projection and sample (dict
    projection -> int64 [B]) for the phases ``fwd`` / ``bwd`` of a network: the MACs of
    :func:`local_gradients` with the forward phase's dropout masks."""
    return local_gradients(fwd.network, fwd, bwd, inputs, masks=fwd.masks,
                           given_gate=gate, masked=masked, delta=delta)[1]
