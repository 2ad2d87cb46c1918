"""Independent re-simulator of neurosim run files (``docs/hdf5-schema.md``).

Written from the schema document only: it reads a run file with plain ``h5py`` and
``numpy`` (no neurosim import), rebuilds the network, the stimulus, the masks, the
backward gradient and gate from the documented datasets and attributes, and simulates
the forward phase (and the backward phase when the file stores one) clock-driven, one
neuron update per neuron and step, in the file's dtype ``D`` with the documented
rounding rules and summation order:

* constant currents are float64 sums rounded once to ``D``;
* each projection has its own accumulator per receiver, to which events are added
  one by one in increasing sender index, each addition rounded in ``D``;
* a neuron's input is ``c (+ tv(t))`` then ``+ acc`` per incoming projection in
  declaration order;
* every neuron operation is one numpy operation on ``D`` arrays (no promotion: every
  scalar is cast to ``D`` first).

``neuron_updates`` is returned too but is only a guess (a LIF or ALIF neuron counts as
updated at a step when it has a nonzero constant current, a time-varying current, an
arriving event or is refractory; CubaLIF every step): the document does not define it, the guess
fits dense/sparse networks but not pooled populations, and ``compare`` ignores it.

``resimulate(path)`` returns a dict ``{"forward": ..., "backward": ...}`` (the latter
``None`` when the file has no ``/backward``), each with ``populations`` and
``projections`` dicts that use the dataset names of the schema.
"""

from __future__ import annotations

import json
import math

import h5py
import numpy as np

SPIKING = ("lif", "cuba_lif", "alif")

# Readings of the document where it was ambiguous or (before the doc fixes on branch
# `resim`) contradicted by the files; the defaults are the readings that reproduce every
# run file exactly.  tests/test_resim_schema.py::test_literal_readings_disagree shows
# that each alternative fails.
#   map_rw / bias_r / mask_r: round the input-map weights / biases / masks to D before
#       the float64 constant-current sum (no: the stored float64 values are used);
#   cuba_check: CubaLIF threshold test on the new integrated value "new" (yes) or on the
#       potential of the previous step "old".
OPT = {"map_rw": False, "bias_r": False, "mask_r": False, "cuba_check": "new"}


def _attr_str(v):
    if isinstance(v, bytes):
        return v.decode("utf-8")
    return str(v)


def _json(v):
    return json.loads(_attr_str(v))


def _flat_index(shape, c, y, x):
    """Channel-last flat index of neuron (c, y, x) in a population of shape (C, H, W)."""
    C, H, W = shape
    return (y * W + x) * C + c


def chw_to_flat_array(a, lead):
    """[..., C, H, W] (PyTorch order) -> [..., n] channel-last (``lead`` leading axes)."""
    a = np.asarray(a)
    nd = a.ndim
    perm = list(range(lead)) + [lead + 1, lead + 2, lead]
    assert nd == lead + 3
    b = np.transpose(a, perm)
    return b.reshape(a.shape[:lead] + (-1,))


