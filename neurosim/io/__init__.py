"""Reading and writing neurosim files: run files (HDF5, ``docs/hdf5-schema.md``).

Model files (TOML) are read by :mod:`neurosim.models`."""
from .hdf5 import (FORMAT, SCHEMA_VERSION, Run, RunFileError, load_network, read_run,
                   write_run)

__all__ = ["FORMAT", "SCHEMA_VERSION", "Run", "RunFileError", "load_network", "read_run",
           "write_run"]
