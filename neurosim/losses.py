r"""Classification losses for spiking output layers, with their gradients (numpy, float64).

Every loss takes per-sample quantities of a batch of ``B`` samples and ``K`` classes and
returns a :class:`typing.NamedTuple` whose first two fields are

``per_sample`` : float64 [B]
    each sample's contribution to the reduced loss (see *Reduction* below); the reduced
    (scalar) loss is ``per_sample.sum()``, also available as the property ``.loss``.
``grad`` : float64 [B, K] (or [B, n] for the readout)
    the exact derivative of that reduced loss with respect to the output *rates*
    :math:`a_k = N_k / T` — the quantity a rate-based backward pass (SPIDE's ternary
    neurons, which integrate a constant current :math:`g = \kappa\, \partial L/\partial a`)
    needs.  Count units follow from
    :math:`\partial L/\partial N_k = (1/T)\, \partial L/\partial a_k`.

so ``per_sample, grad = spikemax(...)`` unpacks as in the spec.

Reduction
---------
``'sum'``
    :math:`L = \sum_b L_b` (sliding window: :math:`\sum_b \sum_t L_{b,t}`); ``per_sample[b] = L_b``.
``'mean'``
    the same sum divided by the number of classification terms: by ``B`` for the global
    losses, the readout and the rate MSE, by ``B*T`` for :func:`spikemax_sliding` (every
    step is one classification).  ``per_sample[b] = L_b / B`` (resp. ``/ (B*T)``) and
    ``grad`` carries the same factor.  lava-dl's ``SpikeRate`` with ``reduction='mean'``
    (a torch MSE mean) divides by ``B*K`` instead: that is this module's ``'mean'`` / K.

Labels ``y`` are integer class indices in ``[0, K)`` (one-hot target :math:`q = e_y`).

Sources: Spikemax (Shrestha, Zhu, Sun, IJCNN 2022, arXiv:2205.09845) — its formulas are
taken from the authors' reference code (repo ``sunpengfei1122/Spikemax``, file ``loss``)
and Intel lava-dl (``lava/lib/dl/slayer/loss.py``, ``classifier.py``), because the paper's
full text was not available (``shared/spec/SPIKEMAX.md``); SLAYER's spike-count loss
(Shrestha & Orchard, NeurIPS 2018; slayerPytorch ``spikeLoss.py``); SPIDE's readout
(Xiao et al., Neural Networks 2023, arXiv:2302.00232; ``shared/spec/SPIDE.md`` section 4).
``docs/losses.md`` has the table of every loss and the choices made here.
"""
from typing import NamedTuple

import numpy as np

from . import _validate as V
from ._validate import NeurosimError

__all__ = ["LossResult", "SlidingLossResult", "ReadoutResult", "cross_entropy_readout",
           "spikemax", "spikemax_sliding", "rate_mse", "window_counts", "predict",
           "predict_sliding", "accuracy", "REDUCTIONS", "SPIKEMAX_MODES",
           "SLIDING_GRADIENTS", "RATE_MSE_FORMS", "SILENT_RULES", "LAVA_EPS"]

#: allowed ``reduction`` values.
REDUCTIONS = ("sum", "mean")
#: allowed ``mode`` values of :func:`spikemax` and :func:`spikemax_sliding`.
SPIKEMAX_MODES = ("prob", "softmax")
#: allowed ``gradient`` values of :func:`spikemax_sliding`.
SLIDING_GRADIENTS = ("exact", "authors")
#: allowed ``form`` values of :func:`rate_mse`.
RATE_MSE_FORMS = ("lava", "slayer")
#: allowed ``silent`` values of :func:`predict` and :func:`predict_sliding`.
SILENT_RULES = ("wrong", "argmax")
#: lava-dl's constant in the probability denominator, :math:`p = a / (\sum a + 10^{-6})`.
LAVA_EPS = 1e-6


class LossResult(NamedTuple):
    """Result of a global loss: per-sample contributions and dL/da."""

    #: float64 [B]: contribution of each sample to the reduced loss.
    per_sample: np.ndarray
    #: float64 [B, K]: derivative of the reduced loss with respect to the rates a.
    grad: np.ndarray

    @property
    def loss(self):
        """The reduced (scalar) loss, ``per_sample.sum()``."""
        return float(self.per_sample.sum())