class Projection:
    """One projection as an explicit synapse list, ordered by pre index then storage order."""

    def __init__(self, name, grp, D, pops):
        a = grp.attrs
        self.name = name
        self.index = int(a["index"])
        self.kind = _attr_str(a["kind"])
        self.pre = _attr_str(a["pre"])
        self.post = _attr_str(a["post"])
        self.delay = int(a["delay"])
        self.port = int(a["port"])
        self.input_map = bool(a["input_map"])
        self.geometry = _json(a["geometry"])
        self.n_pre = pops[self.pre]["n"]
        self.n_post = pops[self.post]["n"]
        pre_shape = tuple(int(s) for s in pops[self.pre]["shape"])
        post_shape = tuple(int(s) for s in pops[self.post]["shape"])
        self.D = D
        k = self.kind
        pre_l, post_l, w_l, koff_l, widx_l = [], [], [], [], []
        if k == "dense":
            W = np.asarray(grp["weight"][...], dtype=np.float64)
            self.weight = W
            npre, npost = W.shape
            jj, ii = np.meshgrid(np.arange(npre), np.arange(npost), indexing="ij")
            pre_l = jj.ravel()
            post_l = ii.ravel()
            w_l = W.ravel()
            widx_l = np.arange(W.size)
            koff_l = np.zeros(W.size, dtype=np.int64)
            self.kshape = None
        elif k == "sparse":
            W = np.asarray(grp["weight"][...], dtype=np.float64)
            self.weight = W
            indptr = np.asarray(grp["indptr"][...], dtype=np.int64)
            indices = np.asarray(grp["indices"][...], dtype=np.int64)
            pre_l = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
            post_l = indices
            w_l = W
            widx_l = np.arange(W.size)
            koff_l = np.zeros(W.size, dtype=np.int64)
            self.kshape = None
        elif k in ("conv2d", "conv_transpose2d"):
            W = np.asarray(grp["weight"][...], dtype=np.float64)
            self.weight = W
            g = self.geometry
            kh, kw = [int(v) for v in g["kernel"]]
            st = g["stride"]
            pad = g["padding"]
            sy, sx = (st, st) if np.isscalar(st) else tuple(st)
            py, px = (pad, pad) if np.isscalar(pad) else tuple(pad)
            Ci, H, Wd = pre_shape
            Co, Ho, Wo = post_shape
            self.kshape = (kh, kw)
            rows = []
            for ci in range(Ci):
                for y in range(H):
                    for x in range(Wd):
                        j = _flat_index(pre_shape, ci, y, x)
                        for ky in range(kh):
                            for kx in range(kw):
                                if k == "conv2d":
                                    ny, nx_ = y + py - ky, x + px - kx
                                    if ny % sy or nx_ % sx:
                                        continue
                                    oy, ox = ny // sy, nx_ // sx
                                else:
                                    oy, ox = y * sy - py + ky, x * sx - px + kx
                                if not (0 <= oy < Ho and 0 <= ox < Wo):
                                    continue
                                for co in range(Co):
                                    i = _flat_index(post_shape, co, oy, ox)
                                    if k == "conv2d":
                                        wi = np.ravel_multi_index((co, ci, ky, kx), W.shape)
                                    else:
                                        wi = np.ravel_multi_index((ci, co, ky, kx), W.shape)
                                    rows.append((j, i, wi, ky * kw + kx))
            rows.sort(key=lambda r: (r[0], r[1]))
            arr = np.array(rows, dtype=np.int64).reshape(-1, 4)
            pre_l, post_l, widx_l, koff_l = arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]
            w_l = W.ravel()[widx_l]
        elif k in ("avgpool2d", "sumpool2d"):
            g = self.geometry
            kk = g["kernel"]
            kh, kw = (kk, kk) if np.isscalar(kk) else tuple(int(v) for v in kk)
            st = g.get("stride", None)
            if st is None:
                st = (kh, kw)
            sy, sx = (st, st) if np.isscalar(st) else tuple(st)
            wv = float(g["weight_value"])
            self.weight = None
            self.kshape = (kh, kw)
            C, H, Wd = pre_shape
            Co, Ho, Wo = post_shape
            rows = []
            for c in range(C):
                for oy in range(Ho):
                    for ox in range(Wo):
                        i = _flat_index(post_shape, c, oy, ox)
                        for ky in range(kh):
                            for kx in range(kw):
                                y, x = oy * sy + ky, ox * sx + kx
                                j = _flat_index(pre_shape, c, y, x)
                                rows.append((j, i, ky * kw + kx, ky * kw + kx))
            rows.sort(key=lambda r: (r[0], r[1]))
            arr = np.array(rows, dtype=np.int64).reshape(-1, 4)
            pre_l, post_l, widx_l, koff_l = arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]
            w_l = np.full(len(arr), wv)
        else:
            raise ValueError(f"unknown projection kind {k!r}")
        pre_l = np.asarray(pre_l, dtype=np.int64)
        order = np.argsort(pre_l, kind="stable")
        self.syn_pre = pre_l[order]
        self.syn_post = np.asarray(post_l, dtype=np.int64)[order]
        self.syn_w64 = np.asarray(w_l, dtype=np.float64)[order]
        self.syn_w = self.syn_w64.astype(D)          # r(w)
        self.syn_koff = np.asarray(koff_l, dtype=np.int64)[order]
        self.syn_widx = np.asarray(widx_l, dtype=np.int64)[order]
        self.rowptr = np.searchsorted(self.syn_pre, np.arange(self.n_pre + 1))
        # receivers of each sender; whether they are distinct (duplicates -> sequential adds)
        self.rows = []
        for j in range(self.n_pre):
            s0, s1 = self.rowptr[j], self.rowptr[j + 1]
            posts = self.syn_post[s0:s1]
            self.rows.append((posts, self.syn_w[s0:s1], self.syn_w64[s0:s1],
                              len(np.unique(posts)) == len(posts)))
        # backward (transposed): synapses ordered by forward post (the backward sender)
        border = np.argsort(self.syn_post, kind="stable")
        bpost = self.syn_post[border]
        bptr = np.searchsorted(bpost, np.arange(self.n_post + 1))
        self.brows = []
        for i in range(self.n_post):
            sel = border[bptr[i]:bptr[i + 1]]
            recv = self.syn_pre[sel]
            self.brows.append((recv, self.syn_w[sel], len(np.unique(recv)) == len(recv)))
        self.out_degree = np.diff(self.rowptr)
        self.in_degree = np.bincount(self.syn_post, minlength=self.n_post)
        # bias, float64 [n_post] (conv: per output channel, broadcast over positions)
        self.bias = None
        if "bias" in grp:
            bvals = np.asarray(grp["bias"][...], dtype=np.float64)
            if k in ("conv2d", "conv_transpose2d"):
                Co, Ho, Wo = post_shape
                self.bias = np.tile(bvals, Ho * Wo)  # channel-last: index (y*W+x)*C + c
            else:
                self.bias = bvals

    # ---- forward -------------------------------------------------------------------
    def deliver(self, acc, senders, hit=None):
        """acc (D) += events of ``senders`` (increasing index), each addition rounded in D."""
        for j in senders:
            if hit is not None:
                hit[self.rows[j][0]] = True
            posts, w, _, uniq = self.rows[j]
            if uniq:
                acc[posts] = acc[posts] + w
            else:
                for p, wv in zip(posts, w):
                    acc[p] = acc[p] + wv

    def apply_map64(self, x):
        """Input map in float64: sum over nonzero x_j in increasing j of x_j * w."""
        out = np.zeros(self.n_post, dtype=np.float64)
        x = np.asarray(x, dtype=np.float64)
        for j in np.flatnonzero(x):
            posts, w, _, uniq = self.rows[j]
            w64 = w.astype(np.float64) if OPT["map_rw"] else self.rows[j][2]
            if uniq:
                out[posts] = out[posts] + x[j] * w64
            else:
                for p, wv in zip(posts, w64):
                    out[p] = out[p] + x[j] * wv
        return out

    # ---- backward ------------------------------------------------------------------
    def deliver_back(self, acc, senders, values, hit=None):
        """acc (D) += v * w per event, senders = forward post indices (increasing)."""
        for i, v in zip(senders, values):
            recv, w, uniq = self.brows[i]
            if hit is not None:
                hit[recv] = True
            prod = v * w  # D * D -> D
            if uniq:
                acc[recv] = acc[recv] + prod
            else:
                for r_, pv in zip(recv, prod):
                    acc[r_] = acc[r_] + pv

    # ---- counts --------------------------------------------------------------------
    def per_synapse(self, sent_sum):
        """Per-synapse counts (layout of the schema) from sent summed over the batch."""
        per_syn = sent_sum[self.syn_pre]  # count of each synapse (pre-ordered)
        return self._layout(per_syn)

    def per_synapse_back(self, sent_sum_post):
        return self._layout(sent_sum_post[self.syn_post])

    def _layout(self, per_syn):
        k = self.kind
        per_syn = np.asarray(per_syn, dtype=np.int64)
        if k == "dense":
            out = np.zeros(self.weight.size, dtype=np.int64)
            out[self.syn_widx] = per_syn
            return out.reshape(self.weight.shape), None
        if k == "sparse":
            out = np.zeros(self.weight.size, dtype=np.int64)
            out[self.syn_widx] = per_syn
            return out, None
        kh, kw = self.kshape
        out = np.zeros((self.n_pre, kh * kw), dtype=np.int64)
        np.add.at(out, (self.syn_pre, self.syn_koff), per_syn)
        if self.weight is not None:
            kpw = np.zeros(self.weight.size, dtype=np.int64)
            np.add.at(kpw, self.syn_widx, per_syn)
            kpw = kpw.reshape(self.weight.shape)
        else:
            kpw = np.zeros(kh * kw, dtype=np.int64)
            np.add.at(kpw, self.syn_koff, per_syn)
            kpw = kpw.reshape(kh, kw)
        return out, kpw


