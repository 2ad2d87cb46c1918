"""Networks: populations, projections, a fixed schedule, and their compiled array form.

A :class:`Network` holds named populations and named projections.  Population kinds:

``LIF`` / ``CubaLIF`` instances
    spiking neurons simulated by the engine;
``"source"``
    spike sources whose spike trains are given per run (e.g. Poisson input);
``"input"``
    analog inputs (images): their outgoing projections are *input maps*, evaluated once
    per sample (or once per step for time-varying input) into a constant current of the
    post population — SPIDE's direct encoding ``F x + b_0``.

Schedule.  Within a step, populations update in a fixed order: a stable topological
order of the delay-0 projections (declaration order breaks ties).  A delay-0 projection
delivers the spikes of its pre population in the same step (SPIDE's feedforward); a
projection of delay ``d >= 1`` delivers spikes emitted at step ``t`` at the start of step
``t + d`` (SPIDE's feedback has ``d = 1``).  A cycle of delay-0 projections is an error.

The backward phase runs the *transposed* network: every projection between two spiking
populations is reversed (same delay, transposed weights) and every spiking population
becomes a layer of ternary couples; its schedule is the topological order of the
reversed delay-0 graph (SPIDE: from the last layer down to layer 0).
"""
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from . import _validate as V
from . import config
from .connectivity import Projection
from .connectivity.conv import receiver_table, sender_table
from .kernels import layout as L
from .kernels.layout import K_CONV_DOWN, K_CONV_UP, M_INPUT, M_SOURCE
from .neurons import BACKWARD_MODEL, NEURON_KINDS, NeuronModel


class Population:
    """A named group of neurons of one model and one shape.

    Parameters
    ----------
    name : str
    shape : int or (C, H, W)
    neuron : a neuron model of :data:`neurosim.neurons.NEURON_KINDS`, "source" or "input"
    ternary : Ternary
        Backward-phase couples of this population (spiking populations only).
    """

    def __init__(self, name, shape, neuron, ternary=None):
        self.name = name
        self.shape = V.check_shape(shape, f"population {name!r} shape")
        if isinstance(neuron, str):
            V.check_choice(neuron, f"population {name!r} neuron", {"source", "input"})
        elif not isinstance(neuron, NeuronModel) or neuron.role != "forward":
            models = ", ".join(c.__name__ for c in NEURON_KINDS.values())
            raise TypeError(f"population {name!r}: neuron must be {models}, 'source' or 'input', "
                            f"got {type(neuron).__name__}")
        self.neuron = neuron
        if ternary is not None and (not isinstance(ternary, NeuronModel)
                                    or ternary.role != "backward"):
            raise TypeError(f"population {name!r}: ternary must be a {BACKWARD_MODEL.__name__}, "
                            f"got {type(ternary).__name__}")
        self.ternary = ternary if ternary is not None else BACKWARD_MODEL()

    @property
    def n(self):
        return int(np.prod(self.shape))

    @property
    def kind(self):
        if isinstance(self.neuron, str):
            return self.neuron
        return self.neuron.kind

    @property
    def spiking(self):
        return not isinstance(self.neuron, str)

    @property
    def site_size(self):
        """Neurons updated together (one spatial position of a (C, H, W) population)."""
        return self.shape[0] if len(self.shape) == 3 else 1

    def __repr__(self):
        return f"Population({self.name!r}, {self.shape}, {self.kind})"


