"""Benchmarks (not tests): scoring throughput, streaming throughput/latency, training time.

Run ``make bench`` or ``python bench/run.py`` (``--quick`` for a smoke run, ``--only`` for one
part); results go to ``bench/results/``. TECHNICAL.md ("Benchmarks") has the numbers.
"""
