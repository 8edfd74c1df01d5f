"""Benchmarks printed by `make bench`: figures against targets, not pass/fail tests."""
