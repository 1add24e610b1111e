"""Shared fixtures. ``ray_local``: ONE real local Ray (2 CPUs) for every Ray test of the session."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray started once per test session and shut down at its end.

    Tests that need their own Ray (a multi-node ``ray.cluster_utils.Cluster``) run it in a
    subprocess so they never clash with this one.
    """
    import ray

    started = False
    if not ray.is_initialized():
        # trial workers import this checkout's raydnas, whatever is installed
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
        started = True
    yield ray
    if started:
        ray.shutdown()
