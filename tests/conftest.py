"""Test-wide set-up: legacy Keras must be selected before any test imports TensorFlow.

The suite runs on pytest-xdist workers (`-n auto --dist loadfile` in pyproject.toml): most of its
time is single-threaded (graph tracing, model building, fresh interpreters), so a second worker uses
the second core (benchmarks/README.md, "Test suite"). `-n 0` runs it in one process.
"""

import os

import applications.core.backend  # noqa: F401

# Each worker imports TensorFlow and may run an end-to-end training run (about 1.5 GiB at its
# peak); more workers than this stop paying on the machines the suite runs on.
MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per CPU this process may run on, at most MAX_WORKERS."""
    return max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))
