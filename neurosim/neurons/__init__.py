"""Neuron models: frozen parameter dataclasses, NamedTuple states, ``step`` functions."""
from .lif import LIF, CubaLIF, LIFState, CubaLIFState
from .ternary import Ternary, TernaryState

__all__ = ["LIF", "CubaLIF", "LIFState", "CubaLIFState", "Ternary", "TernaryState"]
