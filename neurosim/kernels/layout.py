"""The compiled network as the kernels see it: codes, column meanings and named arrays.

This module is the one place where the integer codes and matrix columns shared by the
compiler (:func:`neurosim.network.compile_program`), the kernels and the dense twin in
``tests/reference.py`` are defined.  A column means the same thing for every neuron
model (unused columns are 0), so no kernel can read one model's parameter as another's.

Kernels receive the compiled network and the run's arrays as the NamedTuples below
(:class:`NetArrays`, :class:`RunArrays`, :class:`OutArrays`, :class:`Scratch`); Numba
passes a NamedTuple of arrays as one argument, so a helper takes a handful of named
bundles instead of dozens of positional arrays.
"""
from typing import NamedTuple

import numpy as np

# -- population model codes (``NetArrays.pop_model``) ------------------------------------
#: analog input population (its projections are input maps: constant currents).
M_INPUT = -1
#: spike source (spike trains given per run).
M_SOURCE = 0
#: SPIDE IF/LIF neuron (:class:`neurosim.neurons.LIF`).
M_LIF = 1
#: current-based LIF with exponential synapses (:class:`neurosim.neurons.CubaLIF`).
M_CUBA = 2
#: ternary neuron couple of the backward phase (:class:`neurosim.neurons.Ternary`).
M_TERNARY = 3
#: adaptive-threshold LIF (:class:`neurosim.neurons.ALIF`).
M_ALIF = 4

# -- scatter kinds (``NetArrays.proj_kind``): what one event does in one direction -------
#: dense matrix row ``W[j, :]`` (kernel layout [n_send, n_recv]).
K_DENSE = 0
#: CSR row of sender ``j`` (``indptr``, ``indices``, weights aligned with ``indices``).
K_CSR = 1
#: convolution walk (receiver ``o`` with ``o*stride - pad + k = sender``).
K_CONV_DOWN = 2
#: transposed-convolution walk (receiver ``sender*stride - pad + k``).
K_CONV_UP = 3
#: pooling window walk, one shared weight (``weights[woff]``).
K_POOL_DOWN = 4
#: pooling transpose walk, one shared weight.
K_POOL_UP = 5
#: kinds whose events are grouped by sender site and walk a kernel-offset table.
SPATIAL_KINDS = (K_CONV_DOWN, K_CONV_UP, K_POOL_DOWN, K_POOL_UP)

# -- columns of ``pop_fp`` [P, N_FP] (the network's dtype) --------------------------------
FP_VTH = 0      #: threshold θ (LIF, CubaLIF, ternary; ALIF: the base threshold)
FP_SUB = 1      #: subtraction Θ on a spike (LIF reset "subtract", ternary, ALIF)
FP_LEAK = 2     #: leak λ applied every step after the reset (LIF, ternary, ALIF; 1 = none)
FP_VRESET = 3   #: reset value (LIF reset "value", CubaLIF)
FP_VREST = 4    #: resting potential (CubaLIF)
FP_AMEM = 5     #: membrane propagator α_m = exp(-dt/τ_m) (CubaLIF)
FP_IE = 6       #: constant external current i_e (CubaLIF)
FP_DMEM = 7     #: 1 - α_m, computed in the dtype (CubaLIF)
FP_BETA = 8     #: threshold increase β per unit of adaptation (ALIF)
FP_RHO = 9      #: adaptation decay ρ per step (ALIF)
N_FP = 10

# -- columns of ``pop_ip`` [P, N_IP] (int64) ----------------------------------------------
IP_RESET = 0    #: LIF reset: 0 subtract, 1 to value
IP_TREF = 1     #: refractory steps after a spike (LIF, CubaLIF)
IP_NPORTS = 2   #: receptor ports (CubaLIF)
IP_UNIFORM = 3  #: CubaLIF run hint: 1 when every neuron of the population has the same drive
N_IP = 4

# -- ``pop_syn`` [P, 2, MAX_PORTS]: CubaLIF per port (network dtype) -----------------------
SYN_ALPHA = 0   #: α_k = exp(-dt/τ_syn[k])
SYN_P = 1       #: p_k, the current-to-potential propagator
MAX_PORTS = 4

# -- columns of ``proj_geo`` [Q, N_GEO] (int64): sender and receiver geometry --------------
G_CS, G_HS, G_WS, G_CR, G_HR, G_WR, G_KH, G_KW, G_STRIDE, G_PAD = range(10)
N_GEO = 10