class SlidingLossResult(NamedTuple):
    """Result of :func:`spikemax_sliding`."""

    #: float64 [B]: contribution of each sample (summed over its steps) to the reduced loss.
    per_sample: np.ndarray
    #: float64 [B, K]: time-sum of ``grad_spikes``, the dL/da a rate-based trainer injects.
    grad: np.ndarray
    #: float64 [B, T, K]: dL/ds, per output spike (exact window transpose or authors').
    grad_spikes: np.ndarray
    #: float64 [B, T]: contribution of each step; ``per_step.sum(1) == per_sample``.
    per_step: np.ndarray

    @property
    def loss(self):
        """The reduced (scalar) loss, ``per_sample.sum()``."""
        return float(self.per_sample.sum())


class ReadoutResult(NamedTuple):
    """Result of :func:`cross_entropy_readout`."""

    #: float64 [B]: contribution of each sample to the reduced loss.
    per_sample: np.ndarray
    #: float64 [B, n]: dL/da, derivative with respect to the readout's input rates.
    grad: np.ndarray
    #: float64 [K, n]: dL/dC, gradient of the readout weight.
    grad_C: np.ndarray
    #: float64 [K]: dL/dc, gradient of the readout bias.
    grad_c: np.ndarray

    @property
    def loss(self):
        """The reduced (scalar) loss, ``per_sample.sum()``."""
        return float(self.per_sample.sum())


# --------------------------------------------------------------------------- validation

def _numeric(x, name, ndim):
    """float64 C-contiguous array of ``ndim`` dimensions, finite, at least one row."""
    x = V.check_array(x, name, ndim=ndim)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {x.dtype}")
    if x.shape[0] < 1:
        raise NeurosimError(f"{name} must hold at least one sample (B >= 1), got shape {x.shape}")
    if any(s < 1 for s in x.shape[1:]):
        raise NeurosimError(f"{name} must have non-empty dimensions, got shape {x.shape}")
    return x.astype(np.float64, copy=False)


def _in_range(x, name, low, high, what):
    bad = (x < low) | (x > high)
    if bad.any():
        i = tuple(int(j) for j in np.argwhere(bad)[0])
        allowed = f">= {low:g}" if high == np.inf else f"in [{low:g}, {high:g}]"
        raise NeurosimError(f"{name} must hold {what} {allowed}, got {float(x[i])!r} "
                            f"at index {i}")


def _labels(y, B, K, T=None, name="y"):
    """int64 labels of shape (B,) — or (B,) / (B, T) when ``T`` is given (per-step)."""
    if not isinstance(y, np.ndarray):
        y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class indices, got {V._describe(y)}")
    shapes = [(B,)] if T is None else [(B,), (B, T)]
    if y.shape not in shapes:
        allowed = " or ".join(str(s) for s in shapes)
        raise NeurosimError(f"{name} must have shape {allowed} (one label per sample"
                            f"{'' if T is None else ', or per sample and step'}), got {y.shape}")
    bad = (y < 0) | (y >= K)
    if bad.any():
        i = tuple(int(j) for j in np.argwhere(bad)[0])
        raise NeurosimError(f"{name} must hold class indices in [0, K) = [0, {K}), got {y[i]} "
                            f"at index {i}")
    return y.astype(np.int64, copy=False)


def _flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {V._describe(value)}")
    return bool(value)


def _scale(reduction, n_terms):
    V.check_choice(reduction, "reduction", REDUCTIONS)
    return 1.0 if reduction == "sum" else 1.0 / n_terms


def _window(W, T):
    W = V.check_int(W, "W")
    if not 1 <= W <= T:
        raise NeurosimError(f"W must be in [1, T] = [1, {T}] (window length in steps), got {W}")
    return W


# --------------------------------------------------------------------------- kernels

def _pick(x, y):
    """x[..., y] along the last axis (y has x's leading shape)."""
    return np.take_along_axis(x, y[..., None], axis=-1)[..., 0]


def _onehot(y, K):
    return (y[..., None] == np.arange(K)).astype(np.float64)


