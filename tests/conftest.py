"""Shared test helpers: a seeded random-network generator and tolerance helpers.

``random_case(seed, ...)`` builds a small random network plus everything one forward and
one backward run need.  By default every number (weights, biases, inputs, masks, grads,
neuron parameters) lies on a dyadic grid of small magnitude and the network is float64,
so every sum the engine and the dense reference compute is exact whatever the order of
additions (SPIDE spec, test oracle 1): their spike trains must agree bit for bit.
"""
import os
import re
import sys
from dataclasses import dataclass, field

import numba
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))       # make ``import reference`` work

import neurosim as ns                                 # noqa: E402
from neurosim import config                           # noqa: E402
from neurosim.connectivity import check_csr           # noqa: E402

#: True under ``NUMBA_DISABLE_JIT=1`` (the coverage run, docs/testing.md): every kernel
#: then runs as plain Python, except what cannot run outside Numba (see :func:`needs_jit`).
JIT_DISABLED = bool(numba.config.DISABLE_JIT)


def needs_jit(reason):
    """Mark a test that cannot run with ``NUMBA_DISABLE_JIT=1``; ``reason`` names the kernel
    code that needs compiling.  Skipped (with the reason) in the coverage run only."""
    return pytest.mark.skipif(JIT_DISABLED, reason=f"needs Numba JIT (NUMBA_DISABLE_JIT=1): {reason}")


GRID = 2.0 ** -6          # weight / bias / grad grid
XGRID = 2.0 ** -4         # analog input grid
MASK_VALUES = ((0.0, 2.0), (0.0, 1.25), (0.0, 1.0, 2.0))   # dropout scale sets (p=.5, p=.2, mixed)


def dyadic(rng, shape, scale, grid=GRID):
    """Normal(0, scale) rounded to ``grid`` (exact in float64)."""
    return np.round(rng.normal(0.0, scale, size=shape) / grid) * grid


def assert_close(actual, desired, dtype, scale=1.0, err_msg=""):
    """assert_allclose with the project's eps-scaled tolerance ``config.TEST_RTOL``.

    ``scale`` is the size of the terms that were summed (Σ|terms|): a sum's rounding error
    is bounded by a multiple of eps times it, so atol = rtol * scale covers cancellation."""
    rtol = config.TEST_RTOL[np.dtype(dtype).type]
    actual = np.asarray(actual, np.float64)
    desired = np.asarray(desired, np.float64)
    assert actual.shape == desired.shape, (actual.shape, desired.shape)
    tol = rtol * (np.abs(desired) + np.broadcast_to(np.asarray(scale, np.float64), desired.shape))
    bad = ~(np.abs(actual - desired) <= tol)
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(
            f"{int(bad.sum())} of {bad.size} values differ beyond rtol={rtol:.3g} (x scale); first at "
            f"{i}: actual {actual[i]!r}, desired {desired[i]!r}, tolerance {tol[i]:.3g}. {err_msg}")


@dataclass
class Case:
    seed: int
    net: object
    steps: int
    steps_b: int
    batch: int
    inputs: dict = field(default_factory=dict)
    spikes: dict = field(default_factory=dict)
    currents: dict = field(default_factory=dict)
    masks: dict = field(default_factory=dict)
    grad: dict = field(default_factory=dict)
    features: set = field(default_factory=set)

    @property
    def fwd_kwargs(self):
        return dict(inputs=self.inputs, spikes=self.spikes, currents=self.currents,
                    masks=self.masks, batch=self.batch)

    def __repr__(self):
        return f"Case(seed={self.seed}, {self.net}, T={self.steps}, Tb={self.steps_b}, {sorted(self.features)})"


def _shape_n(shape):
    return int(np.prod(shape))


