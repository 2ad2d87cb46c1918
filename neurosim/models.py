"""Model files: networks described in TOML, weights initialised from a seed.

A model file describes populations, projections and their initialisation, never the
weights themselves (those live in run files, :mod:`neurosim.io`).  The format is
documented key by key in ``docs/model-format.md``; in short::

    format = "neurosim-model/1"
    name = "fsnn_mlp"
    dtype = "float32"
    [[populations]]
    name = "x"; shape = [64]; kind = "input"
    [[populations]]
    name = "l0"; shape = [128]; kind = "lif"; v_th = 1.0
    [[projections]]
    name = "F"; pre = "x"; post = "l0"; kind = "dense"; bias = true

:func:`load_model` reads a file (or a name: the stem of a file in the model directory),
:func:`model_from_dict` builds from an already parsed dict.  Finding, parsing and the
checks of the file format live in :mod:`neurosim.io.model_file` (which also lists the named
models, :func:`~neurosim.io.model_file.list_models`); every defect raises
:class:`~neurosim.io.model_file.ModelError` (a ``ValueError``) naming the file, the table
and the key, and what is allowed.

Initialisation.  Each weighted projection draws its weights from its own generator
``numpy.random.default_rng([seed, crc32(projection name)])``, so a projection's weights
depend only on the seed and its name.  ``weight = init_scale * base`` with ``base``:

``kaiming_normal``     normal(0, sqrt(2 / fan_in)), fan_in as ``torch.nn.init`` computes
                       it on the PyTorch-layout tensor (dense: n_pre; sparse: the expected
                       in-degree p*n_pre or ``fan_in``; conv2d: C_in*kh*kw;
                       conv_transpose2d: C_out*kh*kw, PyTorch's convention for that layout)
``uniform_unit_norm``  uniform(-1, 1), then every output filter scaled to unit L2 norm
                       (dense: a column W[:, i]; sparse: the synapses into post neuron i;
                       conv2d: weight[co]; conv_transpose2d: weight[:, co]) — SPIDE CIFAR
``normal``             normal(0, 1)
``constant``           1
``zeros``              0

Biases (``bias = true``) are the constant ``bias_value`` (default 0).
"""
import math
import zlib

import numpy as np

from .connectivity import PROJECTION_KINDS, Conv2d, ConvTranspose2d, Dense, Sparse
from .io.model_file import (FORMAT, INITS, POP_COMMON, POP_KINDS, PROJ_COMMON, PROJ_KINDS,
                            TOP_KEYS, ModelError, check_keys, check_table, fail, get_int,
                            get_pair, get_real, get_str, read_model_file, reserve,
                            resolve_model_path, wrap)
from .network import Network
from .neurons import BACKWARD_MODEL, NEURON_KINDS


def load_model(path_or_name, seed=0):
    """Build the :class:`~neurosim.Network` of a model file.

    Parameters
    ----------
    path_or_name : str or Path
        A ``.toml`` file, or the name (stem) of a file in
        :func:`neurosim.io.model_file.models_dir`.
    seed : int
        Seed of the weight initialisation (and of random sparse connectivity).

    Returns
    -------
    Network
        With ``net.metadata`` = dict(model, description, training, source, seed, spec).
    """
    p = resolve_model_path(path_or_name)
    d = read_model_file(p)
    return model_from_dict(d, seed=seed, source=str(p), default_name=p.stem)


# -- populations -----------------------------------------------------------------------
def _population(ctx, net, i, t, used):
    name, kind, where = check_table(ctx, t, "populations", i, used, POP_COMMON, POP_KINDS)
    if "shape" not in t:
        fail(ctx, f"{where} is missing the required key 'shape'")
    shape = t["shape"]
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = [shape]
    if (not isinstance(shape, list) or len(shape) not in (1, 3)
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape)):
        fail(ctx, f"{where}: shape must be [n] or [C, H, W] with positive integers, got {t['shape']!r}")
    reserve(ctx, where, 64 * math.prod(shape), f"{math.prod(shape)} neurons")
    params = {k: v for k, v in t.items() if k not in POP_COMMON and k != "ternary"}
    if kind in ("input", "source"):
        neuron = kind
    else:
        neuron = wrap(ctx, where, NEURON_KINDS[kind].from_dict, params)
    ternary = None
    if "ternary" in t:
        tt = t["ternary"]
        if not isinstance(tt, dict):
            fail(ctx, f"{where}: ternary must be a table like {{ v_th = 0.5 }}, got {tt!r}")
        check_keys(ctx, tt, BACKWARD_MODEL.keys(), f"the ternary table of {where}")
        ternary = wrap(ctx, f"{where} ternary", BACKWARD_MODEL.from_dict, tt)
    wrap(ctx, where, net.add_population, name, tuple(shape), neuron, ternary)