def _read_pops(f):
    names = _json(f["network"].attrs["populations"])
    pops = {}
    for nm in names:
        a = f["network/populations"][nm].attrs
        pops[nm] = dict(
            kind=_attr_str(a["kind"]),
            shape=np.asarray(a["shape"], dtype=np.int64),
            n=int(a["n"]),
            neuron=_json(a["neuron"]),
            ternary=_json(a["ternary"]),
        )
    return names, pops


def _to_flat(a, pop, const_nd, steps_nd):
    """Stimulus array in neuron order: returns (array [B, n] or [B, T, n], per_step)."""
    a = np.asarray(a)
    shape = tuple(int(s) for s in pop["shape"])
    if len(shape) == 3:
        if a.ndim == 4:
            return chw_to_flat_array(a, 1), False
        if a.ndim == 5:
            return chw_to_flat_array(a, 2), True
    if a.ndim == const_nd:
        return a, False
    if a.ndim == steps_nd:
        return a, True
    raise ValueError(f"unexpected stimulus shape {a.shape}")


def _r64(x, D):
    """r(x) as a float64 value."""
    return np.asarray(x, dtype=np.float64).astype(D).astype(np.float64)


def resimulate(path):
    with h5py.File(path, "r") as f:
        D = np.dtype(_attr_str(f["network"].attrs["dtype"]))
        names, pops = _read_pops(f)
        pnames = _json(f["network"].attrs["projections"])
        projs = {p: Projection(p, f["network/projections"][p], D, pops) for p in pnames}
        schedule = _json(f["network"].attrs["schedule"])
        bschedule = _json(f["network"].attrs["backward_schedule"])
        fg = f["forward"]
        T = int(fg.attrs["steps"])
        B = int(fg.attrs["batch"])
        inputs = {}
        if "inputs" in fg:
            for k in fg["inputs"]:
                inputs[k] = _to_flat(fg["inputs"][k][...], pops[k], 2, 3)
        spikes = {}
        if "source_spikes" in fg:
            for k in fg["source_spikes"]:
                a, _ = _to_flat(fg["source_spikes"][k][...], pops[k], 3, 3)
                spikes[k] = np.asarray(a) != 0
        currents = {}
        if "currents" in fg:
            for k in fg["currents"]:
                a = np.asarray(fg["currents"][k][...])
                n = pops[k]["n"]
                if a.ndim == 1:
                    a = np.broadcast_to(a, (B, n))
                currents[k] = (a, a.ndim == 3)
        masks = {}
        if "masks" in fg:
            for k in fg["masks"]:
                masks[k] = np.asarray(fg["masks"][k][...], dtype=np.float64)
        fwd = _forward(D, names, pops, pnames, projs, schedule, T, B,
                       inputs, spikes, currents, masks)
        bwd = None
        if "backward" in f:
            bg = f["backward"]
            Tb = int(bg.attrs["steps"])
            grad = {}
            if "grad" in bg:
                for k in bg["grad"]:
                    grad[k] = np.asarray(bg["grad"][k][...], dtype=np.float64)
            gate = {}
            if "gate" in bg:
                for k in bg["gate"]:
                    gate[k] = np.asarray(bg["gate"][k][...]).astype(bool)
            bwd = _backward(D, names, pops, pnames, projs, bschedule, T, Tb, B,
                            fwd, grad, gate, masks)
        return {"forward": fwd, "backward": bwd, "dtype": D}


