"""How many cores this process may count on: the machine's, its CPU affinity and container
quota, shared among `serve --workers` processes. A leaf module (DESIGN.md): `serve` sizes its
workers by it, and each worker sizes its model runs and its tool threads by its share.
"""

from __future__ import annotations

import os

#: Workers run with this environment variable set to their count (the app reads nothing else of it).
WORKERS_ENV = "JEAN_MEMORY_WORKERS"


def read_small_file(path: str) -> str | None:
    """A /proc or /sys file's text, or None when it is not there."""
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _cgroup_cpu_quota() -> float | None:
    """Cores a container's CPU quota allows (cgroup v2 `cpu.max`, or v1's cfs files); None if unlimited."""
    v2 = read_small_file("/sys/fs/cgroup/cpu.max")  # "max 100000" or "200000 100000" (quota, period)
    try:
        if v2 is not None:
            quota, period = v2.split()
            return None if quota == "max" else int(quota) / int(period)
        v1_quota, v1_period = (
            read_small_file("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
            read_small_file("/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
        )
        if v1_quota is not None and v1_period is not None and int(v1_quota) > 0:
            return int(v1_quota) / int(v1_period)
    except ValueError:
        pass
    return None


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity and cgroup quota, not the machine's)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, int(quota)))
    return max(1, cores)


def workers() -> int:
    """The number of server processes sharing the cores (set in each worker by `serve`; 1 otherwise)."""
    raw = os.environ.get(WORKERS_ENV, "1")
    return max(1, int(raw)) if raw.isdigit() else 1


def cores_per_worker() -> int:
    """This process's share of the usable cores, at least one."""
    return max(1, usable_cores() // workers())
