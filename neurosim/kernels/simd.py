"""512-bit vector values for the row loops of the engine (Numba intrinsics).

LLVM vectorises a loop such as ``for k in range(n): buf[t + k] += W[a + k]`` with a main
body of 64 floats (16 lanes x 4 interleaved) and narrow or scalar remainder loops, so a
row of 40 floats (LeNet's second convolution) never reaches the main body, and a sum of
several rows kept in registers cannot be written as a loop at all.  These intrinsics
give the kernels vector values of one cache line — 16 float32 or 8 float64 lanes, the
``Vec`` type below — with masked loads and stores for the end of a row, so that a row
of any length is a few full vectors and one masked one, and partial sums stay in
registers across many rows (:func:`.scatter.rows_acc`).

Arithmetic is lane-wise IEEE in the array's dtype: ``vadd`` and ``vmul`` are single
``fadd`` / ``fmul`` instructions without fast-math flags (no contraction into a fused
multiply-add, no reassociation), so a lane computes exactly what the scalar expression
computes.  On a machine without AVX-512, LLVM splits the 512-bit operations into
narrower ones (same results).

Indices are unsigned offsets into the flat array (no wrap-around, no bounds check); a
masked load or store touches only the lanes ``0 .. n-1`` (``n <= 0``: none, ``n >=``
lanes: all), so it may start at any offset inside the array.
"""
import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, models, register_model

#: bytes of one vector value (one cache line, one AVX-512 register)
VBYTES = 64


