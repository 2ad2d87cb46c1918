"""Spike emission: a population's spikes of one step appended to its ring buffer, counted
and recorded (the ``emit`` step of the schedule, :mod:`.schedule`).

The ring of a population holds, per slot ``t % depth``, the neuron index, value (+1/-1),
site and channel of each spike, in increasing neuron index: the documented event order
that fixes every floating-point sum of the deliveries (:mod:`.deliver`).  A forward-phase
population whose projections are all dense or CSR writes the index only
(:func:`_emit_lean`; docs/decisions.md, 42).
"""
import numba
import numpy as np

from ..config import NJIT_INLINE, NJIT_NORT
from .layout import K_CONV_DOWN
from .simd import compact8

# nonzero-byte mask of a 64-bit word of int8 spikes (see _update_block)
_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_HIGH1 = np.uint64(0x8080808080808080)
_GATHER = np.uint64(0x0102040810204080)
_POPCOUNT = np.array([bin(m).count("1") for m in range(256)], np.int64)
_LANES = np.array([[i for i in range(8) if m >> i & 1] + [0] * (8 - bin(m).count("1"))
                   for m in range(256)], np.int64)
_LANES32 = _LANES.astype(np.int32)


@numba.njit(**NJIT_INLINE)
def _push(sc, base, rc, jl, val, site, ch):
    """Append one spike to the ring at ``base``; returns the new ring count."""
    sc.ring_idx[base + rc] = jl
    sc.ring_val[base + rc] = val
    sc.ring_site[base + rc] = site
    sc.ring_ch[base + rc] = ch
    return rc + 1


@numba.njit(**NJIT_INLINE)
def _putu(ri, rv, rs, rch, u, jl, val, site, ch):
    """:func:`_push` on the ring's arrays from the slot's start, at the unsigned position
    ``u``; returns ``u + 1``."""
    ri[u] = jl
    rv[u] = val
    rs[u] = site
    rch[u] = ch
    return u + np.uint64(1)


@numba.njit(**NJIT_NORT)
def _emit_lean(spk, n, nz, j0, cpos, rrow, rec_off, ri, rc):
    """:func:`_emit_spikes` for a forward-phase population whose projections are all
    dense or CSR: their deliveries read only the neuron index of a spike (forward spikes
    are +1), so only ``ri`` is written, and no -1 count is kept.  Same ring order and
    counts.  Silent 64-bit words (eight neurons) are skipped; a word with a spike is
    compacted without a branch (each lane's index is stored, the position advances by
    the lane's 0/1 byte: every store lands at or before the lane's own slot in the
    ring).  The counts as one vectorised add when at least one neuron in eight spikes,
    else per lane of the nonzero words."""
    u = np.uint64(rc)
    few = nz * 8 < np.int64(n)
    if not few:
        cb = np.uint64(j0)
        for kk in range(n):
            cpos[cb + kk] += spk[kk]
    nw = n // np.uint64(8)
    words = spk[:nw * np.uint64(8)].view(np.uint64)
    rec = rec_off >= 0
    for wi in range(nw):
        w = words[wi]
        if w != 0:
            kb = j0 + np.int64(wi * np.uint64(8))
            for i in range(8):
                f = (w >> np.uint64(8 * i)) & np.uint64(1)
                ri[u] = kb + i
                u += f
                if few:
                    cpos[kb + i] += np.int32(f)
                if rec:
                    rrow[rec_off + kb + i] = np.int8(f)
    for kk in range(nw * np.uint64(8), n):
        if spk[kk] != 0:
            k = j0 + np.int64(kk)
            ri[u] = k
            u += np.uint64(1)
            if few:
                cpos[k] += 1
            if rec:
                rrow[rec_off + k] = 1
    return np.int64(u)


@numba.njit(**NJIT_INLINE)
def _lean(p, backward, net):
    """Whether population p's spikes may be emitted by :func:`_emit_lean` (forward phase,
    no conv / pool projection out of p: nothing reads a spike's value, site or channel)."""
    if backward:
        return False
    for a in range(net.out_ptr[p], net.out_ptr[p + 1]):
        if net.proj_kind[net.out_proj[a]] >= K_CONV_DOWN:
            return False
    return True