class Network:
    """Populations and projections with a fixed schedule.

    Parameters
    ----------
    dtype : numpy float dtype
        Precision of potentials, weights and currents in the engine (float32 default).
    """

    def __init__(self, dtype=config.DEFAULT_DTYPE, name="network"):
        self.dtype = V.check_dtype(dtype)
        self.name = name
        self.populations = OrderedDict()
        self.projections = OrderedDict()
        #: free-form information attached by loaders (model name, source file, training table).
        self.metadata = {}

    # -- building ---------------------------------------------------------------
    def add_population(self, name, shape, neuron, ternary=None):
        if not isinstance(name, str) or not name:
            raise V.NeurosimError(f"population name must be a non-empty string, got {name!r}")
        if name in self.populations or name in self.projections:
            raise V.NeurosimError(f"name {name!r} is already used in this network")
        pop = Population(name, shape, neuron, ternary)
        self.populations[name] = pop
        return pop

    def add_projection(self, name, pre, post, projection):
        if not isinstance(name, str) or not name:
            raise V.NeurosimError(f"projection name must be a non-empty string, got {name!r}")
        if name in self.populations or name in self.projections:
            raise V.NeurosimError(f"name {name!r} is already used in this network")
        for role, p in (("pre", pre), ("post", post)):
            if p not in self.populations:
                raise V.NeurosimError(
                    f"projection {name!r}: {role} population {p!r} does not exist; "
                    f"known: {list(self.populations)}")
        if not isinstance(projection, Projection):
            raise TypeError(f"projection {name!r} must be a Projection, got {type(projection).__name__}")
        P, Q = self.populations[pre], self.populations[post]
        spatial = projection.spatial
        for role, pop, shp in (("pre", P, projection.pre_shape), ("post", Q, projection.post_shape)):
            if spatial and tuple(shp) != pop.shape:
                raise V.NeurosimError(
                    f"projection {name!r}: {projection.kind} {role} shape {tuple(shp)} does not "
                    f"match population {pop.name!r} of shape {pop.shape} (conv and pool "
                    "projections need the exact (C, H, W) shape)")
        if tuple(projection.pre_shape) != P.shape and projection.n_pre != P.n:
            raise V.NeurosimError(f"projection {name!r}: pre shape {projection.pre_shape} does not match "
                                  f"population {pre!r} of shape {P.shape}")
        if tuple(projection.post_shape) != Q.shape and projection.n_post != Q.n:
            raise V.NeurosimError(f"projection {name!r}: post shape {projection.post_shape} does not match "
                                  f"population {post!r} of shape {Q.shape}")
        if not Q.spiking:
            raise V.NeurosimError(f"projection {name!r}: post population {post!r} is a {Q.kind} "
                                  "population and cannot receive synapses")
        if P.kind == "input" and projection.delay != 0:
            raise V.NeurosimError(f"projection {name!r}: an input map must have delay 0, got {projection.delay}")
        if Q.neuron.n_ports is not None and projection.port >= Q.neuron.n_ports:
            raise V.NeurosimError(f"projection {name!r}: port {projection.port} but {post!r} has "
                                  f"{Q.neuron.n_ports} receptor ports")
        projection.name = name
        projection.pre, projection.post = pre, post
        self.projections[name] = projection
        self._schedule = None
        try:
            self.schedule()
        except V.NeurosimError:
            del self.projections[name]
            raise
        return projection

    # -- structure ----------------------------------------------------------------
    def schedule(self, backward=False):
        """Population names in update order (stable topological order of delay-0 edges)."""
        names = list(self.populations)
        idx = {n: i for i, n in enumerate(names)}
        succ = {n: [] for n in names}
        indeg = {n: 0 for n in names}
        for pr in self.projections.values():
            if pr.delay != 0:
                continue
            a, b = (pr.post, pr.pre) if backward else (pr.pre, pr.post)
            if backward and not self.populations[pr.pre].spiking:
                continue
            if a == b:
                raise V.NeurosimError(
                    f"projection {pr.name!r} connects {a!r} to itself with delay 0; a feedback loop "
                    "needs delay >= 1")
            succ[a].append(b)
            indeg[b] += 1
        order, ready = [], sorted((n for n in names if indeg[n] == 0), key=idx.get)
        while ready:
            n = ready.pop(0)
            order.append(n)
            for m in succ[n]:
                indeg[m] -= 1
                if indeg[m] == 0:
                    ready.append(m)
                    ready.sort(key=idx.get)
        if len(order) != len(names):
            cyc = [n for n in names if n not in order]
            raise V.NeurosimError(
                f"feedback loop without delay among populations {cyc}: every cycle of "
                "projections needs at least one projection with delay >= 1")
        return order

    @property
    def spiking_populations(self):
        return [p for p in self.populations.values() if p.spiking]

    def summary(self):
        """One dict per population and per projection (neurons, synapses, dense MACs)."""
        pops = [dict(name=p.name, kind=p.kind, shape=list(p.shape), neurons=p.n)
                for p in self.populations.values()]
        projs = [dict(name=q.name, kind=q.kind, pre=q.pre, post=q.post, delay=q.delay,
                      synapses=q.n_synapses, dense_macs=q.dense_macs,
                      params=sum(a.size for a in q.weight_arrays().values()))
                 for q in self.projections.values()]
        return dict(populations=pops, projections=projs)

    def __repr__(self):
        return (f"Network({self.name!r}, {len(self.populations)} populations, "
                f"{len(self.projections)} projections, dtype={np.dtype(self.dtype).name})")


