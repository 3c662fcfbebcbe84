"""How many CPUs this process may use (its CPU affinity, capped by its cgroup's CPU quota), and threads
that yield them to the others.

``os.cpu_count()`` counts the host's CPUs, and ONNX Runtime's default thread count its physical cores:
a container limited to 2 CPUs on a 64-core node sees 64. Threads beyond the quota only queue for it,
and the kernel throttles the whole container in bursts when they run. Python 3.13's
``os.process_cpu_count()`` reads the affinity only (we run 3.11), psutil reads no cgroup, and joblib's
loky, which reads the quota, is an optional dependency here and reads fixed paths only; so the quota
is read here, rounded up as loky rounds it (1.5 CPUs allow 2 threads).

The defaults that follow from it (inference threads, a model's ``instance_count``, ONNX Runtime's
intra-op threads) are in docs/CONFIGURATION.md, with the measurements behind them in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")


def available_cpus(cgroup_root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> int:
    """The CPUs this process may run on at once: at least 1."""
    # macOS and Windows have neither affinity nor cgroups: all the host's CPUs.
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cpu_quota(cgroup_root, self_cgroup)
    return max(1, affinity if quota is None else min(affinity, math.ceil(quota)))


def cpu_quota(cgroup_root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> float | None:
    """CPUs' worth of time the process's cgroup may use per period (``200000 100000`` is 2.0), the
    least along its cgroup and the ancestors visible here, since a parent's quota binds its children;
    None where none is set or none can be read."""
    quotas = [q for folder in cgroup_folders(cgroup_root, self_cgroup) if (q := _quota_in(folder)) is not None]
    return min(quotas, default=None)


def cgroup_folders(root: Path, self_cgroup: Path, controller: str = "cpu") -> list[Path]:
    """Folders that may hold the process's limits of ``controller`` (cpu, memory): its cgroup's and its
    ancestors', in the v2 hierarchy and in v1's folder of that controller.

    Inside a container the cgroup path (/proc/self/cgroup) may name a folder that is not mounted there
    (the container's own cgroup is mounted at the root instead): folders that do not exist are skipped,
    and the root is always looked at."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    folders = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":  # cgroup v2: "0::/path"
            base = root
        elif controller in controllers.split(","):  # cgroup v1: "4:cpu,cpuacct:/path", mounted as cpu,cpuacct
            base = next(
                (root / name for name in (controllers, controller) if (root / name).is_dir()), root / controller
            )
        else:
            continue
        folder = base / path.strip().lstrip("/")
        folders += [folder, *(p for p in folder.parents if p.is_relative_to(base))]
    return [folder for folder in dict.fromkeys([*folders, root, root / controller]) if folder.is_dir()]


def _quota_in(folder: Path) -> float | None:
    """The quota a cgroup folder sets: v2's ``cpu.max`` ("max 100000" for none), or v1's
    ``cpu.cfs_quota_us`` (-1 for none) over ``cpu.cfs_period_us``."""
    try:
        if (folder / "cpu.max").exists():
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        if (folder / "cpu.cfs_quota_us").exists():
            quota_us = int((folder / "cpu.cfs_quota_us").read_text())
            return quota_us / int((folder / "cpu.cfs_period_us").read_text()) if quota_us > 0 else None
    except (OSError, ValueError, ZeroDivisionError):
        return None  # unreadable or malformed: no limit known, as if none were set
    return None


# The nice value of background threads: the lowest CPU priority, the kernel's weight 15 against the
# 1024 of a normal thread, so a normal thread that wants a core takes nearly all of it.
BACKGROUND_NICE = 19


def background_threads(count: int, prefix: str) -> ThreadPoolExecutor:
    """A thread pool whose threads the kernel runs only after the process's other threads: work that
    should yield the CPU (lower priority levels' batches) without waiting for it to be idle. Each
    thread lowers its own priority as it starts; Linux schedules threads one by one, so the rest of
    the process keeps its own."""
    return ThreadPoolExecutor(count, thread_name_prefix=prefix, initializer=_lower_own_priority)


def _lower_own_priority() -> None:
    if sys.platform != "linux":  # elsewhere the call would lower the whole process
        return
    with contextlib.suppress(OSError):  # raising one's own nice value is always allowed; a sandbox may say no
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
