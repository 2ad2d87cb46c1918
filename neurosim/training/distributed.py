"""Data-parallel SPIDE training over MPI (``mpirun -n P neurosim train --distributed mpi``;
optional extra ``neurosim[mpi]``).

Rank 0 runs the ordinary training loop (:func:`neurosim.training.trainer.train`): batch
order, dropout masks, loss, gradients, optimizer, learning-rate schedule, checkpoints,
resume, signals and reports are exactly those of one process.  What is distributed is
the expensive part, the two event-driven phases: every batch is cut into P contiguous
shards (rank r simulates samples ``ceil(r*B/P)`` to ``ceil((r+1)*B/P)``, with its slice of the
masks drawn for the whole batch), and each rank simulates its shard's forward phase and,
once rank 0 has computed the loss of the whole batch, its backward phase.  The per-sample
results (spike counts, potentials, per-sender event counts) are gathered to rank 0 in
rank order and put back together as the result of the whole batch, from which rank 0
computes the float64 gradients with the same code, in the same summation order, as one
process; the updated weights are then broadcast to the other ranks.

Why gather per-sample results rather than sum per-shard gradients: every quantity that
couples the samples of a batch (the batch-mean loss, ``Σ_batch`` of the weight, bias and
readout gradients, whose order of float additions would change with the shards) is then
computed once, on the whole batch, and the run is **bit-identical to one process** for
any P (with the same Numba thread count on rank 0 as in the one-process run: the weight
gradient's chunking follows the thread count).  The cost: the local gradients and the
update run on rank 0 alone (a few per cent of a step; ``docs/distributed.md``), and the
gathered arrays are O(batch x neurons) per phase.

The other ranks never touch the run file, the data or the random generator; they ignore
SIGINT / SIGTERM (rank 0 stops after the batch, checkpoints and tells them to exit).
:class:`SerialComm` stands in for an MPI communicator of size 1 (tests, no mpi4py).
"""
import signal
import time

import numpy as np

from .. import _validate as V
from ..engine import PhaseResult, run_backward, run_forward

EXTRA_HINT = "pip install 'neurosim[mpi]'  (or: pip install mpi4py mpich)"


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


#: message tags: rank 0 -> others (commands), others -> rank 0 (shard results).
TAG_CMD, TAG_RESULT = 11, 12
#: seconds an idle rank sleeps between polls for a message.  MPI's blocking receives
#: busy-wait; on an oversubscribed machine (more ranks than free cores) the spinning rank
#: would take the core from the one that computes.
POLL_S = 2e-4


def _recv(comm, source, tag):
    while not comm.Iprobe(source=source, tag=tag):
        time.sleep(POLL_S)
    return comm.recv(source=source, tag=tag)