# -- projections -----------------------------------------------------------------------
def _fan_in_torch(kind, wshape):
    if kind == "dense":
        return wshape[0]
    return wshape[1] * wshape[2] * wshape[3]   # conv (C_out, C_in, ..) / convT (C_in, C_out, ..)


def _base(init, shape, rng):
    if init in ("kaiming_normal", "normal"):
        return rng.standard_normal(shape)
    if init == "uniform_unit_norm":
        return rng.uniform(-1.0, 1.0, shape)
    if init == "constant":
        return np.ones(shape)
    return np.zeros(shape)


def _unit_norm(w, axes):
    n = np.sqrt(np.sum(w * w, axis=axes, keepdims=True))
    return np.divide(w, n, out=np.zeros_like(w), where=n > 0)


def _init_weight(ctx, where, kind, init, scale, wshape, rng, fan_in=None):
    w = _base(init, wshape, rng)
    if init == "kaiming_normal":
        fi = fan_in if fan_in is not None else _fan_in_torch(kind, wshape)
        w = w * math.sqrt(2.0 / max(fi, 1e-12))
    elif init == "uniform_unit_norm":
        axes = {"dense": (0,), "conv2d": (1, 2, 3), "conv_transpose2d": (0, 2, 3)}[kind]
        w = _unit_norm(w, axes)
    return scale * w