class Vec(types.Type):
    """A vector of ``VBYTES`` bytes of ``dtype`` (float32: 16 lanes, float64: 8)."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.lanes = VBYTES // (dtype.bitwidth // 8)
        super().__init__(name=f"Vec{self.lanes}x{dtype}")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        be = ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), fe_type.lanes)
        super().__init__(dmm, fe_type, be)


def _check_array(arr, what):
    if not isinstance(arr, types.Array) or arr.dtype not in (types.float32, types.float64):
        raise TypeError(f"{what}: expected a float32 or float64 array, got {arr}")


def _ptr(context, builder, aty, arr, idx):
    a = context.make_array(aty)(context, builder, arr)
    return builder.gep(a.data, [idx])


def _splat(builder, value, lanes):
    vty = ir.VectorType(value.type, lanes)
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))


def _mask(builder, lanes, n):
    """``<lanes x i1>``: lane < n (signed)."""
    iota = ir.Constant(ir.VectorType(ir.IntType(64), lanes), list(range(lanes)))
    return builder.icmp_signed("<", iota, _splat(builder, n, lanes))


def _masked_fn(builder, vty, store):
    el = "f32" if isinstance(vty.element, ir.FloatType) else "f64"
    mty = ir.VectorType(ir.IntType(1), vty.count)
    if store:
        name = f"llvm.masked.store.v{vty.count}{el}.p0"
        fnty = ir.FunctionType(ir.VoidType(), [vty, ir.PointerType(), ir.IntType(32), mty])
    else:
        name = f"llvm.masked.load.v{vty.count}{el}.p0"
        fnty = ir.FunctionType(vty, [ir.PointerType(), ir.IntType(32), mty, vty])
    return cgutils.get_or_insert_function(builder.module, fnty, name)


def _align(arr):
    return ir.Constant(ir.IntType(32), arr.dtype.bitwidth // 8)


@intrinsic
def vlanes(typingctx, arr):
    """Lanes of a vector of ``arr``'s dtype (a compile-time constant)."""
    _check_array(arr, "vlanes")
    sig = types.int64(arr)

    def codegen(context, builder, signature, args):
        return ir.Constant(ir.IntType(64), VBYTES // (arr.dtype.bitwidth // 8))
    return sig, codegen


@intrinsic
def vloadm(typingctx, arr, idx, n):
    """``arr[idx : idx + n]`` in lanes ``0 .. n-1`` (all lanes when ``n >=`` lanes),
    0.0 in the others; memory outside those lanes is not read."""
    _check_array(arr, "vloadm")
    vt = Vec(arr.dtype)
    sig = vt(arr, types.uint64, types.int64)

    def codegen(context, builder, signature, args):
        p = _ptr(context, builder, signature.args[0], args[0], args[1])
        vty = context.get_value_type(vt)
        fn = _masked_fn(builder, vty, False)
        return builder.call(fn, [builder.bitcast(p, ir.PointerType()), _align(arr),
                                 _mask(builder, vt.lanes, args[2]), ir.Constant(vty, None)])
    return sig, codegen


@intrinsic
def vstorem(typingctx, arr, idx, v, n):
    """Store lanes ``0 .. n-1`` of ``v`` at ``arr[idx:]`` (the others are not written)."""
    _check_array(arr, "vstorem")
    if not isinstance(v, Vec) or v.dtype != arr.dtype:
        raise TypeError(f"vstorem: a vector of {arr.dtype} is needed, got {v}")
    sig = types.void(arr, types.uint64, v, types.int64)

    def codegen(context, builder, signature, args):
        p = _ptr(context, builder, signature.args[0], args[0], args[1])
        fn = _masked_fn(builder, args[2].type, True)
        builder.call(fn, [args[2], builder.bitcast(p, ir.PointerType()), _align(arr),
                          _mask(builder, v.lanes, args[3])])
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def vadd(typingctx, a, b):
    """Lane-wise ``a + b`` (one rounding per lane, as the scalar sum)."""
    if not isinstance(a, Vec) or a != b:
        raise TypeError(f"vadd: two vectors of one dtype are needed, got {a}, {b}")
    sig = a(a, b)

    def codegen(context, builder, signature, args):
        return builder.fadd(args[0], args[1])
    return sig, codegen


@intrinsic
def vmul(typingctx, a, b):
    """Lane-wise ``a * b`` (one rounding per lane, as the scalar product)."""
    if not isinstance(a, Vec) or a != b:
        raise TypeError(f"vmul: two vectors of one dtype are needed, got {a}, {b}")
    sig = a(a, b)

    def codegen(context, builder, signature, args):
        return builder.fmul(args[0], args[1])
    return sig, codegen


@intrinsic
def vsplat(typingctx, x, arr):
    """``x`` (converted to ``arr``'s dtype) in every lane of a vector of that dtype."""
    _check_array(arr, "vsplat")
    vt = Vec(arr.dtype)
    sig = vt(arr.dtype, arr)

    def codegen(context, builder, signature, args):
        return _splat(builder, args[0], vt.lanes)
    return sig, codegen


@intrinsic
def compact8(typingctx, ri, rv, rs, rch, u, lanes, m, idx0, c0, s, ssz):
    """Spike emission of one 64-bit word of eight 0/1 spike bytes (``kernels/emit``):
    its set lanes, in order, are ``lanes[m, 0 .. popcount(m)-1]`` (an int32 [256, 8]
    table, ``m`` the word's byte mask); eight ring records are stored at ``u`` (neuron
    ``idx0 + lane``, value +1, site ``s`` and channel ``c0 + lane``, wrapped once into
    the next site at ``ssz`` channels: ``ssz >= 8`` and ``c0 < ssz``).  Only the first
    popcount(m) records are meaningful; the caller advances ``u`` by that many, and the
    rest are overwritten by the next word or lie beyond the ring count (the caller
    guarantees ``u + 8`` stays inside the ring slot)."""
    for a, what in ((ri, "ri"), (rs, "rs"), (rch, "rch"), (lanes, "lanes")):
        if not isinstance(a, types.Array) or a.dtype != types.int32:
            raise TypeError(f"compact8: {what} must be an int32 array, got {a}")
    if not isinstance(rv, types.Array) or rv.dtype != types.int8:
        raise TypeError(f"compact8: rv must be an int8 array, got {rv}")
    sig = types.void(ri, rv, rs, rch, types.uint64, lanes, types.uint64, types.int64,
                     types.int64, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        ri_, rv_, rs_, rch_, u_, lanes_, m_, idx0_, c0_, s_, ssz_ = args
        at = signature.args
        i32 = ir.IntType(32)
        v8 = ir.VectorType(i32, 8)
        lp = _ptr(context, builder, at[5], lanes_, builder.mul(m_, ir.Constant(ir.IntType(64), 8)))
        lv = builder.load(builder.bitcast(lp, v8.as_pointer()), align=4)
        sp = lambda x: _splat(builder, builder.trunc(x, i32), 8)
        sz = sp(ssz_)
        ch = builder.add(lv, sp(c0_))
        wrap = builder.icmp_signed(">=", ch, sz)
        ch = builder.select(wrap, builder.sub(ch, sz), ch)
        site = builder.add(sp(s_), builder.zext(wrap, v8))
        idx = builder.add(lv, sp(idx0_))
        for arr, aty, val in ((ri_, at[0], idx), (rs_, at[2], site), (rch_, at[3], ch)):
            p = _ptr(context, builder, aty, arr, u_)
            builder.store(val, builder.bitcast(p, v8.as_pointer()), align=4)
        p = _ptr(context, builder, at[1], rv_, u_)
        ones = ir.Constant(ir.VectorType(ir.IntType(8), 8), [1] * 8)
        builder.store(ones, builder.bitcast(p, ones.type.as_pointer()), align=1)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def ctz64(typingctx, x):
    """Trailing zero bits of the uint64 ``x`` (its lowest set bit; 64 for 0)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(64), [ir.IntType(64), ir.IntType(1)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.cttz.i64")
        return builder.call(fn, [args[0], ir.Constant(ir.IntType(1), 0)])
    return sig, codegen


if numba.config.DISABLE_JIT:
    # NUMBA_DISABLE_JIT=1 runs the kernels as Python: the same operations on numpy
    # vectors (one rounding per lane in the array's dtype, as compiled)
    def vlanes(arr):
        return VBYTES // arr.itemsize

    def vloadm(arr, idx, n):
        v = np.zeros(VBYTES // arr.itemsize, arr.dtype)
        k = max(0, min(int(n), v.size))
        v[:k] = arr[int(idx):int(idx) + k]
        return v

    def vstorem(arr, idx, v, n):
        k = max(0, min(int(n), v.size))
        arr[int(idx):int(idx) + k] = v[:k]

    def vadd(a, b):
        return a + b

    def vmul(a, b):
        return a * b

    def vsplat(x, arr):
        return np.full(VBYTES // arr.itemsize, x, arr.dtype)

    def ctz64(x):
        x = int(x)
        return np.uint64((x & -x).bit_length() - 1 if x else 64)

    def compact8(ri, rv, rs, rch, u, lanes, m, idx0, c0, s, ssz):
        u = int(u)
        ln = lanes[int(m)].astype(np.int64)
        ch = ln + int(c0)
        wrap = ch >= int(ssz)
        ri[u:u + 8] = ln + int(idx0)
        rv[u:u + 8] = 1
        rs[u:u + 8] = int(s) + wrap
        rch[u:u + 8] = ch - int(ssz) * wrap
