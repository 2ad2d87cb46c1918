"""neurosim benchmarks: ``python -m benchmarks.bench_<subject>``; see benchmarks/README.md."""