def _projection(ctx, net, i, t, used, seed):
    name, kind, where = check_table(ctx, t, "projections", i, used, PROJ_COMMON, PROJ_KINDS)
    pops = net.populations
    pre = get_str(ctx, t, "pre", where)
    post = get_str(ctx, t, "post", where)
    for role, p in (("pre", pre), ("post", post)):
        if p not in pops:
            fail(ctx, f"{where}: {role} population {p!r} does not exist; populations: {list(pops)}")
    P, Q = pops[pre], pops[post]
    where = f"[[projections]] {name!r} ({pre} -> {post})"
    delay = get_int(ctx, t, "delay", where, 0, low=0)
    port = get_int(ctx, t, "port", where, 0, low=0)
    common = dict(delay=delay, port=port)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    init = t.get("init", "kaiming_normal")
    if init not in INITS:
        fail(ctx, f"{where}: unknown init {init!r}; allowed: {list(INITS)}")
    scale = get_real(ctx, t, "init_scale", where, 1.0)
    has_bias = t.get("bias", False)
    if not isinstance(has_bias, bool):
        fail(ctx, f"{where}: bias must be true or false, got {has_bias!r}")
    if "bias_value" in t and not has_bias:
        fail(ctx, f"{where}: bias_value is given but bias is not true")
    bias_value = get_real(ctx, t, "bias_value", where, 0.0)

    def need_chw(role, pop):
        if len(pop.shape) != 3:
            fail(ctx, f"{where}: a {kind} projection needs a (C, H, W) {role} population; "
                       f"{pop.name!r} has shape {list(pop.shape)}")

    if kind == "dense":
        reserve(ctx, where, 16 * P.n * Q.n, f"{P.n} x {Q.n} dense weights")
        w = _init_weight(ctx, where, kind, init, scale, (P.n, Q.n), rng)
        bias = np.full(Q.n, bias_value) if has_bias else None
        pr = wrap(ctx, where, Dense, w, pre_shape=P.shape, post_shape=Q.shape, bias=bias, **common)
    elif kind == "sparse":
        if ("p" in t) == ("fan_in" in t):
            fail(ctx, f"{where}: a sparse projection needs exactly one of 'p' (connection "
                       "probability) or 'fan_in' (synapses per post neuron)")
        bias = np.full(Q.n, bias_value) if has_bias else None
        cseed = int(rng.integers(2 ** 63))
        if "p" in t:
            p = get_real(ctx, t, "p", where, None)
            if 0.0 <= p <= 1.0:
                reserve(ctx, where, 32 * (p * P.n * Q.n + P.n),
                         f"about {p * P.n * Q.n:.0f} sparse synapses")
            allow_self = t.get("allow_self", True)
            if not isinstance(allow_self, bool):
                fail(ctx, f"{where}: allow_self must be true or false, got {allow_self!r}")
            pr = wrap(ctx, where, Sparse.fixed_probability, P.n, Q.n, p, 1.0, seed=cseed,
                       allow_self=allow_self, pre_shape=P.shape, post_shape=Q.shape, bias=bias,
                       **common)
            fan_in = p * P.n
        else:
            if "allow_self" in t:
                fail(ctx, f"{where}: allow_self applies to 'p' connectivity only")
            k = get_int(ctx, t, "fan_in", where, None, low=0)
            if k > P.n:
                fail(ctx, f"{where}: fan_in must be <= n_pre = {P.n}, got {k}")
            reserve(ctx, where, 32 * k * Q.n, f"{k * Q.n} sparse synapses")
            pr = wrap(ctx, where, Sparse.fixed_fan_in, P.n, Q.n, k, 1.0, seed=cseed,
                       pre_shape=P.shape, post_shape=Q.shape, bias=bias, **common)
            fan_in = k
        nnz = pr.indices.shape[0]
        w = _base(init, nnz, rng)
        if init == "kaiming_normal":
            w = w * math.sqrt(2.0 / max(fan_in, 1e-12))
        elif init == "uniform_unit_norm":
            post_idx = pr.indices.astype(np.int64)
            norm = np.sqrt(np.bincount(post_idx, w * w, minlength=Q.n))
            w = np.divide(w, norm[post_idx], out=np.zeros_like(w), where=norm[post_idx] > 0)
        with np.errstate(over="ignore"):           # an overflow is reported below
            w = scale * w
        wrap(ctx, where, pr.set_weight, w)
    elif kind in ("conv2d", "conv_transpose2d"):
        need_chw("pre", P)
        need_chw("post", Q)
        kh, kw = get_pair(ctx, t, "kernel", where)
        stride = get_int(ctx, t, "stride", where, 1, low=1)
        padding = get_int(ctx, t, "padding", where, 0, low=0)
        Cin, Cout = P.shape[0], Q.shape[0]
        reserve(ctx, where, 48 * Cin * Cout * kh * kw, f"{Cin * Cout * kh * kw} kernel weights")
        bias = np.full(Cout, bias_value) if has_bias else None
        if kind == "conv2d":
            w = _init_weight(ctx, where, kind, init, scale, (Cout, Cin, kh, kw), rng)
            pr = wrap(ctx, where, Conv2d, w, pre_shape=P.shape, stride=stride, padding=padding,
                       bias=bias, **common)
        else:
            op = get_int(ctx, t, "output_padding", where, 0, low=0)
            w = _init_weight(ctx, where, kind, init, scale, (Cin, Cout, kh, kw), rng)
            pr = wrap(ctx, where, ConvTranspose2d, w, pre_shape=P.shape, stride=stride,
                       padding=padding, output_padding=op, bias=bias, **common)
    else:  # avgpool2d, sumpool2d
        need_chw("pre", P)
        need_chw("post", Q)
        if "kernel" not in t:
            fail(ctx, f"{where} is missing the required key 'kernel'")
        k = get_int(ctx, t, "kernel", where, None, low=1)
        stride = get_int(ctx, t, "stride", where, k, low=1)
        pr = wrap(ctx, where, PROJECTION_KINDS[kind], k, pre_shape=P.shape, stride=stride, **common)
    big = float(np.finfo(net.dtype).max)
    for what, a in list(pr.weight_arrays().items()) + [("bias", pr.bias)]:
        if a is not None and a.size and float(np.max(np.abs(a))) > big:
            fail(ctx, f"{where}: init_scale / bias_value give {what} values up to "
                       f"{float(np.max(np.abs(a))):.3g}, beyond the largest "
                       f"{np.dtype(net.dtype).name} ({big:.3g}); use smaller values")
    if tuple(pr.post_shape) != tuple(Q.shape):
        fail(ctx, f"{where}: the {kind} projection produces shape {list(pr.post_shape)} from "
                   f"{pre!r} of shape {list(P.shape)}, but post population {post!r} has shape "
                   f"{list(Q.shape)}")
    wrap(ctx, where, net.add_projection, name, pre, post, pr)


def model_from_dict(d, seed=0, *, source="<model dict>", default_name="model"):
    """Build a :class:`~neurosim.Network` from a parsed model dict (see module docstring).

    ``source`` names the dict in error messages (a file path when loading a file)."""
    ctx = {"source": source}
    if not isinstance(d, dict):
        fail(ctx, f"a model must be a table, got {type(d).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ModelError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    check_keys(ctx, d, TOP_KEYS, "the top-level table")
    fmt = d.get("format")
    if fmt is None:
        fail(ctx, f"the top-level table is missing the required key 'format' (= {FORMAT!r})")
    if fmt != FORMAT:
        fail(ctx, f"format is {fmt!r}; this neurosim reads {FORMAT!r}")
    name = get_str(ctx, d, "name", "the top-level table", required=False, default=default_name)
    desc = get_str(ctx, d, "description", "the top-level table", required=False, default="")
    dtype = get_str(ctx, d, "dtype", "the top-level table", required=False, default="float32")
    if dtype not in ("float32", "float64"):
        fail(ctx, f"dtype must be 'float32' or 'float64', got {dtype!r}")
    pops = d.get("populations")
    if not isinstance(pops, list) or not pops:
        fail(ctx, "a model needs at least one [[populations]] table")
    projs = d.get("projections", [])
    if not isinstance(projs, list):
        fail(ctx, f"projections must be an array of tables ([[projections]]), got {type(projs).__name__}")
    training = d.get("training", {})
    if not isinstance(training, dict):
        fail(ctx, f"training must be a table ([training]), got {type(training).__name__}")
    net = Network(dtype=np.dtype(dtype).type, name=name)
    used = set()
    for i, t in enumerate(pops):
        _population(ctx, net, i, t, used)
    for i, t in enumerate(projs):
        _projection(ctx, net, i, t, used, seed)
    if not net.spiking_populations:
        fail(ctx, "the model has no spiking population (kind "
                   f"{' or '.join(repr(k) for k in NEURON_KINDS)})")
    net.metadata = dict(model=name, description=desc, training=training, source=source,
                        seed=seed, spec=d)
    return net


# -- description (neurosim info) -------------------------------------------------------
def _neuron_params(p):
    if not p.spiking:
        return ""
    d = p.neuron.summary()
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items())