# -- named steps of the schedule timed by the profiled build (``OutArrays.prof`` columns) --
#: :func:`.schedule._reset_sample` and :func:`.schedule._seed_constant` (once per sample)
ST_RESET = 0
#: :func:`.schedule._seed_touched`
ST_SEED = 1
#: :func:`.schedule._deliver_delayed`
ST_DELAYED = 2
#: :func:`.update._update_population` (the neuron update and its spikes' emission)
ST_UPDATE = 3
#: :func:`.schedule._gate_backward`
ST_GATE = 4
#: :func:`.schedule._deliver_same_step`
ST_SAME = 5
#: :func:`.schedule._finish_leak`
ST_FINISH = 6
#: :func:`.engine._sample_totals` (per-sample op and spike totals)
ST_TOTALS = 7
N_STEPS = 8
#: the names of the ``ST_*`` steps, in column order (``PhaseResult.profile`` keys).
STEP_NAMES = ("reset", "seed_touched", "deliver_delayed", "update", "gate_backward",
              "deliver_same_step", "finish_leak", "totals")


#: bytes to which the kernel weights, the per-sample input buffers and every projection's
#: part of them are aligned: one cache line, one 512-bit vector (:mod:`.simd`).  A vector
#: load that straddles two lines costs two; rows of weights misaligned by 16 bytes made
#: the conv deliveries ~35 % slower (ad hoc, benchmarks/README.md, "Performance round 2,
#: sitting 12").
ALIGN = 64


