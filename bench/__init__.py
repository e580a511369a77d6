"""Benchmarks: each prints Miasma's figures beside a baseline measured in the same run."""