class Program(NamedTuple):
    """One phase of a network compiled for the kernels: the arrays (:attr:`arrays`, a
    :class:`neurosim.kernels.layout.NetArrays`), the names behind the indices and the
    sizes of the run's buffers."""
    pop_names: list
    proj_names: list
    arrays: L.NetArrays
    n_buf: int
    n_sent: int
    n_mask: int
    max_ports: int


def _aligned_weights(wl, woff, n, dtype):
    """The projections' kernel weights in one flat array of ``dtype`` (cast while
    copying), projection ``q`` at ``woff[q]``: the array and every part start at a
    multiple of :data:`neurosim.kernels.layout.ALIGN` bytes (zeros in the gaps)."""
    out = L.aligned_zeros(n, dtype)
    for w, o in zip(wl, woff):
        np.copyto(out[o:o + w.size], w.reshape(-1), casting="unsafe")
    return out


def compile_program(net, backward=False, masks=()):
    """Flatten ``net`` into a :class:`Program` for the forward or backward phase.

    ``masks`` names the projections that carry a per-sample scale array (dropout):
    forward, on the receiving side; backward, on the sending side (the forward post)."""
    dtype = net.dtype
    pops = list(net.populations.values())
    pid = {p.name: i for i, p in enumerate(pops)}
    P = len(pops)
    if backward:
        projs = [q for q in net.projections.values()
                 if net.populations[q.pre].spiking and net.populations[q.post].spiking]
        for p in pops:
            if p.spiking and p.neuron.forward_only:
                raise V.NeurosimError(f"the backward phase needs LIF populations; {p.name!r} is "
                                      f"{type(p.neuron).__name__}")
    else:
        # input maps (from analog "input" populations) become constant currents instead
        projs = [q for q in net.projections.values() if net.populations[q.pre].kind != "input"]
    sizes = np.array([p.n for p in pops], np.int64)
    pop_off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    site = np.array([p.site_size for p in pops], np.int64)
    pop_site_off = np.concatenate([[0], np.cumsum(sizes // site)]).astype(np.int64)
    model = np.zeros(P, np.int64)
    fp = np.zeros((P, L.N_FP), dtype)
    ipar = np.zeros((P, L.N_IP), np.int64)
    syn = np.zeros((P, 2, L.MAX_PORTS), dtype)
    lam = np.ones(P, np.float64)
    max_ports = 1
    for i, p in enumerate(pops):
        nr = p.neuron
        if nr == "input":
            model[i] = M_INPUT
        elif nr == "source":
            model[i] = M_SOURCE
        else:
            params = p.ternary if backward else nr
            model[i] = params.pack(fp[i], ipar[i], syn[i])
            lam[i] = params.leak
            max_ports = max(max_ports, params.n_ports or 1)
    Q = len(projs)
    kind = np.zeros(Q, np.int64)
    src = np.zeros(Q, np.int64)
    dst = np.zeros(Q, np.int64)
    delay = np.zeros(Q, np.int64)
    port = np.zeros(Q, np.int64)
    geo = np.zeros((Q, L.N_GEO), np.int64)
    woff, ioff, xoff, boff, soff, moff, toff = (np.zeros(Q, np.int64) for _ in range(7))
    roff = np.full(Q, -1, np.int64)
    tl, rl = [], []
    nt = nr = 0
    scale = np.ones(Q, dtype)
    wl, il, xl, dl = [], [], [], []
    nw = ni = nx = nb = ns = nm = 0
    for q, pr in enumerate(projs):
        k, w, ip_, ix_, g, tab = pr.kernel_layout(backward)
        a, b = (pid[pr.post], pid[pr.pre]) if backward else (pid[pr.pre], pid[pr.post])
        kind[q], src[q], dst[q], delay[q], port[q], geo[q] = k, a, b, pr.delay, pr.port, g
        if backward:
            sp = pops[a]
            scale[q] = sp.ternary.subtract / sp.neuron.subtract    # float64, rounded once
        toff[q], nt = nt, nt + tab.shape[0]
        tl.append(tab)
        if k in (K_CONV_DOWN, K_CONV_UP):
            rt = receiver_table(k, g)
            st = sender_table(rt, int(g[L.G_HR] * g[L.G_WR]))
            roff[q], nr = nr, nr + rt.size + st.size
            rl += [rt.reshape(-1), st.reshape(-1)]
        woff[q], nw = nw, L.align_up(nw + w.size, dtype)      # every part starts aligned
        wl.append(w)
        ioff[q], ni = ni, ni + ip_.size
        il.append(ip_)
        xoff[q], nx = nx, nx + ix_.size
        xl.append(ix_)
        boff[q], nb = nb, L.align_up(nb + pops[b].n, dtype)
        soff[q], ns = ns, ns + pops[a].n
        dl.append(pr.in_degree() if backward else pr.out_degree())
        if pr.name in masks:
            moff[q], nm = nm, nm + (pops[a].n if backward else pops[b].n)
        else:
            moff[q] = -1
    depth = np.ones(P, np.int64)
    for q in range(Q):
        depth[src[q]] = max(depth[src[q]], delay[q] + 1)
    ring_off = np.concatenate([[0], np.cumsum(depth * sizes)]).astype(np.int64)
    order = [pid[n] for n in net.schedule(backward=backward)]

    def adjacency(key):
        ptr = np.zeros(P + 1, np.int64)
        lst = []
        for i in range(P):
            ids = [q for q in range(Q) if key[q] == i]
            lst.extend(ids)
            ptr[i + 1] = len(lst)
        return ptr, np.array(lst, np.int64)

    out_ptr, out_proj = adjacency(src)
    in_ptr, in_proj = adjacency(dst)
    # concatenate casts while copying: no second copy of the (possibly large) synapse arrays
    cat = lambda l, dt: np.concatenate(l, dtype=dt, casting="unsafe") if l else np.zeros(0, dt)
    arrays = L.NetArrays(
        pop_off=pop_off, pop_site=site, pop_site_off=pop_site_off, pop_model=model, pop_fp=fp,
        pop_ip=ipar, pop_syn=syn, pop_lam=lam, pop_depth=depth, pop_ring_off=ring_off,
        schedule=np.array(order, np.int64), out_ptr=out_ptr, out_proj=out_proj, in_ptr=in_ptr,
        in_proj=in_proj, proj_kind=kind, proj_src=src, proj_dst=dst, proj_delay=delay,
        proj_port=port, proj_geo=geo, proj_woff=woff, proj_ioff=ioff, proj_xoff=xoff,
        proj_boff=boff, proj_soff=soff, proj_scale=scale, proj_moff=moff, proj_toff=toff,
        tabs=np.ascontiguousarray(np.concatenate(tl)) if tl else np.zeros((0, 4), np.int64),
        proj_roff=roff, rtab=cat(rl, np.int64),
        weights=_aligned_weights(wl, woff, nw, dtype), sent_deg=cat(dl, np.int64),
        indptr=cat(il, np.int64),
        indices=cat(xl, config.INDEX_DTYPE))
    return Program(pop_names=[p.name for p in pops], proj_names=[q.name for q in projs],
                   arrays=arrays, n_buf=nb, n_sent=ns, n_mask=nm, max_ports=max_ports)