def _prob_nll(a, y, floor, clamp, eps, where):
    """Count-normalised NLL on rates ``a`` [..., K]; returns (L [...], dL/da [..., K])."""
    q = _onehot(y, a.shape[-1])
    if clamp:
        at = np.maximum(a, floor)                      # a~ = max(a, 1/T): counts >= 1
        S = at.sum(-1, keepdims=True)
        p = at / S
        L = np.log(S[..., 0]) - np.log(_pick(at, y))
        return L, (p - q) / at                         # straight-through the clamp
    ay = _pick(a, y)
    if (ay <= 0).any():
        i = tuple(int(j) for j in np.argwhere(ay <= 0)[0])
        i = i[0] if len(i) == 1 else i
        raise NeurosimError(
            f"clamp=False: the true class is silent (rate 0) at {where} {i}, where the "
            f"unclamped loss -log(a_y / (sum(a) + eps)) is +inf; use clamp=True (the authors' "
            f"rule, counts clamped to >= 1) or make sure the true class fires")
    S = a.sum(-1, keepdims=True) + eps
    L = np.log(S[..., 0]) - np.log(ay)
    return L, 1.0 / S - q / np.where(q > 0, a, 1.0)


def _softmax_nll(z, y):
    """NLL of softmax(z) [..., K] with a max-subtracted log-sum-exp; returns (L, p - q)."""
    m = z.max(-1, keepdims=True)
    e = np.exp(z - m)
    s = e.sum(-1, keepdims=True)
    L = (np.log(s) + m)[..., 0] - _pick(z, y)
    return L, e / s - _onehot(y, z.shape[-1])


# --------------------------------------------------------------------------- readout

def cross_entropy_readout(a, y, C, c, reduction="mean"):
    r"""Cross-entropy of a linear readout of output rates (SPIDE's loss).

    .. math::

        z_b = C a_b + c, \qquad
        L_b = -\log \operatorname{softmax}(z_b)_{y_b}
            = \log \sum_k e^{z_{bk}} - z_{b y_b}

    computed with the maximum logit subtracted before exponentiation.  With
    :math:`p_b = \operatorname{softmax}(z_b)`, :math:`q_b = e_{y_b}` and the reduction
    factor :math:`r` (1 for ``'sum'``, :math:`1/B` for ``'mean'``):

    .. math::

        \frac{\partial L}{\partial a_b} = r\, C^\top (p_b - q_b), \qquad
        \frac{\partial L}{\partial C} = r \sum_b (p_b - q_b)\, a_b^\top, \qquad
        \frac{\partial L}{\partial c} = r \sum_b (p_b - q_b).

    Parameters
    ----------
    a : array_like, float [B, n]
        Rates (or weighted rates) of the ``n`` output-layer neurons; any finite reals.
    y : array_like, int [B]
        Class labels in ``[0, K)``.
    C : array_like, float [K, n]
        Readout weight (a ``torch.nn.Linear(n, K).weight``).
    c : array_like, float [K]
        Readout bias.
    reduction : {'mean', 'sum'}
        ``'mean'`` (default, as ``torch.nn.CrossEntropyLoss`` in SPIDE's scripts) divides
        the sum over the batch by ``B``.

    Returns
    -------
    ReadoutResult
        ``(per_sample [B], grad = dL/da [B, n], grad_C [K, n], grad_c [K])``.  SPIDE's
        backward current is :math:`g = \kappa\,` ``grad`` (loss scale κ); the readout itself
        is trained by ordinary gradient descent on ``grad_C``, ``grad_c``.

    Raises
    ------
    NeurosimError
        On shape mismatches, NaN/inf, labels outside ``[0, K)``, an unknown reduction.
    TypeError
        On non-numeric arrays or non-integer labels.

    References
    ----------
    M. Xiao, Q. Meng, Z. Zhang, Y. Wang, Z. Lin, "SPIDE: A purely spike-based method for
    training feedback spiking neural networks", Neural Networks 161 (2023);
    arXiv:2302.00232 (reference code ``pkuxmq/SPIDE-FSNN``).
    """
    a = _numeric(a, "a", 2)
    B, n = a.shape
    C = _numeric(C, "C", 2)
    if C.shape[1] != n:
        raise NeurosimError(f"C must have shape (K, n) with n = {n} (the width of a), "
                            f"got {C.shape}")
    K = C.shape[0]
    c = V.check_array(c, "c", ndim=1)
    if c.dtype.kind not in "biuf":
        raise TypeError(f"c must be a real numeric array, got dtype {c.dtype}")
    if c.shape != (K,):
        raise NeurosimError(f"c must have shape (K,) = ({K},) (one bias per row of C), "
                            f"got {c.shape}")
    c = c.astype(np.float64, copy=False)
    y = _labels(y, B, K)
    r = _scale(reduction, B)
    L, pq = _softmax_nll(a @ C.T + c, y)
    G = r * pq                                           # dL/dz [B, K]
    return ReadoutResult(r * L, G @ C, G.T @ a, G.sum(0))


