"""A dense, clock-driven PyTorch implementation of one SPIDE training step (benchmark only).

This is the "dense framework" side of ``benchmarks/bench_training.py``: the same maths as
:func:`neurosim.training.spide.spide_step` (SPIDE, Xiao et al., Neural Networks 2023,
``shared/spec/SPIDE.md``), written the way a PyTorch user writes it and the way the
reference code runs it — every time step of both phases is a full dense tensor operation
(conv / conv-transpose / linear / avg-pool) on the whole batch, whether or not any neuron
spiked:

* forward, ``T`` steps in schedule order: ``u += I``; ``s = u >= θ``; ``u -= Θ s``;
  ``u *= λ``, with ``I`` = the input map ``F x + b`` (computed once), biases, and every
  incoming projection applied to its sender's spikes ``delay`` steps ago, times the
  projection's dropout mask;
* the readout + cross-entropy on the output rates, ``g = κ ∂L/∂a``;
* backward, ``T_b`` steps in the backward schedule: ternary couples ``w += I``;
  ``q = 1[w >= θ_b] - 1[w <= -θ_b]``; ``w -= Θ_b q``; ``w *= λ_b``, with ``I`` = ``g`` on
  the output plus every outgoing projection's transpose applied to
  ``q_post · (Θ_b/Θ) · m_post · mask``;
* local updates ``∇W = a_pre ⊗ (mask ⊙ m ⊙ β / Θ) / κ`` (computed with autograd on the
  linear map, i.e. the usual dense weight-gradient kernels), SGD with momentum and weight
  decay, the Frobenius cap.

It reads its weights from a :class:`neurosim.Network` (PyTorch layouts for conv weights;
dense weights are ``[n_pre, n_post]`` with neurosim's channel-last neuron order, so shaped
populations are permuted to NHWC before a dense map) and writes nothing back: the
benchmark keeps both copies in step by giving them the same weights and inputs.  PyTorch is
a benchmark-only dependency (``pip install torch==2.13.0``), never imported by neurosim.
"""
import math

import numpy as np
import torch
import torch.nn.functional as Fn


def _nchw(pop, flat):
    """neurosim flat channel-last [B, n] -> [B, C, H, W] (or [B, n] for 1-D populations)."""
    if len(pop.shape) == 3:
        C, H, W = pop.shape
        return flat.reshape(-1, H, W, C).permute(0, 3, 1, 2).contiguous()
    return flat


def _flat(pop, t):
    """[B, C, H, W] -> neurosim's channel-last flat [B, n]."""
    if t.dim() == 4:
        return t.permute(0, 2, 3, 1).reshape(t.shape[0], -1)
    return t


