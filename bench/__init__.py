"""Benchmarks and the simulated fleet behind `make bench` (never part of `make test`).

``python -m bench.run`` runs every section and writes bench/results/results.{json,md};
``python -m bench.run --quick`` is a scaled-down smoke run. Everything listens on 127.0.0.0/8 only.
"""
