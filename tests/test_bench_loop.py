"""The closed-loop benchmark's --smoke mode (two whole pipeline runs, endpoints, a review and a retraining on tiny data), in a
file of its own so that it runs beside the other benchmarks' smoke runs instead of after them."""
from __future__ import annotations

from test_bench import smoke


def test_loop_benchmark_smoke(tmp_path):
    smoke("loop.py", tmp_path)
