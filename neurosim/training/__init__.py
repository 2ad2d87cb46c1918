"""SPIDE training: local updates from the rates of two spiking phases."""
from .spide import SGD, SPIDEConfig, SPIDEModel, learning_rate, spide_phases, spide_step

__all__ = ["SGD", "SPIDEConfig", "SPIDEModel", "learning_rate", "spide_phases", "spide_step"]
