"""Benchmarks for daskstate: run by hand, results written to benchmarks/results/."""
