"""One opener for every model source: :func:`open_network`.

=====================================  ===============================================
source                                 opened by
=====================================  ===============================================
a :class:`~neurosim.Network`           itself
``*.h5`` / ``*.hdf5`` (run file)       :func:`neurosim.io.runfile.load_network` (the
                                       stored network, trained weights included)
``*.nir``                              :func:`neurosim.io.nir.from_nir` at time step ``dt``
``*.toml`` or a model name             :func:`neurosim.models.load_model` (weights drawn
                                       from ``seed``)
=====================================  ===============================================

``neurosim simulate``, ``info`` and ``export-nir`` open their ``--model`` through it.
"""
import os

from ..models import load_model
from ..network import Network
from .nir import DEFAULT_DT, from_nir
from .runfile import load_network

#: suffixes of run files.
RUN_SUFFIXES = (".h5", ".hdf5")
#: suffix of NIR files.
NIR_SUFFIX = ".nir"


def open_network(source, *, seed=0, dt=None):
    """A :class:`~neurosim.Network` from a Network, a run file (``.h5``), a NIR file
    (``.nir``, imported at time step ``dt``; default 1e-3, see
    :func:`neurosim.io.nir.from_nir`), a model file (``.toml``) or a model name (``seed``:
    the weight initialisation of model files and names)."""
    if isinstance(source, Network):
        return source
    s = os.fspath(source)
    if s.endswith(RUN_SUFFIXES):
        return load_network(s)
    if s.endswith(NIR_SUFFIX):
        return from_nir(s, dt=DEFAULT_DT if dt is None else dt)
    return load_model(s, seed=seed)
