"""Experiments that train models: the layer above :mod:`neurosim.training` and
:mod:`neurosim.ops` (decisions 54).

* :mod:`neurosim.experiments.sparsity` — the sparsity sweep behind ``neurosim bench
  sparsity``: trains a model per parameter point, records accuracy, op counts, energy and
  event-driven against dense clock-driven forward timings, and finds the crossover;
* :mod:`neurosim.experiments.dask_sweep` — the sweep's points on Dask workers.

Nothing below this package imports it.
"""