# --------------------------------------------------------------------------- spikemax

def spikemax(counts, y, T, mode="prob", beta=1.0, clamp=True, eps=LAVA_EPS, reduction="sum"):
    r"""Global Spikemax: negative log-likelihood of a class distribution built from spike counts.

    With rates :math:`a_k = N_k / T` and one-hot target :math:`q = e_y`,
    :math:`L = -\log p_y`, and:

    ``mode='prob'``, ``clamp=True`` (default; the authors' reference code)
        .. math::

            \tilde a_k = \max(a_k, 1/T) \;(\Leftrightarrow \tilde N_k = \max(N_k, 1)), \quad
            p_k = \frac{\tilde a_k}{\sum_j \tilde a_j}, \quad
            \frac{\partial L}{\partial a_k} = \frac{p_k - q_k}{\tilde a_k}.

        The gradient passes *straight through* the clamp, as the authors' backward does:
        a silent true class gets :math:`(p_y - 1)\,T < 0` and is pushed to fire (the true
        derivative of the clamped loss would be 0 there).  Where no clamp is active it is
        the exact derivative; then :math:`\partial L/\partial a_k = 1/S` for every wrong
        class and :math:`1/S - 1/a_y` for the true one (:math:`S = \sum_j a_j`).  p is
        scale-invariant, so :math:`\sum_k a_k\, \partial L/\partial a_k = 0`.  A silent
        output layer gives a uniform p and :math:`L = \log K`.
    ``mode='prob'``, ``clamp=False`` (lava-dl's ``SpikeMax(mode='probability')``)
        .. math::

            p_k = \frac{a_k}{\sum_j a_j + \varepsilon}, \qquad
            \frac{\partial L}{\partial a_k} = \frac{1}{\sum_j a_j + \varepsilon} - \frac{q_k}{a_k},

        exact everywhere it is finite.  ε (``eps``, default :data:`LAVA_EPS` = 1e-6 as in
        lava) is added to the sum of *rates*, not counts; ``eps=0`` gives the exactly
        scale-invariant form.  A silent true class makes the loss +inf: this raises.
    ``mode='softmax'`` (lava's ``'softmax'``/``'logsoftmax'``, with a temperature)
        .. math::

            p = \operatorname{softmax}(\beta a), \qquad
            \frac{\partial L}{\partial a_k} = \beta (p_k - q_k).

        Shift-invariant (:math:`\sum_k \partial L/\partial a_k = 0`).  lava uses β = 1, which
        caps :math:`p_y \le e/(e + K - 1)`, i.e. :math:`L \ge \ln(1 + (K-1)/e)` (1.461150
        for K = 10); β = T is the softmax of the counts.

    Parameters
    ----------
    counts : array_like [B, K]
        Output spike counts :math:`N_k \in [0, T]` (integers, or non-negative reals as a
        continuous relaxation, e.g. for gradient checks).
    y : array_like, int [B]
        Class labels in ``[0, K)``.
    T : int
        Number of time steps (>= 1); :math:`a = N / T`.
    mode : {'prob', 'softmax'}
        Count-normalised probability or softmax of the rates.
    beta : float
        Softmax temperature (> 0).  Used only when ``mode='softmax'``.
    clamp : bool
        ``mode='prob'`` only: the authors' clamp (True) or lava's unclamped form (False).
    eps : float
        ``mode='prob', clamp=False`` only: ε >= 0 in the denominator.
    reduction : {'sum', 'mean'}
        ``'sum'`` (default, as lava) sums :math:`L_b` over the batch; ``'mean'`` divides it
        by ``B``.

    Returns
    -------
    LossResult
        ``(per_sample [B], grad = dL/da [B, K])``.  Count units: :math:`\partial L /
        \partial N = ` ``grad / T``, which SLAYER-style trainers apply at every time step
        (:math:`\partial L/\partial s_k[t] = \partial L/\partial N_k`).

    Raises
    ------
    NeurosimError
        On shape mismatches, NaN/inf, counts outside ``[0, T]``, labels outside
        ``[0, K)``, ``T < 1``, ``beta <= 0``, ``eps < 0``, unknown ``mode``/``reduction``,
        or a silent true class with ``clamp=False``.
    TypeError
        On non-numeric counts, non-integer labels or ``T``, a non-bool ``clamp``.

    References
    ----------
    S. B. Shrestha, L. Zhu, P. Sun, "Spikemax: Spike-based loss methods for classification",
    IJCNN 2022; arXiv:2205.09845.  Authors' code: ``sunpengfei1122/Spikemax``, file
    ``loss`` (``globalProbSpikes``); Intel lava-dl ``lava/lib/dl/slayer/loss.py``
    (``SpikeMax``).
    """
    T = V.check_int(T, "T", low=1)
    counts = _numeric(counts, "counts", 2)
    B, K = counts.shape
    _in_range(counts, "counts", 0, T, "spike counts")
    y = _labels(y, B, K)
    V.check_choice(mode, "mode", SPIKEMAX_MODES)
    beta = V.check_real(beta, "beta", positive=True)
    clamp = _flag(clamp, "clamp")
    eps = V.check_real(eps, "eps", nonneg=True)
    r = _scale(reduction, B)
    a = counts / T
    if mode == "prob":
        L, grad = _prob_nll(a, y, 1.0 / T, clamp, eps, "sample")
    else:
        L, pq = _softmax_nll(beta * a, y)
        grad = beta * pq
    return LossResult(r * L, r * grad)