def _spike_table(rec):
    """rec: list of (sample, step, neuron arrays) -> sorted int32 arrays."""
    if rec:
        s = np.concatenate([r[0] for r in rec])
        t = np.concatenate([r[1] for r in rec])
        n = np.concatenate([r[2] for r in rec])
        extra = [np.concatenate([r[3] for r in rec])] if len(rec[0]) > 3 else []
    else:
        s = t = n = np.zeros(0, dtype=np.int64)
        extra = []
    o = np.lexsort((n, t, s))
    out = {"sample": s[o].astype(np.int32), "step": t[o].astype(np.int32),
           "neuron": n[o].astype(np.int32)}
    if extra:
        out["sign"] = extra[0][o].astype(np.int8)
    return out


def _forward(D, names, pops, pnames, projs, schedule, T, B, inputs, spikes, currents, masks):
    one = D.type(1)
    sim = [p for p in names if pops[p]["kind"] in ("source",) + SPIKING]
    counts = {p: np.zeros((B, pops[p]["n"]), dtype=np.int32) for p in sim}
    nupd = {p: np.zeros(B, dtype=np.int64) for p in sim}
    vfinal = {p: np.zeros((B, pops[p]["n"]), dtype=D) for p in sim}
    wcounts = {p: np.zeros((B, pops[p]["n"]), dtype=np.float64) for p in sim}
    trains = {p: [] for p in sim}
    ev = [p for p in pnames if not projs[p].input_map]
    sent = {p: np.zeros((B, projs[p].n_pre), dtype=np.int64) for p in ev}
    map_ops = {p: np.zeros(B, dtype=np.int64) for p in pnames if projs[p].input_map}
    incoming = {p: [q for q in ev if projs[q].post == p] for p in names}
    out0 = {p: [q for q in ev if projs[q].pre == p and projs[q].delay == 0] for p in names}
    delayed = [q for q in ev if projs[q].delay >= 1]
    rmask = {k: v.astype(D) for k, v in masks.items()}          # r(mask) in D
    rmask64 = {k: (v.astype(D).astype(np.float64) if OPT["mask_r"] else v) for k, v in masks.items()}

    for b in range(B):
        # ---- constant and time-varying currents (float64, rounded once) -------------
        const64 = {p: np.zeros(pops[p]["n"], dtype=np.float64) for p in names}
        tv64 = {p: None for p in names}
        for q in pnames:
            P = projs[q]
            if P.bias is not None:
                term = _r64(P.bias, D) if OPT["bias_r"] else P.bias.copy()
                if q in masks:
                    term = term * rmask64[q][b]
                const64[P.post] = const64[P.post] + term
        for q in pnames:                   # input maps in projection declaration order
            P = projs[q]
            if not P.input_map or P.pre not in inputs:
                continue
            arr, per_step = inputs[P.pre]
            if True:
                if not per_step:
                    x = arr[b]
                    term = P.apply_map64(x)
                    if q in masks:
                        term = term * rmask64[q][b]
                    const64[P.post] = const64[P.post] + term
                    map_ops[q][b] += int(P.out_degree[np.flatnonzero(x)].sum())
                else:
                    if tv64[P.post] is None:
                        tv64[P.post] = np.zeros((T, pops[P.post]["n"]), dtype=np.float64)
                    for t in range(T):
                        x = arr[b, t]
                        term = P.apply_map64(x)
                        if q in masks:
                            term = term * rmask64[q][b]
                        tv64[P.post][t] = tv64[P.post][t] + term
                        map_ops[q][b] += int(P.out_degree[np.flatnonzero(x)].sum())
        for p, (arr, per_step) in currents.items():
            if per_step:
                if tv64[p] is None:
                    tv64[p] = np.zeros((T, pops[p]["n"]), dtype=np.float64)
                tv64[p] = tv64[p] + np.asarray(arr[b], dtype=np.float64)
            else:
                const64[p] = const64[p] + np.asarray(arr[b], dtype=np.float64)
        c = {p: const64[p].astype(D) for p in names}
        tv = {p: (None if tv64[p] is None else tv64[p].astype(D)) for p in names}

        # ---- state ------------------------------------------------------------------
        state = {}
        for p in sim:
            pop = pops[p]
            n = pop["n"]
            nr = pop["neuron"]
            if pop["kind"] == "lif":
                sub = nr.get("subtract")
                if sub is None:
                    sub = 2.0 * nr["v_th"]
                state[p] = dict(u=np.zeros(n, dtype=D), ref=np.zeros(n, dtype=np.int64),
                                v_th=D.type(nr["v_th"]), sub=D.type(sub),
                                leak=D.type(nr["leak"]), leak64=float(nr["leak"]),
                                reset=nr["reset"], v_reset=D.type(nr["v_reset"]),
                                t_ref=int(nr["t_ref"]))
            elif pop["kind"] == "alif":
                sub = nr.get("subtract")
                if sub is None:
                    sub = 2.0 * nr["v_th"]
                state[p] = dict(u=np.zeros(n, dtype=D), a=np.zeros(n, dtype=D),
                                v_th=D.type(nr["v_th"]), sub=D.type(sub),
                                leak=D.type(nr["leak"]), leak64=float(nr["leak"]),
                                beta=D.type(nr["beta"]), rho=D.type(nr["rho"]))
            elif pop["kind"] == "cuba_lif":
                dt = float(nr["dt"])
                tm = float(nr["tau_mem"])
                a_m64 = math.exp(-dt / tm)
                a_m = D.type(a_m64)
                taus = [float(v) for v in nr["tau_syn"]]
                a_k = [D.type(math.exp(-dt / ts)) for ts in taus]
                p_k = []
                for ts in taus:
                    ak64 = math.exp(-dt / ts)
                    if ts == tm:
                        p_k.append(D.type(dt / tm * a_m64))
                    else:
                        p_k.append(D.type(ts / (ts - tm) * (ak64 - a_m64)))
                v_rest = D.type(nr["v_rest"])
                state[p] = dict(v=np.full(n, v_rest, dtype=D), ref=np.zeros(n, dtype=np.int64),
                                i=[np.zeros(n, dtype=D) for _ in taus],
                                a_m=a_m, d_m=one - a_m, a_k=a_k, p_k=p_k, v_rest=v_rest,
                                v_th=D.type(nr["v_th"]), v_reset=D.type(nr["v_reset"]),
                                i_e=D.type(nr["i_e"]),
                                n_ref=int(round(float(nr["t_ref"]) / dt)))
        acc = {q: np.zeros(projs[q].n_post, dtype=D) for q in ev}
        hit = {q: np.zeros(projs[q].n_post, dtype=bool) for q in ev}
        hist = {p: [] for p in sim}

        for t in range(T):
            for q in delayed:
                P = projs[q]
                if t - P.delay >= 0:
                    s = hist[P.pre][t - P.delay]
                    idx = np.flatnonzero(s)
                    P.deliver(acc[q], idx, hit[q])
                    sent[q][b, idx] += 1
            for p in schedule:
                kind = pops[p]["kind"]
                if kind == "input":
                    continue
                if kind == "source":
                    spk = spikes[p][b, t] if p in spikes else np.zeros(pops[p]["n"], bool)
                    spk = spk.copy()
                elif kind == "lif":
                    st = state[p]
                    I = c[p].copy()
                    if tv[p] is not None:
                        I = I + tv[p][t]
                    touched = (c[p] != 0) | (tv[p] is not None) | (st["ref"] > 0)
                    for q in incoming[p]:
                        touched |= hit[q]
                        hit[q][:] = False
                        if q in masks:
                            I = I + acc[q] * rmask[q][b]
                        else:
                            I = I + acc[q]
                        acc[q][:] = 0
                    u, ref = st["u"], st["ref"]
                    refr = ref > 0
                    act = ~refr
                    ref[refr] -= 1
                    u[act] = u[act] + I[act]
                    spk = act & (u >= st["v_th"])
                    if st["reset"] == "subtract":
                        u[spk] = u[spk] - st["sub"]
                    else:
                        u[spk] = st["v_reset"]
                    ref[spk] = st["t_ref"]
                    if st["leak64"] != 1.0:
                        u[:] = u * st["leak"]
                elif kind == "alif":
                    st = state[p]
                    I = c[p].copy()
                    if tv[p] is not None:
                        I = I + tv[p][t]
                    touched = (c[p] != 0) | (tv[p] is not None)
                    for q in incoming[p]:
                        touched |= hit[q]
                        hit[q][:] = False
                        if q in masks:
                            I = I + acc[q] * rmask[q][b]
                        else:
                            I = I + acc[q]
                        acc[q][:] = 0
                    u, a_ = st["u"], st["a"]
                    u[:] = u + I
                    th = st["v_th"] + st["beta"] * a_
                    spk = u >= th
                    u[spk] = u[spk] - st["sub"]
                    a_[:] = a_ * st["rho"] + spk.astype(D)
                    if st["leak64"] != 1.0:
                        u[:] = u * st["leak"]
                else:  # cuba_lif
                    st = state[p]
                    I = c[p].copy()
                    if tv[p] is not None:
                        I = I + tv[p][t]
                    touched = np.ones(pops[p]["n"], dtype=bool)
                    for q in incoming[p]:
                        hit[q][:] = False
                        a_ = acc[q]
                        if q in masks:
                            a_ = a_ * rmask[q][b]
                        port = projs[q].port
                        nz = a_ != 0
                        st["i"][port][nz] = st["i"][port][nz] + a_[nz]
                        acc[q][:] = 0
                    v = st["v"]
                    a = (st["v_rest"] + (v - st["v_rest"]) * st["a_m"]) + (st["i_e"] + I) * st["d_m"]
                    for k_ in range(len(st["i"])):
                        a = a + st["i"][k_] * st["p_k"][k_]
                        st["i"][k_] = st["i"][k_] * st["a_k"][k_]
                    ref = st["ref"]
                    refr = ref > 0
                    vchk = a if OPT.get("cuba_check") == "new" else v
                    spk = (~refr) & (vchk >= st["v_th"])
                    rest = (~refr) & (~spk)
                    newv = v.copy()
                    newv[refr] = st["v_reset"]
                    ref[refr] -= 1
                    newv[spk] = st["v_reset"]
                    ref[spk] = st["n_ref"]
                    newv[rest] = a[rest]
                    st["v"] = newv
                hist[p].append(spk)
                if kind != "source":
                    nupd[p][b] += int(touched.sum())
                counts[p][b] += spk.astype(np.int32)
                idx = np.flatnonzero(spk)
                if len(idx):
                    trains[p].append((np.full(len(idx), b), np.full(len(idx), t), idx))
                if kind in ("lif", "alif"):
                    wcounts[p][b] = wcounts[p][b] * state[p]["leak64"] + spk
                for q in out0[p]:
                    projs[q].deliver(acc[q], idx, hit[q])
                    sent[q][b, idx] += 1
        for p in sim:
            if pops[p]["kind"] in ("lif", "alif"):
                vfinal[p][b] = state[p]["u"]
            elif pops[p]["kind"] == "cuba_lif":
                vfinal[p][b] = state[p]["v"]

    res_p = {}
    for p in sim:
        d = {"counts": counts[p], "v_final": vfinal[p], "spikes": _spike_table(trains[p]),
             "neuron_updates": nupd[p]}
        if pops[p]["kind"] in ("lif", "alif") and float(pops[p]["neuron"]["leak"]) != 1.0:
            d["weighted_counts"] = wcounts[p]
        res_p[p] = d
    res_q = {}
    for q in pnames:
        P = projs[q]
        if P.input_map:
            res_q[q] = {"synaptic_operations": map_ops[q]}
            continue
        cnt, kpw = P.per_synapse(sent[q].sum(axis=0))
        d = {"sent": sent[q], "synaptic_operations": sent[q] @ P.out_degree, "count": cnt}
        if kpw is not None:
            d["count_per_kernel_weight"] = kpw
        res_q[q] = d
    return {"populations": res_p, "projections": res_q, "steps": T, "batch": B}


