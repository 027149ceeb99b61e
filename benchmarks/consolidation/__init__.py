"""Consolidation planner benchmark: a seeded workload generator, baselines
written from their public descriptions, an exact optimum for small instances,
and one command (``python -m benchmarks.consolidation``) that writes a results
table. See README.md beside this file."""