def window_counts(spikes, W):
    r"""Causal moving-window spike counts with zero history.

    .. math::

        c_k[t] = \sum_{j=0}^{W-1} s_k[t-j], \qquad s_k[t] = 0 \text{ for } t < 0.

    The first ``W-1`` windows are partial (lava's FIR filter; the losses still divide them
    by W).  ``W = 1`` returns the spikes, ``W = T`` the running count (last step = N).

    Parameters
    ----------
    spikes : array_like [B, T, K]
        Output spikes in [0, 1] (binary; reals accepted as a relaxation).
    W : int
        Window length in steps, ``1 <= W <= T``.

    Returns
    -------
    ndarray, float64 [B, T, K]
        Window counts (exact integers for binary spikes).
    """
    s = _spikes(spikes)
    return _window_sum(s, _window(W, s.shape[1]))


def _spikes(spikes):
    s = _numeric(spikes, "spikes", 3)
    _in_range(s, "spikes", 0, 1, "spikes (binary, or relaxed to reals)")
    return s


def _window_sum(s, W):
    cs = np.cumsum(s, axis=1)
    c = cs.copy()
    c[:, W:] -= cs[:, :-W]
    return c


def spikemax_sliding(spikes, y, W, mode="prob", beta=1.0, gradient="exact", clamp=True,
                     eps=LAVA_EPS, reduction="sum"):
    r"""Sliding-window Spikemax: one classification per time step, summed over time.

    With window counts :math:`c_k[t]` (:func:`window_counts`), window rates
    :math:`a_k[t] = c_k[t]/W` (partial windows also divided by W) and per-step targets
    :math:`q[t]` (a label of shape ``(B,)`` is repeated over the T steps):

    .. math::

        L = \sum_t -\log p_{y[t]}[t], \qquad
        g_k[t] = \frac{\partial L}{\partial c_k[t]} =
        \begin{cases}
            (p_k[t] - q_k[t]) / \tilde c_k[t],
                & p[t] = \tilde c[t] / \textstyle\sum_j \tilde c_j[t],\;
                  \tilde c = \max(c, 1) \quad (\texttt{prob}) \\
            \beta\,(p_k[t] - q_k[t]) / W,
                & p[t] = \operatorname{softmax}(\beta a[t]) \quad (\texttt{softmax})
        \end{cases}

    The ``prob`` line passes straight through the clamp, as in :func:`spikemax`.  With
    ``clamp=False`` it is lava's :math:`p[t] = a[t]/(\sum_j a_j[t] + \varepsilon)` and
    :math:`g_k[t] = \big(1/(\sum_j a_j[t] + \varepsilon) - q_k[t]/a_k[t]\big)/W`.  The
    gradient with respect to the spikes is

    ``gradient='exact'`` (default)
        the transpose of the causal window (a correlation), what autograd computes in lava:

        .. math::

            \frac{\partial L}{\partial s_k[\tau]} = \sum_{t=\tau}^{\min(T-1,\,\tau+W-1)} g_k[t]

        (exact wherever no clamp is active; checked against finite differences).
    ``gradient='authors'``
        the authors' ``runningProbSpikes`` shortcut :math:`\partial L/\partial s_k[\tau] =
        g_k[\tau]`: right sign, no spreading over the window, smaller magnitude.  In softmax
        mode the same shortcut is applied to the softmax g (the authors have no softmax path).

    **What ``grad`` is, and how a rate-based trainer uses it.**  SPIDE's backward sees one
    rate :math:`a_k = \frac{1}{T}\sum_\tau s_k[\tau]` per neuron and injects one constant
    current for all steps.  Under that rate approximation every step's spike has the same
    sensitivity to a parameter θ, :math:`\partial s_k[\tau]/\partial\theta \approx
    \partial a_k/\partial\theta`, so

    .. math::

        \frac{\partial L}{\partial \theta} = \sum_\tau \frac{\partial L}{\partial s_k[\tau]}
            \frac{\partial s_k[\tau]}{\partial \theta}
        \approx \Big(\sum_\tau \frac{\partial L}{\partial s_k[\tau]}\Big)
            \frac{\partial a_k}{\partial\theta}
        \quad\Rightarrow\quad
        \texttt{grad}_k = \sum_{\tau=0}^{T-1} \frac{\partial L}{\partial s_k[\tau]}.

    Equivalently, ``grad`` is the derivative of L along :math:`s_k[\tau] \mathrel{+}=
    \epsilon` for all τ, which raises :math:`a_k` by ε (tested by finite differences on
    constant spike trains).  It is T times the time-average of ``grad_spikes``; that
    average is the count-unit value (:math:`\partial L/\partial N`) a SLAYER-style trainer
    would apply at every step.  For the global loss this reproduces :func:`spikemax`'s
    ``grad`` (every :math:`\partial L/\partial s[\tau]` equals :math:`\partial L/\partial N`
    and T of them sum to :math:`\partial L/\partial a`).  With ``gradient='exact'``,
    :math:`\texttt{grad}_k = \sum_t \min(W, t+1)\, g_k[t]`; with ``'authors'``,
    :math:`\sum_t g_k[t]`.

    Parameters
    ----------
    spikes : array_like [B, T, K]
        Output spikes in [0, 1] (binary; reals accepted as a relaxation, e.g. for
        gradient checks).
    y : array_like, int [B] or [B, T]
        Class labels in ``[0, K)``, per sample (repeated over time) or per step.
    W : int
        Window length in steps, ``1 <= W <= T``.
    mode : {'prob', 'softmax'}
        Per-step count-normalised probability or softmax of the window rates.
    beta : float
        Softmax temperature (> 0), ``mode='softmax'`` only (lava: 1).
    gradient : {'exact', 'authors'}
        Spike gradient: window transpose (default) or the authors' per-step shortcut.
    clamp : bool
        ``mode='prob'`` only: window counts clamped to >= 1 (authors) or lava's unclamped
        form, which raises if the true class's window is empty at some step.
    eps : float
        ``mode='prob', clamp=False`` only: ε >= 0 added to :math:`\sum_j a_j[t]`.
    reduction : {'sum', 'mean'}
        ``'sum'`` (default, as lava) sums over samples and steps; ``'mean'`` divides that
        sum by ``B*T``.

    Returns
    -------
    SlidingLossResult
        ``(per_sample [B], grad [B, K], grad_spikes [B, T, K], per_step [B, T])``, all with
        the reduction factor applied.

    Raises
    ------
    NeurosimError
        On shape mismatches, NaN/inf, spikes outside [0, 1], labels outside ``[0, K)``,
        ``W`` outside ``[1, T]``, unknown ``mode``/``gradient``/``reduction``, or a silent
        true-class window with ``clamp=False``.
    TypeError
        On non-numeric spikes, non-integer labels or ``W``, a non-bool ``clamp``.

    References
    ----------
    S. B. Shrestha, L. Zhu, P. Sun, "Spikemax: Spike-based loss methods for classification",
    IJCNN 2022; arXiv:2205.09845.  Authors' code ``sunpengfei1122/Spikemax`` (``loss``,
    ``runningProbSpikes``); lava-dl ``SpikeMax(moving_window=W)`` and
    ``classifier.MovingWindow`` (window branch fixed in lava-dl PR #144).
    """
    s = _spikes(spikes)
    B, T, K = s.shape
    W = _window(W, T)
    y = _labels(y, B, K, T=T)
    V.check_choice(mode, "mode", SPIKEMAX_MODES)
    beta = V.check_real(beta, "beta", positive=True)
    V.check_choice(gradient, "gradient", SLIDING_GRADIENTS)
    clamp = _flag(clamp, "clamp")
    eps = V.check_real(eps, "eps", nonneg=True)
    r = _scale(reduction, B * T)
    y = np.broadcast_to(y[:, None], (B, T)) if y.ndim == 1 else y
    a = _window_sum(s, W) / W
    if mode == "prob":
        L, dLda = _prob_nll(a, y, 1.0 / W, clamp, eps, "(sample, step)")
        g = dLda / W                                    # per window count
    else:
        L, pq = _softmax_nll(beta * a, y)
        g = (beta / W) * pq
    g *= r
    if gradient == "exact":                             # transpose of the causal window
        R = np.zeros((B, T + W, K))
        R[:, :T] = np.cumsum(g[:, ::-1], axis=1)[:, ::-1]   # R[t] = sum_{t' >= t} g[t']
        ds = R[:, :T] - R[:, W:W + T]
    else:
        ds = g
    per_step = r * L
    return SlidingLossResult(per_step.sum(1), ds.sum(1), ds, per_step)