@numba.njit(**NJIT_NORT)
def _emit_spikes(spk, n, nz, s0, ssz, j0, cpos, cneg, rrow, rec_off, ri, rv, rs, rch, rc,
                 pos_only):
    """Append the ``nz`` spikes of ``spk[0:n]`` (neurons ``j0 ..`` of a block starting at
    site ``s0``) to the ring (``ri, rv, rs, rch`` from its slot, ``rc`` used) in neuron
    order, count them (``cpos``/``cneg``: the population's counts) and record them
    (``rrow``, when ``rec_off >= 0``); returns the ring count.  A function of its own with
    few arguments: inlined into the block update, its loops compiled to several times
    the instructions (ad-hoc timings: ~14 ns per spike there, a few ns here).  The ring
    position is unsigned inside (no negative-index wrap-around per store).  ``pos_only``:
    every spike is +1 (forward phase, sources), which lets busy blocks store eight
    records at once (:func:`.simd.compact8`)."""
    u = np.uint64(rc)
    if ssz == 1:
        # one neuron per site: eight neurons per 64-bit word, a bit mask of the nonzero
        # bytes, then only its set bits (lane tables); counts without a branch on the sign
        nw = n // np.uint64(8)
        words = spk[:nw * np.uint64(8)].view(np.uint64)
        for wi in range(nw):
            w = words[wi]
            if w != 0:
                x = (((w & _LOW7) + _LOW7) | w) & _HIGH1
                m = ((x >> np.uint64(7)) * _GATHER) >> np.uint64(56)
                kb = wi * np.uint64(8)
                for i in range(_POPCOUNT[m]):
                    kk = kb + np.uint64(_LANES[m, i])
                    qv = spk[kk]
                    k = j0 + np.int64(kk)
                    u = _putu(ri, rv, rs, rch, u, k, qv, k, 0)
                    cpos[k] += qv > 0
                    cneg[k] += qv < 0
                    if rec_off >= 0:
                        rrow[rec_off + k] = qv
        for kk in range(nw * np.uint64(8), n):
            qv = spk[kk]
            if qv != 0:
                k = j0 + np.int64(kk)
                u = _putu(ri, rv, rs, rch, u, k, qv, k, 0)
                cpos[k] += qv > 0
                cneg[k] += qv < 0
                if rec_off >= 0:
                    rrow[rec_off + k] = qv
    else:
        # several neurons per site: the same word scan, tracking (site, channel) of each
        # word's first lane without a division (branch-free when a site holds >= 8
        # neurons: a lane then wraps at most once); the counts as one vectorised add
        # per sign when at least one neuron in eight spikes, else per spike
        few = nz * 8 < np.int64(n)
        if not few:
            cb = np.uint64(j0)
            for kk in range(n):
                qv = spk[kk]
                cpos[cb + kk] += qv > 0
                cneg[cb + kk] += qv < 0
        big = ssz >= 8
        nw = n // np.uint64(8)
        words = spk[:nw * np.uint64(8)].view(np.uint64)
        s = s0
        c0 = 0
        if big and not few and pos_only and rec_off < 0:
            # busy block of 0/1 spikes: each nonzero word's records are written as eight
            # lanes at once (simd.compact8: its set lanes from the lane table, the site
            # and channel wrapped without a branch; a store never lands past the last
            # lane's own slot), the position advanced by the word's spike count
            for wi in range(nw):
                w = words[wi]
                if w != 0:
                    x = (((w & _LOW7) + _LOW7) | w) & _HIGH1
                    m = ((x >> np.uint64(7)) * _GATHER) >> np.uint64(56)
                    compact8(ri, rv, rs, rch, u, _LANES32, m,
                             j0 + np.int64(wi * np.uint64(8)), c0, s, ssz)
                    u += np.uint64(_POPCOUNT[m])
                c0 += 8
                wrap = np.int64(c0 >= ssz)
                c0 -= ssz * wrap
                s += wrap
        elif big and not few:
            # busy block: a nonzero word is compacted without a branch (every lane's
            # record is stored, the position advances by its 0/1 flag; a store never
            # lands past the lane's own slot), as in _emit_lean
            rec = rec_off >= 0
            for wi in range(nw):
                w = words[wi]
                if w != 0:
                    kb = wi * np.uint64(8)
                    for i in range(8):
                        c = c0 + i
                        wrap = np.int64(c >= ssz)
                        kk = kb + np.uint64(i)
                        qv = spk[kk]
                        k = j0 + np.int64(kk)
                        ri[u] = k
                        rv[u] = qv
                        rs[u] = s + wrap
                        rch[u] = c - ssz * wrap
                        u += np.uint64(qv != 0)
                        if rec:
                            rrow[rec_off + k] = qv
                c0 += 8
                wrap = np.int64(c0 >= ssz)
                c0 -= ssz * wrap
                s += wrap
        else:                      # the lanes of the set bits only
            for wi in range(nw):
                w = words[wi]
                if w != 0:
                    x = (((w & _LOW7) + _LOW7) | w) & _HIGH1
                    m = ((x >> np.uint64(7)) * _GATHER) >> np.uint64(56)
                    kb = wi * np.uint64(8)
                    for i in range(_POPCOUNT[m]):
                        lane = _LANES[m, i]
                        c = c0 + lane
                        ss = s
                        if big:
                            wrap = np.int64(c >= ssz)
                            c -= ssz * wrap
                            ss += wrap
                        else:
                            while c >= ssz:
                                c -= ssz
                                ss += 1
                        kk = kb + np.uint64(lane)
                        qv = spk[kk]
                        k = j0 + np.int64(kk)
                        u = _putu(ri, rv, rs, rch, u, k, qv, ss, c)
                        if few:
                            cpos[k] += qv > 0
                            cneg[k] += qv < 0
                        if rec_off >= 0:
                            rrow[rec_off + k] = qv
                c0 += 8
                if big:
                    wrap = np.int64(c0 >= ssz)
                    c0 -= ssz * wrap
                    s += wrap
                else:
                    while c0 >= ssz:
                        c0 -= ssz
                        s += 1
        for kk in range(nw * np.uint64(8), n):
            qv = spk[kk]
            if qv != 0:
                k = j0 + np.int64(kk)
                u = _putu(ri, rv, rs, rch, u, k, qv, k // ssz, k - (k // ssz) * ssz)
                if few:
                    cpos[k] += qv > 0
                    cneg[k] += qv < 0
                if rec_off >= 0:
                    rrow[rec_off + k] = qv
    return np.int64(u)