def align_up(n, dtype):
    """``n`` elements of ``dtype`` rounded up to a whole number of :data:`ALIGN` bytes."""
    k = ALIGN // np.dtype(dtype).itemsize
    return -(-int(n) // k) * k


def aligned_zeros(n, dtype):
    """Flat zeros of ``n`` elements of ``dtype`` whose data starts at a multiple of
    :data:`ALIGN` bytes (a view into a slightly larger allocation)."""
    dtype = np.dtype(dtype)
    raw = np.zeros(int(n) * dtype.itemsize + ALIGN, np.uint8)
    start = (-raw.ctypes.data) % ALIGN
    return raw[start:start + int(n) * dtype.itemsize].view(dtype)


class NetArrays(NamedTuple):
    """One phase of a compiled network (:func:`neurosim.network.compile_program`).

    Populations ``p < P`` own neurons ``pop_off[p]:pop_off[p+1]`` (flat, channel-last),
    grouped in sites of ``pop_site[p]`` neurons; projections ``q < Q`` send from
    ``proj_src[q]`` to ``proj_dst[q]`` in this phase's direction."""
    pop_off: np.ndarray       # int64 [P+1] neuron offsets
    pop_site: np.ndarray      # int64 [P] neurons per site (channels of a (C, H, W) shape)
    pop_site_off: np.ndarray  # int64 [P+1] site offsets
    pop_model: np.ndarray     # int64 [P] M_* code
    pop_fp: np.ndarray        # dtype [P, N_FP] FP_* columns
    pop_ip: np.ndarray        # int64 [P, N_IP] IP_* columns
    pop_syn: np.ndarray       # dtype [P, 2, MAX_PORTS] SYN_* rows
    pop_lam: np.ndarray       # float64 [P] leak of the weighted spike counts (1: none)
    pop_depth: np.ndarray     # int64 [P] ring depth (max outgoing delay + 1)
    pop_ring_off: np.ndarray  # int64 [P+1] ring offsets (depth * n)
    schedule: np.ndarray      # int64 [P] population ids in update order
    out_ptr: np.ndarray       # int64 [P+1] outgoing projections by sender
    out_proj: np.ndarray      # int64
    in_ptr: np.ndarray        # int64 [P+1] incoming projections by receiver
    in_proj: np.ndarray       # int64
    proj_kind: np.ndarray     # int64 [Q] K_* code
    proj_src: np.ndarray      # int64 [Q]
    proj_dst: np.ndarray      # int64 [Q]
    proj_delay: np.ndarray    # int64 [Q]
    proj_port: np.ndarray     # int64 [Q] CubaLIF receptor port
    proj_geo: np.ndarray      # int64 [Q, N_GEO]
    proj_woff: np.ndarray     # int64 [Q] offset into weights
    proj_ioff: np.ndarray     # int64 [Q] offset into indptr (CSR)
    proj_xoff: np.ndarray     # int64 [Q] offset into indices (CSR)
    proj_boff: np.ndarray     # int64 [Q] offset into the per-sample input buffer
    proj_soff: np.ndarray     # int64 [Q] offset into the sent-count arrays
    proj_scale: np.ndarray    # dtype [Q] value of one event (backward: Θ_b / Θ of the sender)
    proj_moff: np.ndarray     # int64 [Q] offset into the mask array, -1 if none
    proj_toff: np.ndarray     # int64 [Q] first row of the projection's site table
    tabs: np.ndarray          # int64 [R, 4] per sender site start of the offset walk
    proj_roff: np.ndarray     # int64 [Q] offset into rtab (conv, conv-transpose), -1 if none
    rtab: np.ndarray          # int64 flat: per kernel offset k and sender site s (S of them)
                              # the receiver site at rtab[proj_roff + k*S + s], then per k
                              # and receiver site o (R of them) the sender site at
                              # rtab[proj_roff + nk*S + k*R + o] (-1: none)
    weights: np.ndarray       # dtype, flat, kernel layout
    sent_deg: np.ndarray      # int64 [n_sent] synapses an event of each sender traverses, per
                              # projection (aligned with ``sent``: forward the out-degree of
                              # the pre neuron, backward the in-degree of the forward post)
    indptr: np.ndarray        # int64
    indices: np.ndarray       # uint32


class RunArrays(NamedTuple):
    """What drives one phase of a batch (read-only for the kernels)."""
    const: np.ndarray         # dtype [B, N] constant current per neuron
    tv: np.ndarray            # dtype [B, T or 0, n_tv] time-varying current
    tv_off: np.ndarray        # int64 [P] column of the population in tv, -1 if none
    src: np.ndarray           # int8 [B, T or 0, n_src] source spike trains (0/1), side by side
    src_off: np.ndarray       # int64 [P] column of the population in src, -1 if none
    masks: np.ndarray         # dtype [B, n_mask] per-projection scale (dropout)
    gate: np.ndarray          # uint8 [B, N or 0] backward: senders allowed to transmit
    rec_off: np.ndarray       # int64 [P] column in OutArrays.rec, -1 if not recorded


class OutArrays(NamedTuple):
    """What one phase produces (written by the kernels; :func:`.engine.run_phase`
    clears a sample's rows of ``counts``, ``counts_neg``, ``wcount``, ``sent``,
    ``sent_neg`` and ``nupd`` itself before it fills them, so the caller may pass them
    with any content; the CubaLIF split runner needs them as zeros).  ``ops``,
    ``ops_neg`` and ``spk`` are the per-sample totals of ``sent`` (x ``sent_deg``) and of
    the counts, written by :func:`.engine.run_phase` after each sample (the split runner
    leaves them to its caller).  ``prof`` must arrive as zeros (:mod:`.clock`)."""
    counts: np.ndarray        # int32 [B, N] spikes (backward: +1 spikes)
    counts_neg: np.ndarray    # int32 [B, N] backward -1 spikes
    u_out: np.ndarray         # dtype [B, N] initial potentials in, final ones out
    wcount: np.ndarray        # float64 [B, N or 0] Σ_t λ^(T-1-t) s(t)
    sent: np.ndarray          # int64 [B, n_sent] events per sender and projection (+1)
    sent_neg: np.ndarray      # int64 [B, n_sent] backward -1 events
    nupd: np.ndarray          # int64 [B, P] neuron updates
    rec: np.ndarray           # int8 [B, T, n_rec] spike trains
    ops: np.ndarray           # int64 [B, Q] synaptic events (+1 events x degree) per projection
    ops_neg: np.ndarray       # int64 [B, Q] backward -1 events x degree
    spk: np.ndarray           # int64 [B, P] spikes of each population (+1 and -1)
    prof: np.ndarray          # int64 [B, N_STEPS] cycles per named step (ST_*), added to by
                              # the profiled build; [B, 0] and untouched otherwise


class Scratch(NamedTuple):
    """Per-call working memory of :func:`.engine.run_phase`, reused from sample to sample
    (the kernel resets what it reads at the start of each sample); :func:`alloc_scratch`."""
    u: np.ndarray             # dtype [N] potentials
    ref: np.ndarray           # int32 [N] refractory steps left
    isyn: np.ndarray          # dtype [MAX_PORTS, N or 0] CubaLIF currents
    adapt: np.ndarray         # dtype [N or 0] ALIF adaptation
    buf: np.ndarray           # dtype [n_buf] per-projection input buffers
    last: np.ndarray          # int64 [NS] last step a site was updated (-1: never)
    mark: np.ndarray          # uint8 [NS] site is in its population's touched list
    tlist: np.ndarray         # int64 [NS + P] touched sites (one slack slot per population)
    tcount: np.ndarray        # int64 [P]
    allflag: np.ndarray       # uint8 [P] a dense projection hit the population
    clist: np.ndarray         # int64 [NS] sites left above threshold (carry)
    ccount: np.ndarray        # int64 [P]
    klist: np.ndarray         # int64 [NS] sites with a constant current
    kcount: np.ndarray        # int64 [P]
    ring_idx: np.ndarray      # int32 [R] spikes: neuron within the population
    ring_val: np.ndarray      # int8 [R] spike value (+1 / -1)
    ring_site: np.ndarray     # int32 [R] site of the neuron
    ring_ch: np.ndarray       # int32 [R] channel of the neuron within its site
    ring_cnt: np.ndarray      # int64 [P, depth] spikes per ring slot
    dense_pop: np.ndarray     # uint8 [P] population updated densely every step
    cur: np.ndarray           # dtype [max n] block update: input current
    spk: np.ndarray           # int8 [max n] block update: spike values
    gch: np.ndarray           # int64 [max n] one sender site's event channels
    gval: np.ndarray          # dtype [max n] one sender site's event values (conv: all sites')
    gsite: np.ndarray         # int64 [max sites] conv delivery: the sender sites with events
    gpos: np.ndarray          # int64 [max sites + 1] conv delivery: their first event in gch
    gbits: np.ndarray         # uint64 [max sites] conv gather: spiking channels of each sender site
    wsite: np.ndarray         # int64 [max kh*kw] receiver sites of one offset walk
    woffs: np.ndarray         # int64 [max kh*kw] kernel offsets of one offset walk


def alloc_scratch(net, n_buf, max_ports):
    """A fresh :class:`Scratch` for one :func:`.engine.run_phase` call on ``net``.

    Parameters
    ----------
    net : NetArrays
        The compiled network (sizes come from its offsets, models and geometries).
    n_buf : int
        Length of the per-projection input buffers (``Program.n_buf``).
    max_ports : int
        Synaptic ports of the CubaLIF currents (``Program.max_ports``); the currents get
        ``N`` columns only when a population is CubaLIF (and the ALIF adaptation ``N``
        entries only when a population is ALIF).
    """
    P = net.pop_off.shape[0] - 1
    N = int(net.pop_off[P])
    NS = int(net.pop_site_off[P])
    R = int(net.pop_ring_off[P])
    dt = net.weights.dtype
    sizes = np.diff(net.pop_off)
    maxd = max(1, int(net.pop_depth.max(initial=1)))
    max_n = max(1, int(sizes.max(initial=1)))
    max_s = max(1, int(np.diff(net.pop_site_off).max(initial=1)))
    kk = net.proj_geo[:, G_KH] * net.proj_geo[:, G_KW]
    max_k = max(1, int(kk.max(initial=1)))
    has_cuba = bool(np.any(net.pop_model == M_CUBA))
    has_alif = bool(np.any(net.pop_model == M_ALIF))
    z = np.zeros
    return Scratch(u=z(N, dt), ref=z(N, np.int32), isyn=z((max_ports, N if has_cuba else 0), dt),
                   adapt=z(N if has_alif else 0, dt),
                   buf=aligned_zeros(n_buf, dt), last=np.empty(NS, np.int64), mark=z(NS, np.uint8),
                   tlist=z(NS + P, np.int64), tcount=z(P, np.int64), allflag=z(P, np.uint8),
                   clist=z(NS, np.int64), ccount=z(P, np.int64), klist=z(NS, np.int64),
                   kcount=z(P, np.int64), ring_idx=z(R, np.int32), ring_val=z(R, np.int8),
                   ring_site=z(R, np.int32), ring_ch=z(R, np.int32),
                   ring_cnt=z((P, maxd), np.int64), dense_pop=z(P, np.uint8),
                   cur=z(max_n, dt), spk=z(max_n, np.int8), gch=z(max_n, np.int64),
                   gval=z(max_n, dt), gsite=z(max_s, np.int64), gpos=z(max_s + 1, np.int64),
                   gbits=z(max_s, np.uint64),
                   wsite=z(max_k, np.int64), woffs=z(max_k, np.int64))
