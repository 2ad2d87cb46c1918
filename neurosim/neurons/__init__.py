"""Neuron models: one module per model, one interface (:class:`NeuronModel`, ``base.py``).

=============  ================  ==========================  =======================
kind (stored)  class             module                      role
=============  ================  ==========================  =======================
``lif``        :class:`LIF`      :mod:`neurosim.neurons.lif`      population neurons
``cuba_lif``   :class:`CubaLIF`  :mod:`neurosim.neurons.lif`      population neurons
``alif``       :class:`ALIF`     :mod:`neurosim.neurons.alif`     population neurons
``ternary``    :class:`Ternary`  :mod:`neurosim.neurons.ternary`  backward couples
=============  ================  ==========================  =======================

Each model is a frozen parameter dataclass with a NamedTuple state; its class holds
everything about it (kernel code and packing, model-file keys, stored form, NIR export,
dense step).  Code outside this package never dispatches on neuron classes: it uses the
interface, and maps a stored ``kind`` to its class through :data:`NEURON_KINDS`.
"""
from .alif import ALIF, ALIFState
from .base import NeuronModel
from .lif import LIF, CubaLIF, CubaLIFState, LIFState
from .ternary import Ternary, TernaryState

#: population neuron kind (as model files and run files store it) -> model class.
NEURON_KINDS = {c.kind: c for c in (LIF, CubaLIF, ALIF)}
#: the model of every spiking population's backward-phase couples.
BACKWARD_MODEL = Ternary

__all__ = ["ALIF", "ALIFState", "BACKWARD_MODEL", "CubaLIF", "CubaLIFState", "LIF", "LIFState",
           "NEURON_KINDS", "NeuronModel", "Ternary", "TernaryState"]