def _backward(D, names, pops, pnames, projs, bschedule, T, Tb, B, fwd, grad, gate, masks):
    spiking = [p for p in names if pops[p]["kind"] in SPIKING]
    rev = [q for q in pnames
           if pops[projs[q].pre]["kind"] in SPIKING and pops[projs[q].post]["kind"] in SPIKING]
    sim = [p for p in names if pops[p]["kind"] in ("source",) + SPIKING]
    cpos = {p: np.zeros((B, pops[p]["n"]), dtype=np.int32) for p in sim}
    cneg = {p: np.zeros((B, pops[p]["n"]), dtype=np.int32) for p in sim}
    vfin = {p: np.zeros((B, pops[p]["n"]), dtype=D) for p in sim}
    wq = {p: np.zeros((B, pops[p]["n"]), dtype=np.float64) for p in sim}
    trains = {p: [] for p in sim}
    spos = {q: np.zeros((B, projs[q].n_post), dtype=np.int64) for q in rev}
    sneg = {q: np.zeros((B, projs[q].n_post), dtype=np.int64) for q in rev}
    # backward receiver = forward pre; incoming reversed projections in declaration order
    b_in = {p: [q for q in rev if projs[q].pre == p] for p in names}
    b_out0 = {p: [q for q in rev if projs[q].post == p and projs[q].delay == 0] for p in names}
    b_del = [q for q in rev if projs[q].delay >= 1]
    par = {}
    for p in spiking:
        tr = pops[p]["ternary"]
        nr = pops[p]["neuron"]
        sub = nr.get("subtract")
        if sub is None:
            sub = 2.0 * nr["v_th"]
        par[p] = dict(v_th=D.type(tr["v_th"]), sub=D.type(tr["subtract"]),
                      leak=D.type(tr["leak"]), leak64=float(tr["leak"]),
                      val=D.type(float(tr["subtract"]) / float(sub)))
    fcounts = {p: fwd["populations"][p]["counts"] for p in spiking}
    rmask = {k: v.astype(D) for k, v in masks.items()}
    for b in range(B):
        w = {p: np.zeros(pops[p]["n"], dtype=D) for p in spiking}
        g = {p: (grad[p][b].astype(D) if p in grad else np.zeros(pops[p]["n"], D)) for p in spiking}
        gt = {}
        for p in spiking:
            if p in gate:
                gt[p] = gate[p][b]
            else:
                cc = fcounts[p][b]
                gt[p] = (cc >= 1) & (cc <= T - 1)
        acc = {q: np.zeros(projs[q].n_pre, dtype=D) for q in rev}
        hist = {p: [] for p in spiking}

        def send(q, qv, b=b):
            P = projs[q]
            p = P.post
            idx = np.flatnonzero((qv != 0) & gt[p])
            vals = qv[idx].astype(D) * par[p]["val"]
            if q in masks:
                vals = vals * rmask[q][b][idx]
            keep = vals != 0
            idx, vals = idx[keep], vals[keep]
            P.deliver_back(acc[q], idx, vals)
            pos = qv[idx] > 0
            spos[q][b, idx[pos]] += 1
            sneg[q][b, idx[~pos]] += 1

        for t in range(Tb):
            for q in b_del:
                P = projs[q]
                if t - P.delay >= 0:
                    send(q, hist[P.post][t - P.delay])
            for p in bschedule:
                if p not in par:
                    continue
                pr = par[p]
                I = g[p].copy()
                for q in b_in[p]:
                    I = I + acc[q]
                    acc[q][:] = 0
                ww = w[p]
                ww = ww + I
                qv = np.zeros(len(ww), dtype=np.int64)
                qv[ww >= pr["v_th"]] = 1
                qv[ww <= -pr["v_th"]] = -1
                ww = ww - pr["sub"] * qv.astype(D)
                if pr["leak64"] != 1.0:
                    ww = ww * pr["leak"]
                w[p] = ww
                hist[p].append(qv)
                cpos[p][b] += (qv > 0).astype(np.int32)
                cneg[p][b] += (qv < 0).astype(np.int32)
                wq[p][b] = wq[p][b] * pr["leak64"] + qv
                idx = np.flatnonzero(qv)
                if len(idx):
                    trains[p].append((np.full(len(idx), b), np.full(len(idx), t), idx, qv[idx]))
                for q in b_out0[p]:
                    send(q, qv)
        for p in spiking:
            vfin[p][b] = w[p]
    res_p = {}
    for p in sim:
        d = {"count_pos": cpos[p], "count_neg": cneg[p], "v_final": vfin[p]}
        tb = _spike_table(trains[p])
        if "sign" not in tb:
            tb["sign"] = np.zeros(0, dtype=np.int8)
        d["spikes"] = tb
        if p in par:
            if par[p]["leak64"] != 1.0:
                d["weighted_counts"] = wq[p]
        res_p[p] = d
    res_q = {}
    for q in rev:
        P = projs[q]
        cp, kp = P.per_synapse_back(spos[q].sum(axis=0))
        cn, kn = P.per_synapse_back(sneg[q].sum(axis=0))
        so_p = spos[q] @ P.in_degree
        so_n = sneg[q] @ P.in_degree
        d = {"sent_pos": spos[q], "sent_neg": sneg[q], "synaptic_operations": so_p + so_n,
             "synaptic_operations_pos": so_p, "synaptic_operations_neg": so_n,
             "count_pos": cp, "count_neg": cn}
        if kp is not None:
            d["count_per_kernel_weight_pos"] = kp
            d["count_per_kernel_weight_neg"] = kn
        res_q[q] = d
    return {"populations": res_p, "projections": res_q, "steps": Tb, "batch": B}