# --------------------------------------------------------------------------- rate MSE

def rate_mse(a, y, true_rate, false_rate, form="lava", T=None, reduction="sum"):
    r"""Squared error between output rates and per-class target rates (the baseline losses).

    Target :math:`\hat a_k = r_{true}\, q_k + r_{false}\,(1 - q_k)`.

    ``form='lava'`` (lava-dl ``SpikeRate``; the authors' ``spikeRate`` up to scale)
        :math:`L_b = \sum_k (a_k - \hat a_k)^2` (torch MSE 'sum', no 1/2),
        :math:`\partial L/\partial a_k = 2(a_k - \hat a_k)`.
    ``form='slayer'`` (SLAYER ``numSpikes`` with the target region = all T steps, Ts = 1)
        :math:`L_b = \frac{T}{2} \sum_k (a_k - \hat a_k)^2 = \frac{1}{2T}\sum_k (N_k - \hat N_k)^2`,
        :math:`\partial L/\partial a_k = T (a_k - \hat a_k)` (so :math:`\partial L/\partial N_k
        = a_k - \hat a_k`, SLAYER's error signal).

    Parameters
    ----------
    a : array_like [B, K]
        Output rates in [0, 1].
    y : array_like, int [B]
        Class labels in ``[0, K)``.
    true_rate, false_rate : float
        Target rates in [0, 1] of the true class and of the others (lava NMNIST: 0.2, 0.03;
        SLAYER NMNIST counts 60/10 of T = 300 are 0.2, 0.0333).
    form : {'lava', 'slayer'}
        Sum-of-squares on rates, or SLAYER's count form.
    T : int or None
        Number of time steps (>= 1); required for ``form='slayer'``, unused by ``'lava'``.
    reduction : {'sum', 'mean'}
        ``'sum'`` (default) sums over the batch; ``'mean'`` divides by ``B`` (lava's
        ``reduction='mean'`` divides by ``B*K``: multiply this one by 1/K to match).

    Returns
    -------
    LossResult
        ``(per_sample [B], grad = dL/da [B, K])``.

    Raises
    ------
    NeurosimError
        On shape mismatches, NaN/inf, rates outside [0, 1], labels outside ``[0, K)``,
        unknown ``form``/``reduction``, ``form='slayer'`` without ``T``.

    References
    ----------
    S. B. Shrestha, G. Orchard, "SLAYER: Spike layer error reassignment in time",
    NeurIPS 2018 (slayerPytorch ``spikeLoss.numSpikes``); lava-dl
    ``lava/lib/dl/slayer/loss.py`` (``SpikeRate``); arXiv:2205.09845 (baselines).
    """
    a = _numeric(a, "a", 2)
    B, K = a.shape
    _in_range(a, "a", 0, 1, "rates")
    y = _labels(y, B, K)
    rt = V.check_real(true_rate, "true_rate", low=0.0, high=1.0)
    rf = V.check_real(false_rate, "false_rate", low=0.0, high=1.0)
    V.check_choice(form, "form", RATE_MSE_FORMS)
    if form == "slayer" and T is None:
        raise NeurosimError("form='slayer' needs T, the number of time steps (>= 1), got None")
    if T is not None:
        T = V.check_int(T, "T", low=1)
    r = _scale(reduction, B)
    d = a - (rf + (rt - rf) * _onehot(y, K))
    if form == "lava":
        return LossResult(r * (d * d).sum(1), (2.0 * r) * d)
    return LossResult((0.5 * T * r) * (d * d).sum(1), (T * r) * d)