def shard_bounds(B, P):
    """``[(lo, hi)]`` of the P contiguous shards of a batch of B samples (sizes differ by
    at most one; with B < P the last ranks get none, rank 0 always has one)."""
    edge = [(r * B + P - 1) // P for r in range(P + 1)]
    return list(zip(edge[:-1], edge[1:]))


_PER_SAMPLE = ("input_ops", "masks", "counts", "counts_neg", "v_final", "weighted_counts",
               "neuron_updates", "spikes", "sent", "sent_neg")


def _payload(res):
    """A PhaseResult's per-sample arrays (what travels to rank 0)."""
    return dict(phase=res.phase, steps=res.steps, batch=res.batch, wall_s=res.wall_s,
                **{k: getattr(res, k) for k in _PER_SAMPLE})


def _cat(values):
    if values[0] is None:
        return None
    if isinstance(values[0], dict):
        return {k: _cat([v[k] for v in values]) for k in values[0]}
    return np.concatenate(values, axis=0)


def _join(parts, network, program):
    """One PhaseResult of the whole batch from the shards' payloads (in rank order)."""
    parts = [p for p in parts if p["batch"] > 0]
    kw = {k: _cat([p[k] for p in parts]) for k in _PER_SAMPLE}
    return PhaseResult(phase=parts[0]["phase"], steps=parts[0]["steps"],
                       batch=sum(p["batch"] for p in parts), network=network, program=program,
                       wall_s=max(p["wall_s"] for p in parts), **kw)


def _slice(d, lo, hi):
    return None if d is None else {k: (None if v is None else v[lo:hi]) for k, v in d.items()}


def _set_weights(net, weights):
    for name, (w, b) in weights.items():
        pr = net.projections[name]
        if w is not None:
            pr.weight = w
        if b is not None:
            pr.bias = b


class ShardedEngine:
    """The engine hooks of :func:`~neurosim.training.spide.spide_phases` on rank 0
    (``forward``, ``backward``, ``sync``), and :meth:`serve` on the other ranks."""

    def __init__(self, comm):
        self.comm = comm
        self.rank, self.size = comm.rank, comm.size
        self._fwd = None           # this rank's forward result of the current batch

    # -- rank 0 ----------------------------------------------------------------------------
    def _send_all(self, msgs):
        for r in range(1, self.size):
            self.comm.send(msgs[r] if isinstance(msgs, list) else msgs, dest=r, tag=TAG_CMD)

    def start(self, net):
        """Send the network to the other ranks (rank 0, before the first batch)."""
        self._send_all(("net", net))

    def _run(self, cmds):
        self._send_all([("step", c) for c in cmds])
        parts = [_execute(cmds[0], self)]
        parts += [_recv(self.comm, r, TAG_RESULT) for r in range(1, self.size)]   # rank order
        for r, p in enumerate(parts):
            if "error" in p:
                raise RuntimeError(f"rank {r} failed on its shard: {p['error']}")
        return parts

    def forward(self, net, steps, inputs, masks=None, record=False, n_threads=None):
        B = next(iter(inputs.values())).shape[0]
        cmds = [("forward", steps, _slice(inputs, lo, hi), _slice(masks or {}, lo, hi), record,
                 n_threads, net if r == 0 else None)
                for r, (lo, hi) in enumerate(shard_bounds(B, self.size))]
        parts = self._run(cmds)
        return _join(parts, net, getattr(self._fwd, "program", None))

    def backward(self, net, forward, currents, steps, gate=None, record=False, n_threads=None):
        B = forward.batch
        cmds = [("backward", _slice(currents, lo, hi), steps, _slice(gate, lo, hi), record,
                 n_threads, net if r == 0 else None)
                for r, (lo, hi) in enumerate(shard_bounds(B, self.size))]
        return _join(self._run(cmds), net, None)

    def sync(self, net):
        """Send the updated weights and biases (after every parameter update)."""
        w = {n: (pr.weight if pr.has_weights else None, pr.bias)
             for n, pr in net.projections.items() if pr.has_weights or pr.bias is not None}
        self._send_all(("weights", w))

    def stop(self):
        """Tell the other ranks to exit (rank 0, at the end, also after an error)."""
        self._send_all(("stop",))

    # -- other ranks -----------------------------------------------------------------------
    def serve(self):
        """Simulate shards for rank 0 until it says stop (ranks > 0)."""
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)      # rank 0 decides when to stop
        self.net = None
        while True:
            msg = _recv(self.comm, 0, TAG_CMD)
            if msg[0] == "stop":
                return
            if msg[0] == "net":
                self.net = msg[1]
            elif msg[0] == "weights":
                _set_weights(self.net, msg[1])
            elif msg[0] == "step":
                try:
                    out = _execute(msg[1], self)
                except Exception as e:        # reported by rank 0, which stops the run
                    out = dict(error=f"{type(e).__name__}: {e}", batch=0)
                self.comm.send(out, dest=0, tag=TAG_RESULT)


def _execute(cmd, eng):
    """Run one shard command on this rank; returns its payload."""
    kind = cmd[0]
    net = cmd[-1] if cmd[-1] is not None else eng.net
    if kind == "forward":
        _, steps, inputs, masks, record, n_threads, _ = cmd
        if next(iter(inputs.values())).shape[0] == 0:      # fewer samples than ranks
            eng._fwd = None
            return dict(batch=0)
        eng._fwd = run_forward(net, steps, inputs=inputs, masks=masks, record=record,
                               n_threads=n_threads)
        return _payload(eng._fwd)
    _, currents, steps, gate, record, n_threads, _ = cmd
    if eng._fwd is None:
        return dict(batch=0)
    return _payload(run_backward(net, eng._fwd, currents, steps, gate=gate, record=record,
                                 n_threads=n_threads))
