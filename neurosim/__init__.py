"""neurosim: an event-driven neuromorphic simulator with SPIDE training and exact op counts."""
__version__ = "0.1.0"

from . import _startup

if _startup.is_command_line():    # Ctrl-C during the imports: one line (neurosim/_startup.py)
    _startup.install()
    from . import _testhooks
    _testhooks.pause("startup")

from ._interrupt import Interrupted
from .connectivity import (AvgPool2d, Conv2d, ConvTranspose2d, Dense, Sparse, SumPool2d,
                           chw_to_flat, flat_to_chw)
from .engine import PhaseResult, run_backward, run_forward
from .network import Network, Population
from .neurons import LIF, CubaLIF, Ternary

__all__ = ["AvgPool2d", "Conv2d", "ConvTranspose2d", "Dense", "Sparse", "SumPool2d", "chw_to_flat",
           "flat_to_chw", "PhaseResult", "run_backward", "run_forward", "Network", "Population",
           "LIF", "CubaLIF", "Ternary", "Interrupted", "__version__"]