def model_info(net):
    """A JSON-able description of a network: populations, projections, totals."""
    pops = [dict(name=p.name, kind=p.kind, shape=list(p.shape), neurons=p.n,
                 params=_neuron_params(p),
                 ternary=p.ternary.to_dict() if p.spiking else None)
            for p in net.populations.values()]
    projs = []
    for q in net.projections.values():
        geo = {k: v for k, v in q.params().items()
               if k not in ("kind", "pre_shape", "post_shape", "delay", "port")}
        projs.append(dict(name=q.name, kind=q.kind, pre=q.pre, post=q.post, delay=q.delay,
                          port=q.port, input_map=net.populations[q.pre].kind == "input",
                          synapses=int(q.n_synapses), dense_macs=int(q.dense_macs),
                          parameters=int(sum(a.size for a in q.weight_arrays().values())),
                          bias=q.bias is not None, geometry=geo))
    meta = getattr(net, "metadata", None) or {}
    return dict(
        name=net.name, description=meta.get("description", ""), source=meta.get("source", ""),
        seed=meta.get("seed"), dtype=np.dtype(net.dtype).name,
        schedule=net.schedule(), backward_schedule=net.schedule(backward=True),
        populations=pops, projections=projs,
        totals=dict(populations=len(pops), neurons=sum(p["neurons"] for p in pops),
                    spiking_neurons=sum(p["neurons"] for p in pops
                                        if p["kind"] in NEURON_KINDS),
                    projections=len(projs), synapses=sum(q["synapses"] for q in projs),
                    dense_macs=sum(q["dense_macs"] for q in projs),
                    parameters=sum(q["parameters"] for q in projs)),
        training=meta.get("training", {}))


def _table(header, rows):
    cols = list(zip(*([header] + rows))) if rows else [[h] for h in header]
    w = [max(len(str(c)) for c in col) for col in cols]
    fmt = lambda r: "  ".join(str(c).rjust(w[i]) if isinstance(c, int) else str(c).ljust(w[i])
                              for i, c in enumerate(r)).rstrip()
    return [fmt(header), fmt(["-" * x for x in w])] + [fmt(r) for r in rows]


def format_model_info(info):
    """The text table printed by ``neurosim info``."""
    out = [f"model {info['name']!r} ({info['dtype']})"]
    if info["description"]:
        out.append(info["description"])
    if info["source"]:
        out.append(f"source: {info['source']}")
    out.append(f"schedule: {' -> '.join(info['schedule'])}   backward: "
               f"{' -> '.join(info['backward_schedule'])}")
    out.append("")
    out.append("populations")
    out += ["  " + l for l in _table(
        ["name", "kind", "shape", "neurons", "neuron parameters"],
        [[p["name"], p["kind"], "x".join(map(str, p["shape"])), p["neurons"], p["params"]]
         for p in info["populations"]])]
    out.append("")
    out.append("projections")
    rows = []
    for q in info["projections"]:
        geo = ", ".join(f"{k}={v}" for k, v in q["geometry"].items())
        kind = q["kind"] + (" (input map)" if q["input_map"] else "")
        rows.append([q["name"], kind, f"{q['pre']} -> {q['post']}", q["delay"], q["synapses"],
                     q["dense_macs"], q["parameters"], geo])
    out += ["  " + l for l in _table(
        ["name", "kind", "pre -> post", "delay", "synapses", "MACs/step", "parameters", "geometry"],
        rows)]
    t = info["totals"]
    out.append("")
    out.append(f"totals: {t['neurons']} neurons ({t['spiking_neurons']} spiking) in "
               f"{t['populations']} populations, {t['synapses']} synapses in {t['projections']} "
               f"projections, {t['dense_macs']} dense-equivalent MACs per step, "
               f"{t['parameters']} parameters")
    return "\n".join(out)
