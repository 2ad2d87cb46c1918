"""Data-parallel SPIDE training over MPI (``mpirun -n P neurosim train --distributed mpi``;
optional extra ``neurosim-events[mpi]``).

Rank 0 runs the ordinary training loop (:func:`neurosim.training.trainer.train`): batch
order, dropout masks, optimizer, learning-rate schedule, checkpoints, resume, signals and
reports are exactly those of one process.  Every batch is cut along the fixed sample
blocks of :func:`neurosim.kernels.spide.block_bounds` of the *whole* batch
(:func:`shard_blocks`: rank ``r`` owns blocks ``ceil(r n / P) .. ceil((r+1) n / P) - 1``;
with more ranks than blocks the last ranks own none).  Rank 0 sends each rank its input
and dropout-mask slices and the labels; then every rank (:func:`shard_step`):

1. simulates its shard's forward phase;
2. all-gathers the output population's rates and counts (B x n_out numbers, the loss's
   per-sample inputs) and computes the loss of the whole batch, its gradient and the
   readout's gradients with the one-process code on the same numbers (same bits on
   every rank);
3. simulates its shard's backward phase with its slice of the backward current;
4. computes the block rows of every weight and bias gradient of its blocks
   (:func:`neurosim.local_rule.local_parts`) and pre-adds each aligned subtree of the
   fixed pairwise tree that it owns whole (:func:`subtree_nodes`);
5. sends rank 0, in one gather, those subtree sums (about one gradient per rank) and the
   int64 totals of its op counts and activity.

Rank 0 finishes the tree in its fixed order (:func:`finish_tree`), which gives the bits of
one process's :func:`~neurosim.kernels.spide.tree_sum` for any P and any thread count
(``docs/decisions.md`` 58 and 62), applies the update and sends the new weights.  No
per-sample result of the phases travels; the op counts of a sharded step are totals
(int64 [1] per count instead of [B]).  The test pass is sharded the same way (forward
phase, loss on the gathered outputs, op totals).

The other ranks never touch the run file, the data or the random generator; they ignore
SIGINT / SIGTERM (rank 0 stops after the batch, checkpoints and tells them to exit).
:class:`SerialComm` stands in for an MPI communicator of size 1 (tests, no mpi4py).
"""
import signal
import time

import numpy as np

from .. import _blas, counting
from .. import _validate as V
from ..engine import run_backward, run_forward
from ..kernels.spide import block_bounds, tree_sum
from ..local_rule import local_finish, local_parts, output_gate
from . import health
from .loss_kinds import LOSS_KINDS
from .spide import finish_grads

EXTRA_HINT = "pip install 'neurosim-events[mpi]'  (or: pip install mpi4py mpich)"


class DistributedError(V.NeurosimError):
    """Distributed training cannot start (mpi4py missing, bad launch)."""


def mpi_comm():
    """``MPI.COMM_WORLD``, or :class:`DistributedError` naming the extra to install."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise DistributedError(f"--distributed mpi needs mpi4py and an MPI library, which are "
                               f"not installed ({e}); install the extra: {EXTRA_HINT}") from None
    return MPI.COMM_WORLD


def available():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


class SerialComm:
    """Stands in for an mpi4py communicator of one process (no messages are sent)."""
    rank, size = 0, 1


#: message tags: rank 0 -> others (commands); the outputs' all-gather (13 up, 14 down);
#: the gradient gather (15).
TAG_CMD, TAG_OUT, TAG_GRAD = 11, 13, 15
#: seconds an idle rank sleeps between polls for a message.  MPI's blocking receives
#: busy-wait; on an oversubscribed machine (more ranks than free cores) the spinning rank
#: would take the core from the one that computes.
POLL_S = 2e-4


def _recv(comm, source, tag):
    while not comm.Iprobe(source=source, tag=tag):
        time.sleep(POLL_S)
    return comm.recv(source=source, tag=tag)


def _send(comm, obj, dest, tag):
    """Send ``obj`` (pickled) without spinning in MPI: poll the request and sleep."""
    req = comm.isend(obj, dest=dest, tag=tag)
    while not req.test()[0]:
        time.sleep(POLL_S)


def _nbytes(obj):
    """The bytes of the numpy arrays in ``obj`` (nested lists, tuples, dicts): what a
    message carries, less pickling overhead."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def gather0(comm, obj, tag):
    """Rank 0: ``[obj of rank 0, obj of rank 1, ...]``; other ranks: send and None."""
    if comm.size == 1:
        return [obj]
    if comm.rank != 0:
        _send(comm, obj, 0, tag)
        return None
    return [obj] + [_recv(comm, r, tag) for r in range(1, comm.size)]


