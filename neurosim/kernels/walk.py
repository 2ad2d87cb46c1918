"""The kernel-offset walk of spatial projections, written once.

A sender site ``s = y*W_s + x`` of a conv, conv-transpose or pooling projection reaches
a set of receiver sites, each through one kernel offset ``ky*kw + kx``.  The two walks
below list them (into caller-provided scratch, no allocation); the scatters, the input
maps, the weight gradient and the stand-alone propagation kernel all use them, then apply
their own row operation to each (site, offset) pair.

``tab`` holds per sender site the precomputed start of the walk (no integer division per
event; see ``neurosim.connectivity``'s ``site_table``):
down (conv / pool forward, conv-transpose backward): ``((y+pad) % st, (y+pad) // st,
(x+pad) % st, (x+pad) // st)`` — receiver ``o`` with ``o*st - pad + k = y``;
up (transposed direction): ``(y*st - pad, x*st - pad, 0, 0)`` — receiver ``y*st - pad + k``.
"""
import numba

from ..config import NJIT_INLINE
from .layout import G_HR, G_KH, G_KW, G_STRIDE, G_WR


@numba.njit(**NJIT_INLINE)
def down_walk(geo, tab, site_s, sites, offs):
    """Receivers (oy, ox) with ``oy*st - pad + ky = y`` (same in x), walking the valid ky
    from ``(y+pad) % st`` in steps of st while oy steps down by one.  Writes receiver site
    ``oy*W_r + ox`` and offset ``ky*kw + kx`` of each into ``sites`` / ``offs``; returns
    how many (in a fixed order: ky, then kx, increasing)."""
    kh, kw, st, Hr, Wr = geo[G_KH], geo[G_KW], geo[G_STRIDE], geo[G_HR], geo[G_WR]
    n = 0
    ky = tab[site_s, 0]
    oy = tab[site_s, 1]
    while ky < kh and oy >= 0:
        if oy < Hr:
            kx = tab[site_s, 2]
            ox = tab[site_s, 3]
            while kx < kw and ox >= 0:
                if ox < Wr:
                    sites[n] = oy * Wr + ox
                    offs[n] = ky * kw + kx
                    n += 1
                kx += st
                ox -= 1
        ky += st
        oy -= 1
    return n


@numba.njit(**NJIT_INLINE)
def up_walk(geo, tab, site_s, sites, offs):
    """Receivers ``(y*st - pad + ky, x*st - pad + kx)`` inside the receiver map (see
    :func:`down_walk`)."""
    kh, kw, Hr, Wr = geo[G_KH], geo[G_KW], geo[G_HR], geo[G_WR]
    n = 0
    oy0 = tab[site_s, 0]
    ox0 = tab[site_s, 1]
    for ky in range(kh):
        oy = oy0 + ky
        if oy < 0:
            continue
        if oy >= Hr:
            break
        for kx in range(kw):
            ox = ox0 + kx
            if ox < 0:
                continue
            if ox >= Wr:
                break
            sites[n] = oy * Wr + ox
            offs[n] = ky * kw + kx
            n += 1
    return n