class _Builder:
    def __init__(self, rng, dtype, dyadic_values, cuba, plain):
        self.rng = rng
        self.dyadic = dyadic_values
        self.cuba = cuba
        self.plain = plain
        self.net = ns.Network(dtype=dtype)
        self.features = set()
        self.leaky = (not cuba) and rng.random() < 0.35
        self.gain = float(rng.choice([1.0, 1.0, 1.0, 2.0]))      # 2: strong drive, repeated carries
        self.pending_pops = []      # declared in shuffled order at the end
        self.pending_projs = []

    # -- values -------------------------------------------------------------------------
    def weights(self, shape, fan_in, gain=1.0):
        sigma = self.gain * gain * 1.6 / np.sqrt(max(1.0, 0.35 * fan_in))
        if self.dyadic:
            return dyadic(self.rng, shape, sigma)
        return self.rng.normal(0.0, sigma, size=shape)

    def bias(self, shape):
        if self.rng.random() < 0.4:
            return None
        if self.dyadic:
            return np.round(self.rng.uniform(-0.15, 0.45, size=shape) / GRID) * GRID
        return self.rng.uniform(-0.15, 0.45, size=shape)

    # -- neurons ------------------------------------------------------------------------
    def neuron(self):
        rng = self.rng
        if self.cuba and rng.random() < 0.6:
            self.features.add("cuba")
            n_ports = int(rng.integers(1, 3))
            taus = tuple(float(t) for t in rng.choice([2.0, 5.0, 10.0, 20.0], n_ports, replace=False))
            return ns.CubaLIF(v_rest=float(rng.choice([0.0, -0.125])), v_th=float(rng.choice([0.25, 0.5])),
                              v_reset=float(rng.choice([0.0, -0.25])), tau_mem=float(rng.choice([5.0, 10.0])),
                              tau_syn=taus, t_ref=float(rng.choice([0.0, 0.0, 2.0])),
                              i_e=float(rng.choice([0.0, 0.125, 0.25])), dt=1.0)
        v_th = float(rng.choice([1.0, 1.0, 0.5]))
        # Θ = 2θ (SPIDE), θ (reset to 0) or 4θ: powers of two keep Θ_b/Θ dyadic
        sub = [None, None, None, None, v_th, v_th, 4 * v_th][int(rng.integers(0, 7))]
        kw = {}
        if self.leaky and rng.random() < 0.75:
            kw["leak"] = 0.5
            self.features.add("leak")
        if not self.plain:
            if rng.random() < 0.15:
                kw["reset"] = "value"
                kw["v_reset"] = float(rng.choice([0.0, -0.25]))
                self.features.add("reset_value")
            if rng.random() < 0.25:
                kw["t_ref"] = int(rng.integers(1, 3))
                self.features.add("refractory")
        return ns.LIF(v_th=v_th, subtract=sub, **kw)

    def ternary(self):
        rng = self.rng
        kw = {}
        if self.leaky and rng.random() < 0.5:
            kw["leak"] = 0.5
        r = rng.random()
        if r < 0.25:
            return ns.Ternary(v_th=0.25, **kw)                # Θ_b = 2θ_b = 0.5
        if r < 0.35:
            return ns.Ternary(v_th=0.5, subtract=0.5, **kw)   # Θ_b = θ_b
        return ns.Ternary(**kw)

    def pop(self, name, shape, neuron, ternary=None):
        self.pending_pops.append((name, shape, neuron, ternary))

    def proj(self, name, pre, post, pr):
        self.pending_projs.append((name, pre, post, pr))
        self.features.add(pr.kind)
        if pr.delay:
            self.features.add(f"delay{pr.delay}")

    # -- projections --------------------------------------------------------------------
    def sparse(self, n_pre, n_post, pre_shape, post_shape, gain=1.0, **kw):
        """Random CSR with empty rows and duplicate pairs."""
        rng = self.rng
        p = float(rng.choice([0.0, 0.1, 0.3, 0.3, 0.6]))           # 0: a projection without synapses
        pre, post = np.nonzero(rng.random((n_pre, n_post)) < p)
        # some empty rows
        empty = rng.random(n_pre) < 0.2
        keep = ~empty[pre]
        pre, post = pre[keep], post[keep]
        # duplicates
        if pre.size:
            dup = rng.choice(pre.size, size=max(1, pre.size // 8))
            pre = np.concatenate([pre, pre[dup]])
            post = np.concatenate([post, post[dup]])
        fan_in = max(1.0, pre.size / n_post)
        w = self.weights(pre.size, fan_in, gain)
        pr = ns.Sparse.from_edges(pre, post, w, pre_shape=pre_shape, post_shape=post_shape, **kw)
        check_csr(pr.indptr, pr.indices, n_pre, n_post)            # structure of every built CSR
        assert pr.indices.size == pre.size
        return pr

    def generic(self, pre_shape, post_shape, delay=0, bias=True, gain=1.0):
        n_pre, n_post = _shape_n(pre_shape), _shape_n(post_shape)
        b = self.bias((post_shape[0],) if len(post_shape) == 3 else (n_post,)) if bias else None
        if self.rng.random() < 0.5:
            return ns.Dense(self.weights((n_pre, n_post), n_pre, gain), pre_shape=pre_shape,
                            post_shape=post_shape, bias=b, delay=delay)
        return self.sparse(n_pre, n_post, pre_shape, post_shape, gain, bias=b, delay=delay)

    def spatial(self, shape, delay=0, bias=True):
        """A conv-type projection from an image population; returns the projection."""
        rng = self.rng
        C, H, W = shape
        Co = int(rng.integers(1, 4))
        b = self.bias((Co,)) if bias else None
        choices = ["conv", "conv_s2", "pool", "convT_s2", "convT"]
        kind = rng.choice(choices)
        if kind == "pool" and min(H, W) >= 2:
            k = 2
            st = int(rng.choice([1, 2]))
            return ns.AvgPool2d(k, pre_shape=shape, stride=st, delay=delay)
        if kind == "convT_s2" and max(H, W) <= 5:
            # the SPIDE decoder geometry: 2H x 2W output
            k, st, pad, op = 3, 2, 1, 1
            return ns.ConvTranspose2d(self.weights((C, Co, k, k), C * k * k / 4), pre_shape=shape,
                                      stride=st, padding=pad, output_padding=op, bias=b, delay=delay)
        if kind == "convT" and max(H, W) <= 6:
            k = int(rng.choice([2, 3]))
            st = int(rng.choice([1, 2]))
            pad = int(rng.integers(0, k))
            op = int(rng.integers(0, st))
            if (H - 1) * st - 2 * pad + k + op >= 1 and (W - 1) * st - 2 * pad + k + op >= 1:
                return ns.ConvTranspose2d(self.weights((C, Co, k, k), C * k * k / st ** 2),
                                          pre_shape=shape, stride=st, padding=pad,
                                          output_padding=op, bias=b, delay=delay)
        k = int(rng.choice([1, 2, 3]))
        st = 2 if kind == "conv_s2" else int(rng.choice([1, 1, 2]))
        pad = int(rng.integers(0, k))
        if min(H, W) + 2 * pad < k:
            k, pad = 1, 0
        return ns.Conv2d(self.weights((Co, C, k, k), C * k * k), pre_shape=shape, stride=st,
                         padding=pad, bias=b, delay=delay)


def random_case(seed, *, dtype=np.float64, dyadic_values=True, cuba=False, plain=False,
                max_layers=4, leak=None, steps=None, steps_b=None):
    """A random network with its run arguments.

    plain=True: no refractoriness and no reset-to-value (the conservation identities hold).
    cuba=True: some layers are CubaLIF (forward only).
    leak: None (random), False (no leaky neuron).  steps / steps_b override T / T_b."""
    rng = np.random.default_rng(seed)
    bd = _Builder(rng, dtype, dyadic_values, cuba, plain)
    if leak is False:
        bd.leaky = False
    B = int(rng.integers(1, 4))
    T = int(rng.integers(8, 17) if bd.leaky else rng.integers(10, 26))
    Tb = int(rng.integers(8, 17) if bd.leaky else rng.integers(10, 26))
    T = T if steps is None else steps
    Tb = Tb if steps_b is None else steps_b

    # --- layer chain
    n_layers = int(rng.integers(2, max_layers + 1))
    if rng.random() < 0.6:
        shapes = [(int(rng.integers(1, 4)), int(rng.integers(3, 8)), int(rng.integers(3, 8)))]
    else:
        shapes = [(int(rng.integers(4, 40)),)]
    projs = []
    for l in range(1, n_layers):
        s = shapes[-1]
        if len(s) == 3 and rng.random() < 0.7 and _shape_n(s) > 1:
            pr = bd.spatial(s)
            post = tuple(pr.post_shape)
            if _shape_n(post) > 300:            # keep the reference fast
                pr = bd.generic(s, (int(rng.integers(4, 30)),))
                post = tuple(pr.post_shape)
        else:
            if rng.random() < 0.25:
                post = (int(rng.integers(1, 4)), int(rng.integers(2, 6)), int(rng.integers(2, 6)))
            else:
                post = (int(rng.integers(3, 40)),)
            pr = bd.generic(s, post)
        shapes.append(post)
        projs.append((f"L{l - 1}_L{l}", f"L{l - 1}", f"L{l}", pr))
    for l, s in enumerate(shapes):
        bd.pop(f"L{l}", s, bd.neuron(), bd.ternary())
    for p in projs:
        bd.proj(*p)
    last = f"L{n_layers - 1}"

    # --- feedback (delay 1, sometimes 2), recurrent and skip projections
    if rng.random() < 0.8:
        d = 1 if rng.random() < 0.8 else 2
        s0, sl = shapes[0], shapes[-1]
        if (len(s0) == 3 and len(sl) == 3 and s0[1] == 2 * sl[1] and s0[2] == 2 * sl[2]
                and rng.random() < 0.8):
            pr = ns.ConvTranspose2d(bd.weights((sl[0], s0[0], 3, 3), sl[0] * 9 / 4, 0.6),
                                    pre_shape=sl, stride=2, padding=1, output_padding=1, delay=d)
        elif len(s0) == 3 and len(sl) == 3 and s0[1:] == sl[1:] and rng.random() < 0.8:
            pr = ns.Conv2d(bd.weights((s0[0], sl[0], 3, 3), sl[0] * 9, 0.6), pre_shape=sl,
                           padding=1, delay=d)
        else:
            pr = bd.generic(sl, s0, delay=d, bias=False, gain=0.6)
        bd.proj("fb", last, "L0", pr)
    if rng.random() < 0.3:
        l = int(rng.integers(0, n_layers))
        s = shapes[l]
        n = _shape_n(s)
        pr = bd.sparse(n, n, s, s, delay=int(rng.choice([1, 1, 2, 3])))  # may hold self-connections
        bd.proj(f"rec{l}", f"L{l}", f"L{l}", pr)
        bd.features.add("recurrent")
    if rng.random() < 0.2:
        # a second, parallel projection between the same two layers, with its own delay
        l = int(rng.integers(0, n_layers - 1))
        bd.proj(f"par{l}", f"L{l}", f"L{l + 1}",
                bd.generic(shapes[l], shapes[l + 1], delay=int(rng.choice([0, 1, 2])), gain=0.5))
        bd.features.add("parallel")
    if n_layers >= 3 and rng.random() < 0.3:
        bd.proj("skip", "L0", last, bd.generic(shapes[0], shapes[-1], gain=0.5))
        bd.features.add("skip")

    inputs, spikes, currents, masks, grad = {}, {}, {}, {}, {}
    # --- analog input population with an input map (SPIDE's F x + b_0)
    has_input = rng.random() < 0.7
    if has_input:
        s0 = shapes[0]
        if len(s0) == 3 and rng.random() < 0.8:
            C, H, W = s0
            Cx = int(rng.integers(1, 3))
            if rng.random() < 0.5:
                xs = (Cx, H, W)
                pr = ns.Conv2d(bd.weights((C, Cx, 3, 3), Cx * 9 * 0.5 / 0.35), pre_shape=xs,
                               padding=1, bias=bd.bias((C,)))
            else:
                xs = (Cx, 2 * H, 2 * W)
                pr = ns.Conv2d(bd.weights((C, Cx, 2, 2), Cx * 4 * 0.5 / 0.35), pre_shape=xs,
                               stride=2, bias=bd.bias((C,)))
        else:
            xs = (int(rng.integers(3, 30)),)
            pr = bd.generic(xs, s0)
        bd.pop("x", xs, "input")
        bd.proj("map", "x", "L0", pr)
        bd.features.add("input")
        if rng.random() < 0.2:
            x = np.round(rng.uniform(0, 1, (B, T) + xs) / XGRID) * XGRID
            bd.features.add("input_tv")
        else:
            x = np.round(rng.uniform(0, 1, (B,) + xs) / XGRID) * XGRID
        if not bd.dyadic:
            x = rng.uniform(0, 1, x.shape)
        if rng.random() < 0.5:                 # sparse input (black pixels): zeros are skipped
            x = x * (rng.random(x.shape) < 0.6)
        inputs["x"] = x
    # --- spike source
    if rng.random() < 0.5 or not has_input:
        tgt = int(rng.integers(0, min(2, n_layers)))
        st = shapes[tgt]
        if len(st) == 3 and rng.random() < 0.5:
            ss = (int(rng.integers(1, 3)),) + st[1:]
            pr = ns.Conv2d(bd.weights((st[0], ss[0], 3, 3), ss[0] * 9), pre_shape=ss, padding=1,
                           delay=int(rng.choice([0, 0, 1])))
        else:
            ss = (int(rng.integers(3, 25)),)
            pr = bd.generic(ss, st, delay=int(rng.choice([0, 0, 1])), bias=False)
        bd.pop("src", ss, "source")
        bd.proj("src_proj", "src", f"L{tgt}", pr)
        spikes["src"] = rng.random((B, T, _shape_n(ss))) < rng.uniform(0.1, 0.5)
        spikes["src"] = spikes["src"].astype([np.bool_, np.int8, np.float64][int(rng.integers(0, 3))])
        if len(ss) == 3 and rng.random() < 0.5:      # PyTorch (C, H, W) layout is accepted too
            spikes["src"] = ns.flat_to_chw(spikes["src"], ss)
            bd.features.add("chw_arrays")
        bd.features.add("source")
    # --- extra currents
    if rng.random() < 0.3:
        l = int(rng.integers(0, n_layers))
        n = _shape_n(shapes[l])
        shp = (B, T, n) if rng.random() < 0.3 else (B, n)
        c = rng.uniform(-0.1, 0.4, shp)
        currents[f"L{l}"] = np.round(c / GRID) * GRID if bd.dyadic else c
        bd.features.add("currents")

    # --- declare (populations in random order: the schedule must sort them)
    order = rng.permutation(len(bd.pending_pops))
    for i in order:
        bd.net.add_population(*bd.pending_pops[i])
    for name, pre, post, pr in bd.pending_projs:
        nr = bd.net.populations[post].neuron
        if isinstance(nr, ns.CubaLIF) and nr.n_ports > 1:
            pr.port = int(rng.integers(0, nr.n_ports))          # receptor port of the synapse
            bd.features.add("ports")
        bd.net.add_projection(name, pre, post, pr)

    # --- masks (dropout scales, fixed for both phases)
    if rng.random() < 0.4:
        for name, pr in bd.net.projections.items():
            if rng.random() < 0.5:
                vals = MASK_VALUES[int(rng.integers(0, len(MASK_VALUES)))]
                masks[name] = rng.choice(vals, size=(B, pr.n_post), p=None)
                bd.features.add("masks")

    # --- backward current: into the last layer, sometimes also into another one
    for name in [last] + ([f"L{int(rng.integers(0, n_layers))}"] if rng.random() < 0.3 else []):
        n = bd.net.populations[name].n
        g = rng.uniform(-0.8, 0.8, (B, n))
        grad[name] = grad.get(name, 0) + (np.round(g / GRID) * GRID if bd.dyadic else g)
    for name in list(grad):
        shp = bd.net.populations[name].shape
        if len(shp) == 3 and rng.random() < 0.5:
            grad[name] = ns.flat_to_chw(grad[name], shp)
            bd.features.add("chw_arrays")
    case = Case(seed, bd.net, T, Tb, B, inputs, spikes, currents, masks, grad, bd.features)
    return case


@pytest.fixture
def make_case():
    return random_case


def pytest_configure(config):
    """``pytest -m fuzz`` selects the long fuzzing run (tests/test_fuzz.py): 2000 random
    examples per test unless NEUROSIM_FUZZ_EXAMPLES says otherwise."""
    expr = config.getoption("markexpr", "") or ""
    if re.search(r"(?<!not )\bfuzz\b", expr):
        os.environ.setdefault("NEUROSIM_FUZZ_EXAMPLES", "2000")


@pytest.fixture
def runner():
    """A click CliRunner that keeps stderr apart from stdout (the CLI's progress and errors
    go to stderr)."""
    from click.testing import CliRunner
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:          # click >= 8.2 keeps stderr apart by default
        return CliRunner()