def stored(path):
    """The stored results, in the same nested layout as ``resimulate`` returns."""
    out = {}
    with h5py.File(path, "r") as f:
        for ph in ("forward", "backward"):
            if ph not in f:
                out[ph] = None
                continue
            g = f[ph]
            d = {"populations": {}, "projections": {}}
            for p in g["populations"]:
                pg = g["populations"][p]
                e = {}
                for k in pg:
                    if k == "spikes":
                        e["spikes"] = {kk: pg["spikes"][kk][...] for kk in pg["spikes"]}
                    else:
                        e[k] = pg[k][...]
                d["populations"][p] = e
            for q in g["projections"]:
                d["projections"][q] = {k: v[...] for k, v in g["projections"][q].items()}
            out[ph] = d
    return out


def compare(path, ignore=("neuron_updates",)):
    """Differences between the re-simulation and the stored results: list of strings
    (empty when every re-simulated dataset equals the stored one exactly)."""
    r = resimulate(path)
    s = stored(path)
    diffs = []
    for ph in ("forward", "backward"):
        if (r[ph] is None) != (s[ph] is None):
            diffs.append(f"{ph}: presence differs")
            continue
        if r[ph] is None:
            continue
        for sect in ("populations", "projections"):
            for name, sd in s[ph][sect].items():
                rd = r[ph][sect].get(name)
                if rd is None:
                    diffs.append(f"/{ph}/{sect}/{name}: not re-simulated")
                    continue
                for key, sv in sd.items():
                    if key in ignore:
                        continue
                    if key not in rd:
                        diffs.append(f"/{ph}/{sect}/{name}/{key}: not re-simulated")
                        continue
                    rv = rd[key]
                    if isinstance(sv, dict):
                        for kk in sv:
                            a, bb = np.asarray(rv.get(kk)), np.asarray(sv[kk])
                            if a.shape != bb.shape or not np.array_equal(a, bb):
                                diffs.append(f"/{ph}/{sect}/{name}/{key}/{kk}: differs "
                                             f"(resim {a.shape}, stored {bb.shape})")
                        continue
                    a, bb = np.asarray(rv), np.asarray(sv)
                    if a.shape != bb.shape:
                        diffs.append(f"/{ph}/{sect}/{name}/{key}: shape {a.shape} vs {bb.shape}")
                    elif a.dtype.kind == "f" and a.dtype != bb.dtype:
                        diffs.append(f"/{ph}/{sect}/{name}/{key}: dtype {a.dtype} vs {bb.dtype}")
                    elif not np.array_equal(a, bb):
                        where = np.argwhere(a != bb)[0]
                        diffs.append(f"/{ph}/{sect}/{name}/{key}: first difference at "
                                     f"{tuple(where)}: resim {a[tuple(where)]!r} stored "
                                     f"{bb[tuple(where)]!r}")
    return diffs