# --------------------------------------------------------------------------- prediction

def _argmax_silent(x, silent):
    V.check_choice(silent, "silent", SILENT_RULES)
    pred = np.argmax(x, axis=-1).astype(np.int64)     # first maximum: ties -> lowest index
    if silent == "wrong":
        pred[(x == 0).all(-1)] = -1
    return pred


def predict(counts, silent="wrong"):
    r"""Predicted class per sample: :math:`\arg\max_k N_k` (lava ``Rate.predict``).

    Ties go to the lowest class index (numpy's first maximum).  An all-silent output
    (every count 0) carries no evidence: with ``silent='wrong'`` (default) it predicts
    ``-1``, which :func:`accuracy` scores as wrong for every label; ``silent='argmax'``
    keeps plain argmax, i.e. class 0 (lava's behaviour, which silently credits class 0).

    Parameters
    ----------
    counts : array_like [B, K]
        Non-negative spike counts or rates.
    silent : {'wrong', 'argmax'}
        Rule for all-zero rows.

    Returns
    -------
    ndarray, int64 [B]
        Class index in ``[0, K)``, or -1 for a silent sample under ``silent='wrong'``.
    """
    x = _numeric(counts, "counts", 2)
    _in_range(x, "counts", 0, np.inf, "non-negative counts")
    return _argmax_silent(x, silent)


