"""Numba kernels: the only place in neurosim where code is jitted.

Kernels take arrays and scalars (never classes, dicts or files), update preallocated
outputs in place and return small integers.  Options come from :mod:`neurosim.config`.
"""
