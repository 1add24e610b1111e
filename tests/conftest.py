"""Shared fixtures. ``ray_local``: ONE real local Ray (2 CPUs) for every Ray test of the session."""

from __future__ import annotations

import inspect
import re
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


#: what a test (or a fixture it uses) does when it starts Ray, sshd or a whole sweep
_HEAVY = re.compile(r"ray\.init\(|ray_local|cluster_utils|SSHBox|sshd|Tuner\(|run_sweep\(|"
                    r"[\"']sweep[\"']\s*,")


def _heavy(item) -> str | None:
    """The first function (the test or one of its fixtures) whose source starts Ray, sshd or a
    sweep, or None."""
    funcs = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    for defs in (info.name2fixturedefs.values() if info else ()):
        funcs += [d.func for d in defs]
    for f in funcs:
        try:
            src = inspect.getsource(f)
        except (OSError, TypeError):
            continue
        if f is not funcs[0]:
            src = src.split('"""', 2)[-1]  # a fixture's docstring may name what it avoids
        if _HEAVY.search(src):
            return f.__name__
    return None


def pytest_collection_modifyitems(config, items):
    """The fast lane (``-m "not slow"``) stays fast: a test that starts Ray, sshd or a whole
    sweep must be marked ``slow`` (itself or its module's ``pytestmark``); one that names a
    sweep only to see it refused before Ray starts says so with ``before_ray``."""
    bad = [f"{i.nodeid} (through {why})" for i in items
           if i.get_closest_marker("slow") is None and i.get_closest_marker("before_ray") is None
           and (why := _heavy(i))]
    if bad:
        raise pytest.UsageError("tests that start Ray, sshd or a sweep must be marked slow: "
                                + "; ".join(bad))
