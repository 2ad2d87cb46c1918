"""neurosim's file formats, one module each; nothing here runs a simulation.

==========================  ===========================================================
module                      format
==========================  ===========================================================
:mod:`.runfile`             run files (HDF5, ``docs/hdf5-schema.md``)
:mod:`.model_file`          model files (TOML, ``docs/model-format.md``); the network is
                            built from them by :mod:`neurosim.models`
:mod:`.nir`                 NIR graphs (``docs/nir.md``; needs the ``nir`` package)
:mod:`.atomic`              atomic writes and the one output guard
                            (:func:`~.atomic.check_destination`)
:mod:`.sources`             :func:`~.sources.open_network`: any of the above by suffix
==========================  ===========================================================
"""
from .runfile import (FORMAT, SCHEMA_VERSION, Run, RunFileError, load_network, read_run,
                      write_run)

__all__ = ["FORMAT", "SCHEMA_VERSION", "Run", "RunFileError", "load_network", "read_run",
           "write_run"]
