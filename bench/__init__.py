"""Benchmarks. Run from the repository root as modules, e.g. ``python -m bench.bench_serving``;
each prints a table whose ratios compare variants measured side by side in the same run.
Results and the exact commands: bench/RESULTS.md."""
