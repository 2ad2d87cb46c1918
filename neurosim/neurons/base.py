"""The neuron-model interface shared by every model (the pattern of
:class:`neurosim.connectivity.Projection`).

Every neuron model lives in one module of this package (``lif``: :class:`LIF` and
:class:`CubaLIF`; ``alif``: :class:`ALIF`; ``ternary``: the backward couples
:class:`Ternary`) and answers, as
attributes and methods of its class, every question the rest of neurosim asks about it
(see :class:`NeuronModel`).  Code outside the package never tests a neuron's class: it
reads these attributes, calls these methods, or looks a model up by its stored name in
:data:`neurosim.neurons.NEURON_KINDS`.
"""
from dataclasses import fields

import numpy as np

from .. import _validate as V


class NeuronModel:
    """Base class of every neuron model: the shared interface.

    A subclass is a frozen dataclass of parameters (checked in ``__post_init__``), sets
    the class attributes and implements the methods below.

    Class attributes
    ----------------
    kind : str
        Name of the model as model files (population ``kind``) and run files (the
        ``"model"`` key of the ``neuron`` / ``ternary`` attributes) store it.
    code : int
        The model code ``M_*`` of :mod:`neurosim.kernels.layout` that :meth:`pack` returns.
    role : {"forward", "backward"}
        "forward": a population's neurons (model-file population kinds);
        "backward": SPIDE's ternary couples of the backward phase (a population's
        ``ternary`` table).
    State : NamedTuple class
        The per-neuron state of :meth:`step`; ``State._fields`` names the arrays.
    forward_only : bool
        The backward (SPIDE) phase cannot run on populations of this model.
    leak : float
        λ, the lazy leak applied after every step's reset (1 = none).  Models without a
        lazy leak (CubaLIF leaks exactly inside its own update) keep the default 1.
    n_ports : int or None
        Receptor ports a projection may name; None: one input, ``port`` is ignored.
    accepts_v_init : bool
        :func:`neurosim.engine.run_forward` accepts an initial potential (``v_init``) for
        populations of this model.
    dense_baseline : bool
        The sparsity sweep's clock-driven dense baseline
        (:func:`neurosim.experiments.sparsity.dense_forward`) can run this model.

    Methods every model implements
    ------------------------------
    pack(fp, ip, syn) -> int
        Write the kernel parameters into one population's rows of the compiled network
        (:func:`neurosim.network.compile_program`); returns :attr:`code`.
    to_dict() -> dict, from_dict(d) (classmethod)
        The JSON-able form stored in run files (``"model"`` = :attr:`kind`) and its
        inverse; :meth:`from_dict` also builds from a model file's population table.
    keys() (classmethod) -> frozenset
        The parameter keys a model file may give (the dataclass fields).
    summary() -> dict
        The parameters ``neurosim info`` prints.
    init_state(n, dtype) -> State, step(state, current) -> (spikes, state)
        The single-population dense step (validating wrapper of the kernel twin).
    to_nir(dt, dtype) -> (NIR node type, fields, notes)
        Export: the NIR node type name, its scalar fields, and what NIR cannot say
        (approximations); see :mod:`neurosim.io.nir`.  Backward models have none.
    """

    kind = None
    code = None
    role = "forward"
    State = None
    forward_only = False
    leak = 1.0
    n_ports = None
    accepts_v_init = False
    dense_baseline = False

    @property
    def leaky(self):
        """Whether λ != 1 (the run file then stores leak-weighted spike counts)."""
        return self.leak != 1.0

    @classmethod
    def keys(cls):
        return frozenset(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, d):
        """The model from its :meth:`to_dict` form (the ``"model"`` key is optional)."""
        return cls(**{k: v for k, v in d.items() if k != "model"})

    def to_dict(self):
        return dict(model=self.kind, **{f.name: getattr(self, f.name) for f in fields(self)})

    def summary(self):
        d = self.to_dict()
        d.pop("model")
        return d

    def pack(self, fp, ip, syn):  # pragma: no cover - every model overrides it
        raise NotImplementedError

    def to_nir(self, dt, dtype):
        raise V.NeurosimError(f"neuron model {self.kind!r} has no NIR export")


def below(x, dtype):
    """The largest number of ``dtype`` below ``x`` (NIR's strict ``v > θ'`` is neurosim's
    inclusive ``v >= θ``)."""
    return float(np.nextafter(np.asarray(x, dtype), np.asarray(-np.inf, dtype)))