class TorchSPIDE:
    """A SPIDE network in dense PyTorch tensors (float32), built from a neurosim Network."""

    def __init__(self, net, C, c, cfg, output):
        self.net, self.cfg, self.output = net, cfg, output
        self.pops = net.populations
        self.inp = next(p.name for p in self.pops.values() if p.kind == "input")
        self.W, self.b = {}, {}
        for name, pr in net.projections.items():
            if pr.has_weights:
                self.W[name] = torch.tensor(np.asarray(pr.weight), dtype=torch.float32)
            if pr.bias is not None:
                self.b[name] = torch.tensor(np.asarray(pr.bias), dtype=torch.float32)
        self.raw = {k: self.W[k].clone() for k in cfg.norm_cap}
        self.C = torch.tensor(C, dtype=torch.float32)
        self.c = torch.tensor(c, dtype=torch.float32)
        self.buf = {}
        self.fsched = [n for n in net.schedule() if self.pops[n].spiking]
        self.bsched = [n for n in net.schedule(backward=True) if self.pops[n].spiking]
        self.into = {n: [pr for pr in net.projections.values() if pr.post == n
                         and self.pops[pr.pre].kind != "input"] for n in self.pops}
        self.outof = {n: [pr for pr in net.projections.values() if pr.pre == n
                          and self.pops[pr.post].spiking] for n in self.pops}
        self._cap()

    # -- maps ------------------------------------------------------------------------
    def fwd_map(self, pr, s, W=None):
        """The projection applied to (shaped) pre activity s."""
        W = self.W.get(pr.name) if W is None else W
        k = pr.kind
        if k == "conv2d":
            return Fn.conv2d(s, W, stride=pr.stride, padding=pr.padding)
        if k == "conv_transpose2d":
            return Fn.conv_transpose2d(s, W, stride=pr.stride, padding=pr.padding,
                                       output_padding=pr.output_padding)
        if k == "avgpool2d":
            return Fn.avg_pool2d(s, pr.kernel, pr.stride)
        if k == "dense":
            y = _flat(self.pops[pr.pre], s) @ W
            return _nchw(self.pops[pr.post], y)
        raise NotImplementedError(f"torch-dense benchmark has no {k!r} projection")

    def bwd_map(self, pr, v):
        """The transposed projection applied to (shaped) post values v -> pre shape."""
        k = pr.kind
        pre = self.pops[pr.pre]
        if k == "conv2d":
            W = self.W[pr.name]
            H = pre.shape[1]
            Ho = v.shape[2]
            op = H - ((Ho - 1) * pr.stride - 2 * pr.padding + W.shape[2])
            return Fn.conv_transpose2d(v, W, stride=pr.stride, padding=pr.padding,
                                       output_padding=op)
        if k == "conv_transpose2d":
            return Fn.conv2d(v, self.W[pr.name], stride=pr.stride, padding=pr.padding)
        if k == "avgpool2d":
            kk = pr.kernel
            return Fn.interpolate(v, scale_factor=kk, mode="nearest") / (kk * kk)
        if k == "dense":
            y = _flat(self.pops[pr.post], v) @ self.W[pr.name].T
            return _nchw(pre, y)
        raise NotImplementedError(k)

    def _bias(self, pr):
        b = self.b[pr.name]
        return b.view(1, -1, 1, 1) if len(self.pops[pr.post].shape) == 3 else b.view(1, -1)

    def _cap(self):
        for name, R in self.cfg.norm_cap.items():
            V = self.raw[name]
            n = float(torch.sqrt(torch.sum(V * V)))
            self.W[name] = V * (1.0 if n <= R else R / n)

    # -- one step --------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, x, masks):
        cfg, pops = self.cfg, self.pops
        B = x.shape[0]
        const = {n: 0.0 for n in self.fsched}
        for pr in self.net.projections.values():
            if pr.post not in const:
                continue
            add = 0.0
            if pops[pr.pre].kind == "input":
                add = self.fwd_map(pr, x)
            if pr.bias is not None:
                add = add + self._bias(pr)
            if pr.name in masks:
                add = add * masks[pr.name]
            const[pr.post] = const[pr.post] + add
        u, cnt, hist = {}, {}, {}
        maxd = max([pr.delay for pr in self.net.projections.values()] + [0])
        for n in self.fsched:
            shp = (B,) + tuple(pops[n].shape)
            u[n] = torch.zeros(shp)
            cnt[n] = torch.zeros(shp)
            hist[n] = [torch.zeros(shp) for _ in range(maxd + 1)]   # ring: s(t) at t % (maxd+1)
        R = maxd + 1
        for t in range(cfg.T):
            for n in self.fsched:
                nr = pops[n].neuron
                I = torch.zeros_like(u[n]) + const[n]
                for pr in self.into[n]:
                    if t - pr.delay < 0:
                        continue
                    y = self.fwd_map(pr, hist[pr.pre][(t - pr.delay) % R])
                    if pr.name in masks:
                        y = y * masks[pr.name]
                    I = I + y
                v = u[n] + I
                s = (v >= nr.v_th).float()
                v = v - nr.subtract * s
                if nr.leak != 1.0:
                    v = v * nr.leak
                u[n] = v
                cnt[n] += s
                hist[n][t % R] = s       # delay-d readers see s(t-d) (delay 0: updated earlier)
        return cnt

    @torch.no_grad()
    def backward(self, g_out, gate, masks):
        cfg, pops = self.cfg, self.pops
        B = g_out.shape[0]
        w, qsum, hist = {}, {}, {}
        maxd = max([pr.delay for pr in self.net.projections.values()] + [0])
        for n in self.bsched:
            shp = (B,) + tuple(pops[n].shape)
            w[n] = torch.zeros(shp)
            qsum[n] = torch.zeros(shp)
            hist[n] = [torch.zeros(shp) for _ in range(maxd + 1)]
        R = maxd + 1
        scale = {n: pops[n].ternary.subtract / pops[n].neuron.subtract for n in self.bsched}
        for t in range(cfg.T_b):
            for n in self.bsched:
                tn = pops[n].ternary
                I = g_out.clone() if n == self.output else torch.zeros_like(w[n])
                for pr in self.outof[n]:
                    if t - pr.delay < 0:
                        continue
                    q = hist[pr.post][(t - pr.delay) % R]
                    v = q * (scale[pr.post] * gate[pr.post])
                    if pr.name in masks:
                        v = v * masks[pr.name]
                    I = I + self.bwd_map(pr, v)
                x = w[n] + I
                q = (x >= tn.v_th).float() - (x <= -tn.v_th).float()
                x = x - tn.subtract * q
                if tn.leak != 1.0:
                    x = x * tn.leak
                w[n] = x
                qsum[n] += q
                hist[n][t % R] = q
        return {n: qsum[n] * (pops[n].ternary.subtract / cfg.T_b) for n in self.bsched}

    def step(self, x, y, masks, lr):
        """One training step; returns (forward counts, backward β) as torch tensors."""
        cfg, pops = self.cfg, self.pops
        cnt = self.forward(x, masks)
        a = {n: cnt[n] / cfg.T for n in cnt}
        m = {n: ((cnt[n] >= 1) & (cnt[n] <= cfg.T - 1)).float() for n in cnt}
        # readout + cross-entropy (batch mean), gradient wrt the output rates
        a_out = _flat(pops[self.output], a[self.output]).clone().requires_grad_(True)
        C = self.C.clone().requires_grad_(True)
        c = self.c.clone().requires_grad_(True)
        loss = Fn.cross_entropy(a_out @ C.T + c, y)
        loss.backward()
        g = _nchw(pops[self.output], a_out.grad * cfg.kappa)
        beta = self.backward(g, m, masks)
        grads = {"readout.C": C.grad, "readout.c": c.grad}
        # local weight updates: ∇W = a_pre ⊗ (mask ⊙ m ⊙ β / Θ) / κ through autograd of the map
        for name, pr in self.net.projections.items():
            if not (pr.has_weights or pr.bias is not None):
                continue
            d = m[pr.post] * beta[pr.post] / pops[pr.post].neuron.subtract
            if pr.name in masks:
                d = d * masks[pr.name]
            a_pre = x if pops[pr.pre].kind == "input" else a[pr.pre]
            with torch.enable_grad():
                Wt = self.W[name].clone().requires_grad_(True) if pr.has_weights else None
                bt = self.b[name].clone().requires_grad_(True) if pr.bias is not None else None
                out = self.fwd_map(pr, a_pre, Wt) if Wt is not None else 0.0
                if bt is not None:
                    out = out + (bt.view(1, -1, 1, 1) if d.dim() == 4 else bt.view(1, -1))
                torch.autograd.backward(out, d)
            if Wt is not None:
                grads[f"{name}.weight"] = Wt.grad / cfg.kappa
            if bt is not None:
                grads[f"{name}.bias"] = bt.grad / cfg.kappa
        # SGD with momentum and weight decay (PyTorch semantics); Frobenius cap
        with torch.no_grad():
            for key, gr in grads.items():
                name, what = key.rsplit(".", 1)
                if name == "readout":
                    p = self.C if what == "C" else self.c
                elif what == "weight":
                    p = self.raw.get(name, self.W[name])
                    if name in self.raw:
                        R = cfg.norm_cap[name]
                        V = self.raw[name]
                        n = float(torch.sqrt(torch.sum(V * V)))
                        if n > R:
                            gr = (R / n) * (gr - (torch.sum(gr * V) / (n * n)) * V)
                else:
                    p = self.b[name]
                dd = gr + cfg.weight_decay * p
                bf = self.buf.get(key)
                bf = dd.clone() if bf is None else cfg.momentum * bf + dd
                self.buf[key] = bf
                p -= lr * bf
            self._cap()
        return cnt, beta


def masks_nchw(net, masks):
    """neurosim dropout masks ([B, n_post], channel-last) -> torch tensors in NCHW."""
    out = {}
    for k, mk in masks.items():
        pop = net.populations[net.projections[k].post]
        out[k] = _nchw(pop, torch.tensor(np.asarray(mk), dtype=torch.float32))
    return out


def counts_flat(net, cnt):
    """torch forward counts -> neurosim's flat channel-last int arrays."""
    return {n: _flat(net.populations[n], t).numpy().astype(np.int64) for n, t in cnt.items()}


__all__ = ["TorchSPIDE", "masks_nchw", "counts_flat", "math"]