def predict_sliding(spikes, W, silent="wrong"):
    r"""Predicted class per step: :math:`\arg\max_k c_k[t]` of the window counts.

    As lava's ``MovingWindow.predict``.

    Same tie and silence rules as :func:`predict`, applied at each step (an empty window
    predicts -1 under ``silent='wrong'``).

    Parameters
    ----------
    spikes : array_like [B, T, K]
        Output spikes in [0, 1].
    W : int
        Window length in steps, ``1 <= W <= T``.
    silent : {'wrong', 'argmax'}
        Rule for empty windows.

    Returns
    -------
    ndarray, int64 [B, T]
        Per-step predictions; ``accuracy(pred, y)`` then gives accuracy per step (latency).
    """
    s = _spikes(spikes)
    return _argmax_silent(_window_sum(s, _window(W, s.shape[1])), silent)


def accuracy(pred, y):
    r"""Fraction of correct predictions; a prediction of -1 (silent) is always wrong.

    Parameters
    ----------
    pred : array_like, int [B] or [B, T]
        Output of :func:`predict` (values >= -1) or :func:`predict_sliding`.
    y : array_like, int [B], or [B, T] for per-step labels
        Labels (>= 0); a [B] label is compared with every step of a [B, T] prediction.

    Returns
    -------
    float or ndarray float64 [T]
        Accuracy over the batch; for [B, T] predictions, accuracy at each step.
    """
    pred = np.asarray(pred)
    y = np.asarray(y)
    for name, x in (("pred", pred), ("y", y)):
        if x.dtype.kind not in "iu":
            raise TypeError(f"{name} must hold integer class indices, got {V._describe(x)}")
    if pred.ndim not in (1, 2) or pred.shape[0] < 1:
        raise NeurosimError(f"pred must have shape (B,) or (B, T) with B >= 1, got {pred.shape}")
    if y.shape != pred.shape[:1] and y.shape != pred.shape:
        raise NeurosimError(f"y must have shape {pred.shape[:1]}"
                            f"{'' if pred.ndim == 1 else f' or {pred.shape}'} to match pred "
                            f"of shape {pred.shape}, got {y.shape}")
    if (pred < -1).any():
        raise NeurosimError(f"pred must hold class indices >= 0 or -1 (silent), got "
                            f"{pred.min()}")
    if (y < 0).any():
        raise NeurosimError(f"y must hold class indices >= 0, got {y.min()}")
    yb = y[:, None] if (pred.ndim == 2 and y.ndim == 1) else y
    hit = pred == yb
    return float(hit.mean()) if pred.ndim == 1 else hit.mean(0)
