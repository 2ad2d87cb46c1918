"""Projections: the synapses between two populations, one module per kind.

====================  ========================  ===========================================
kind (as stored)      class                     module
====================  ========================  ===========================================
``dense``             :class:`Dense`            :mod:`neurosim.connectivity.dense`
``sparse``            :class:`Sparse`           :mod:`neurosim.connectivity.sparse`
``conv2d``            :class:`Conv2d`           :mod:`neurosim.connectivity.conv`
``conv_transpose2d``  :class:`ConvTranspose2d`  :mod:`neurosim.connectivity.conv_transpose`
``avgpool2d``         :class:`AvgPool2d`        :mod:`neurosim.connectivity.pool`
``sumpool2d``         :class:`SumPool2d`        :mod:`neurosim.connectivity.pool`
====================  ========================  ===========================================

Each kind's class holds everything about that kind: its kernel layout per phase
(:meth:`Projection.kernel_layout`), degrees (plain and on nonzero weights), dense MACs,
per-synapse and per-kernel-weight count layouts, the gradient back to the user layout,
and its stored form (:meth:`Projection.to_stored` / :meth:`Projection.from_stored`).
The shared interface is documented on :class:`Projection` (``base.py``).  Code outside
this package never dispatches on projection classes: it calls those methods, and maps a
stored ``kind`` string to its class through :data:`PROJECTION_KINDS`.

Weights are kept in the user-facing layout (dense ``W[n_pre, n_post]``; CSR
``indptr/indices/weights`` by pre neuron; conv ``(C_out, C_in, kh, kw)`` and
conv-transpose ``(C_in, C_out, kh, kw)`` as in PyTorch).  Kernel layouts are derived.
Neuron order (channel-last for ``(C, H, W)`` populations): see :mod:`.base`.
"""
from .base import KernelLayout, Projection, chw_to_flat, flat_to_chw
from .conv import (Conv2d, ConvProjection, SpatialProjection, kernel_table, offset_targets,
                   site_table)
from .conv_transpose import ConvTranspose2d
from .dense import Dense
from .pool import AvgPool2d, Pool2d, SumPool2d
from .sparse import Sparse, check_csr

#: kind string (as model files and run files store it) -> projection class.
PROJECTION_KINDS = {c.kind: c for c in (Dense, Sparse, Conv2d, ConvTranspose2d, AvgPool2d,
                                        SumPool2d)}

__all__ = ["AvgPool2d", "Conv2d", "ConvProjection", "ConvTranspose2d", "Dense",
           "KernelLayout", "PROJECTION_KINDS", "Pool2d", "Projection", "SpatialProjection",
           "Sparse", "SumPool2d", "check_csr", "chw_to_flat", "flat_to_chw", "kernel_table",
           "offset_targets", "site_table"]