def allgather(comm, obj, tag):
    """Every rank: the list of every rank's ``obj`` in rank order (through rank 0)."""
    if comm.size == 1:
        return [obj]
    parts = gather0(comm, obj, tag)
    if comm.rank == 0:
        reqs = [comm.isend(parts, dest=r, tag=tag + 1) for r in range(1, comm.size)]
        for q in reqs:
            while not q.test()[0]:
                time.sleep(POLL_S)
        return parts
    return _recv(comm, 0, tag + 1)


def shard_blocks(n, P):
    """``[(k0, k1)]`` per rank: the blocks ``k0 .. k1-1`` of the ``n`` blocks of a batch
    (:func:`~neurosim.kernels.spide.block_bounds`) that rank ``r`` owns,
    ``k0 = ceil(r n / P)``; contiguous, in rank order, sizes differ by at most one; with
    ``n < P`` rank ``r < n`` owns block ``r`` and the last ranks none."""
    e = [(r * n + P - 1) // P if n >= P else min(r, n) for r in range(P + 1)]
    return list(zip(e[:-1], e[1:]))


def shard_bounds(B, P):
    """``[(lo, hi)]``: the samples ``lo .. hi-1`` of a batch of ``B`` that each of P ranks
    simulates (whole blocks, :func:`shard_blocks`)."""
    gb = block_bounds(B)
    return [(int(gb[k0]), int(gb[k1])) for k0, k1 in shard_blocks(gb.size - 1, P)]


def subtree_nodes(k0, k1, n):
    """The aligned nodes ``(k, size)`` of the fixed pairwise tree over ``n`` rows
    (:func:`~neurosim.kernels.spide.tree_sum`) that cover rows ``k0 .. k1-1``, largest
    first: ``k`` a multiple of ``size`` (a power of two), the node the rows
    ``k .. min(k + size, n) - 1``.  ``tree_sum`` of a node's rows gives the value row
    ``k`` holds after the tree's levels below ``size``."""
    top = 1
    while top < n:
        top *= 2
    out, k = [], k0
    while k < k1:
        size = top
        while size > 1 and (k % size or min(k + size, n) > k1):
            size //= 2
        out.append((k, size))
        k = min(k + size, n)
    return out


def finish_tree(nodes, n):
    """The sum of ``n`` rows from node values ``{k: (size, row)}`` that cover them
    (:func:`subtree_nodes` of every rank): the levels of
    :func:`~neurosim.kernels.spide.tree_sum` above the nodes, in its order (row ``k`` +=
    row ``k + s``, float64, in place): the bits of ``tree_sum`` of all ``n`` rows."""
    rows = {k: r for k, (size, r) in nodes.items()}
    have = {k: size for k, (size, r) in nodes.items()}
    s = 1
    while s < n:
        for k in range(0, n - s, 2 * s):
            if have.get(k, 2 * s) >= 2 * s:     # inside a node, or a node of 2s or more
                continue
            rows[k] += rows[k + s]
            have[k] = 2 * s
        s *= 2
    return rows[0]


class _Outputs:
    """The output population of a whole batch, gathered from the shards: what
    :func:`~neurosim.training.spide.output_loss` reads of a forward phase."""

    def __init__(self, name, parts):
        parts = [p for p in parts if p is not None]
        self._rates = {name: np.concatenate([p[0] for p in parts])}
        self.counts = {name: np.concatenate([p[1] for p in parts])}
        self.spikes = {name: (None if parts[0][2] is None
                              else np.concatenate([p[2] for p in parts]))}

    def rates(self, name):
        return self._rates[name]


class ShardedForward:
    """What a sharded step keeps of its forward phase on rank 0: the activity totals
    (population -> (saturated (sample, neuron) pairs, all pairs)) for
    :class:`~neurosim.training.health.ActivityMonitor`, and ``batch``."""

    def __init__(self, batch, activity):
        self.batch, self.activity = batch, activity


def _error(e):
    if isinstance(e, health.NumericalError):
        return ("numerical", e.detail, e.what, e.name, e.hint)
    return ("error", f"{type(e).__name__}: {e}")


def _raise_first(errors):
    for r, err in enumerate(errors):
        if err is None:
            continue
        if err[0] == "numerical":
            raise health.NumericalError(err[1], what=err[2], name=err[3], hint=err[4])
        raise RuntimeError(f"rank {r} failed on its shard: {err[1]}")


def _totals(pc):
    """A PhaseCounts' fields summed over its samples (int64 [5])."""
    return np.array([int(np.sum(f)) for f in pc], np.int64)


def shard_step(comm, model, cfg, cmd, timing=None):
    """One sharded SPIDE step (or test-pass batch) on this rank (every rank runs it with
    its command, :class:`ShardedEngine`): forward phase, loss of the whole batch from the
    gathered outputs, backward phase, block rows of the gradients pre-added over this
    rank's subtrees, gathered on rank 0.  Returns the :class:`StepResult` on rank 0,
    None on the others.  Errors are raised on every rank that learns of them (a shard's
    error on rank 0 after the gather)."""
    from .spide import StepResult, output_loss, _HINT
    tm = timing if timing is not None else {}
    net, out = model.net, model.output
    x, y, masks, lo, hi, B = cmd["x"], cmd["y"], cmd["masks"], cmd["lo"], cmd["hi"], cmd["B"]
    train, n_threads, check = cmd["train"], cmd["n_threads"], cmd["check"]
    sliding = LOSS_KINDS[cfg.loss].records_output
    t0 = time.perf_counter()
    fwd, err, mine = None, None, None
    try:
        if hi > lo:
            fwd = run_forward(net, cfg.T, inputs={model.input: x}, masks=masks,
                              record=[out] if sliding else False, n_threads=n_threads)
            mine = (fwd.rates(out), fwd.counts[out], fwd.spikes[out] if sliding else None)
            if check and train:
                health.check_finite({p.name: fwd.v_final[p.name] for p in net.spiking_populations},
                                    "forward-phase potential of population", _HINT)
    except Exception as e:           # every rank must reach the gather
        err = _error(e)
    t1 = time.perf_counter()
    allv = allgather(comm, (mine, err), TAG_OUT)
    t2 = time.perf_counter()
    _raise_first([v[1] for v in allv])
    lres, dlda, pred = output_loss(model, cfg, _Outputs(out, [v[0] for v in allv]), y)
    # bytes this rank sends: the others their output rows (and below their gradient
    # payload); rank 0 everyone's output rows to each other rank
    sent = (_nbytes([v[0] for v in allv]) * (comm.size - 1) if comm.rank == 0 else
            _nbytes(mine))
    counts = {}
    activity = {}
    if fwd is not None:
        counts["input_encoding"] = _totals(counting.mac_counts(fwd.input_ops or {}, hi - lo))
        counts["forward"] = _totals(counting.phase_counts(fwd))
        for p in net.spiking_populations:
            c = fwd.counts[p.name]
            activity[p.name] = (int(np.count_nonzero(c >= cfg.T)), int(c.size))
    payload = dict(counts=counts, activity=activity, nodes={}, err=None)
    tb = tg = t2
    gate = None
    if train and err is None:
        try:
            if check:
                health.check_finite({"loss": np.asarray(lres.loss), "dL/da": dlda}, "value", _HINT)
            g = cfg.kappa * dlda
            if not model.readout:
                gate = {out: output_gate(np.concatenate([v[0][1] for v in allv if v[0] is not None]),
                                         g, cfg.T, cfg.output_gate)}
            if fwd is not None:
                bwd = run_backward(net, fwd, {out: g[lo:hi]}, cfg.T_b,
                                   gate=None if gate is None else {out: gate[out][lo:hi]},
                                   n_threads=n_threads)
                tb = time.perf_counter()
                counts["backward"] = _totals(counting.phase_counts(bwd))
                if check:
                    health.check_finite({p.name: bwd.v_final[p.name] for p in net.spiking_populations
                                         if p.name in bwd.v_final},
                                        "backward-phase potential of population", _HINT)
                parts, ops = local_parts(net, fwd, bwd, {model.input: x}, cmd["bounds"],
                                         masks=masks,
                                         given_gate=None if gate is None else {out: gate[out][lo:hi]},
                                         masked=not cfg.spide_quirks)
                counts["weight_update"] = _totals(counting.mac_counts(ops, hi - lo))
                nodes = subtree_nodes(cmd["k0"], cmd["k1"], cmd["n"])
                for key, p in parts.items():
                    vals = []
                    for k, size in nodes:
                        a, b = k - cmd["k0"], min(k + size, cmd["n"]) - cmd["k0"]
                        row = np.empty(p.shape[1], np.float64)
                        tree_sum(p[a:b], row)
                        vals.append((k, size, row))
                    payload["nodes"][key] = vals
                tg = time.perf_counter()
        except health.NumericalError as e:
            payload["err"] = _error(e)
        except Exception as e:
            payload["err"] = _error(e)
    if comm.rank != 0:
        sent += _nbytes(payload)
    payload["sent"] = sent
    allp = gather0(comm, payload, TAG_GRAD)
    t3 = time.perf_counter()
    if allp is None:
        return None
    _raise_first([p["err"] for p in allp])
    res = StepResult(loss=lres.loss, pred=pred, correct=int(np.sum(pred == y)), batch=B,
                     masks=None, gate=gate, grads=None, update_ops={}, bn_stats={},
                     fwd_s=t1 - t0, bwd_s=tb - t2, update_s=0.0, forward=None, backward=None)
    res.counts = {}
    for ph in ("input_encoding", "forward") + (("backward", "weight_update") if train else ()):
        tot = sum((p["counts"].get(ph, np.zeros(5, np.int64)) for p in allp),
                  np.zeros(5, np.int64))
        res.counts[ph] = counting.PhaseCounts(*(tot[i:i + 1] for i in range(5)))
    act = {p.name: (sum(q["activity"].get(p.name, (0, 0))[0] for q in allp),
                    sum(q["activity"].get(p.name, (0, 0))[1] for q in allp))
           for p in net.spiking_populations}
    res.forward = ShardedForward(B, act)
    res.sent = [p["sent"] for p in allp]
    if train:
        n = cmd["n"]
        sums = {}
        for key in allp[0]["nodes"] if allp[0]["nodes"] else ():
            nodes = {k: (size, row) for p in allp for k, size, row in p["nodes"].get(key, ())}
            sums[key] = finish_tree(nodes, n)
        grads = local_finish(net, sums, cfg.kappa)
        res.grads = finish_grads(model, cfg, grads, lres)
        if check:
            health.check_finite(grads, "gradient", _HINT)
    t4 = time.perf_counter()
    res.update_s = t4 - tb
    res.wall_s = t4 - t0
    for k, v in (("forward", t1 - t0), ("gather_outputs", t2 - t1), ("backward", tb - t2),
                 ("gradients", tg - tb), ("reduce", t4 - tg)):
        tm[k] = tm.get(k, 0.0) + v
    return res


def _set_weights(model, weights):
    net = model.net
    for name, (w, b) in weights.items():
        if name == "readout":
            model.C, model.c = w, b
            continue
        pr = net.projections[name]
        if w is not None:
            pr.weight = w
        if b is not None:
            pr.bias = b


class ShardedEngine:
    """The engine of :func:`~neurosim.training.spide.spide_phases` on rank 0 (``start``,
    ``phases``, ``sync``, ``stop``), and :meth:`serve` on the other ranks.

    ``timing`` (rank 0) accumulates seconds per part of a step (forward, gather_outputs,
    backward, gradients, reduce, update); ``sent`` the bytes each rank sent per step
    (its last step; rank 0 adds the commands and the weights it sends)."""

    def __init__(self, comm):
        self.comm = comm
        self.rank, self.size = comm.rank, comm.size
        self.timing = {}
        self.sent = None

    # -- rank 0 ----------------------------------------------------------------------------
    def _send_all(self, msgs):
        n = 0
        for r in range(1, self.size):
            m = msgs[r] if isinstance(msgs, list) else msgs
            n += _nbytes(m)
            self.comm.send(m, dest=r, tag=TAG_CMD)
        return n

    def start(self, model):
        """Send the model (network and readout) to the other ranks (rank 0, before the
        first batch)."""
        self._send_all(("model", model))

    def phases(self, model, x, y, cfg, rng, *, train=True, record=False, n_threads=None,
               check=True):
        """:func:`~neurosim.training.spide.spide_phases` of a batch, sharded."""
        if record:
            raise DistributedError("a sharded step does not record spike trains")
        from .spide import dropout_masks
        B = x.shape[0]
        masks = dropout_masks(model, cfg, B, rng) if train else {}
        gb = block_bounds(B)
        n = gb.size - 1
        cmds = []
        for k0, k1 in shard_blocks(n, self.size):
            lo, hi = int(gb[k0]), int(gb[k1])
            cmds.append(dict(x=x[lo:hi], y=y, masks={k: v[lo:hi] for k, v in masks.items()},
                             lo=lo, hi=hi, k0=k0, k1=k1, n=n, B=B, bounds=gb[k0:k1 + 1] - lo,
                             train=train, n_threads=n_threads, check=check, cfg=cfg))
        t0 = time.perf_counter()
        cmd_bytes = self._send_all([("step", c) for c in cmds])
        self.timing["commands"] = self.timing.get("commands", 0.0) + time.perf_counter() - t0
        res = shard_step(self.comm, model, cfg, cmds[0], self.timing)
        res.masks = masks
        res.sent[0] += cmd_bytes
        self.sent = res.sent
        return res

    def sync(self, model):
        """Send the updated weights, biases and readout (after every parameter update)."""
        net = model.net
        w = {n: (pr.weight if pr.has_weights else None, pr.bias)
             for n, pr in net.projections.items() if pr.has_weights or pr.bias is not None}
        if model.readout:
            w["readout"] = (model.C, model.c)
        t0 = time.perf_counter()
        n = self._send_all(("weights", w))
        self.timing["update_send"] = self.timing.get("update_send", 0.0) + time.perf_counter() - t0
        if self.sent is not None:
            self.sent[0] += n

    def stop(self):
        """Tell the other ranks to exit (rank 0, at the end, also after an error)."""
        self._send_all(("stop",))

    # -- other ranks -----------------------------------------------------------------------
    def serve(self):
        """Run this rank's shard of every step until rank 0 says stop (ranks > 0)."""
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)      # rank 0 decides when to stop
        model = None
        while True:
            msg = _recv(self.comm, 0, TAG_CMD)
            if msg[0] == "stop":
                return
            if msg[0] == "model":
                model = msg[1]
            elif msg[0] == "weights":
                _set_weights(model, msg[1])
            elif msg[0] == "step":
                try:
                    with _blas.single_threaded():      # as spide_phases on rank 0
                        shard_step(self.comm, model, msg[1]["cfg"], msg[1])
                except Exception:        # rank 0 learns of it from the gathers and stops
                    pass
