"""The CPUs a process may use, from cgroup files laid out as the kernel and container runtimes lay them out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelserve.config import Settings
from modelserve.cpus import available_cpus, cpu_quota

AFFINITY = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cgroups(tmp_path: Path, self_cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A cgroup root holding ``files`` (path → content) and a /proc/self/cgroup naming the process's cgroup."""
    root = tmp_path / "sys-fs-cgroup"
    root.mkdir()
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(self_cgroup)
    return root, proc


@pytest.mark.parametrize(
    ("cpu_max", "quota", "cpus"),
    [
        ("max 100000\n", None, AFFINITY),
        ("100000 100000\n", 1.0, 1),
        ("50000 100000\n", 0.5, 1),  # half a CPU still runs one thread
        ("150000 100000\n", 1.5, min(AFFINITY, 2)),  # rounded up, as joblib's loky rounds it
        (f"{400000 * AFFINITY} 100000\n", 4.0 * AFFINITY, AFFINITY),  # a quota above the CPUs there are
    ],
)
def test_cgroup_v2_cpu_max_in_a_container(tmp_path: Path, cpu_max: str, quota: float | None, cpus: int) -> None:
    """Docker and Kubernetes with a cgroup namespace: the container's own cgroup is the root."""
    root, proc = cgroups(tmp_path, "0::/\n", {"cpu.max": cpu_max})
    assert cpu_quota(root, proc) == quota
    assert available_cpus(root, proc) == cpus


def test_cgroup_v2_a_parent_quota_binds_its_children(tmp_path: Path) -> None:
    """A pod limited to 1 CPU, its container unlimited: the pod's quota holds (no cgroup namespace)."""
    pod = "kubepods.slice/kubepods-pod1.slice"
    root, proc = cgroups(
        tmp_path,
        f"0::/{pod}/cri-containerd-1.scope\n",
        {f"{pod}/cpu.max": "100000 100000\n", f"{pod}/cri-containerd-1.scope/cpu.max": "max 100000\n"},
    )
    assert cpu_quota(root, proc) == 1.0
    assert available_cpus(root, proc) == 1


def test_cgroup_v1_cfs_quota_mounted_at_the_controller_root(tmp_path: Path) -> None:
    """Docker on cgroup v1: /proc/self/cgroup names /docker/<id>, but the container sees its own cgroup
    mounted at the cpu,cpuacct root, where the quota is."""
    root, proc = cgroups(
        tmp_path,
        "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n",
        {"cpu,cpuacct/cpu.cfs_quota_us": "50000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
    )
    assert cpu_quota(root, proc) == 0.5
    assert available_cpus(root, proc) == 1


def test_cgroup_v1_without_a_quota(tmp_path: Path) -> None:
    root, proc = cgroups(
        tmp_path, "4:cpu,cpuacct:/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}
    )
    assert cpu_quota(root, proc) is None
    assert available_cpus(root, proc) == AFFINITY


@pytest.mark.parametrize("cpu_max", ["", "lots 100000\n", "100000 0\n"])
def test_a_malformed_quota_is_no_limit(tmp_path: Path, cpu_max: str) -> None:
    root, proc = cgroups(tmp_path, "0::/\n", {"cpu.max": cpu_max})
    assert cpu_quota(root, proc) is None
    assert available_cpus(root, proc) == AFFINITY


def test_no_cgroups_at_all(tmp_path: Path) -> None:
    """Not Linux, or /sys not mounted: the affinity alone."""
    assert cpu_quota(tmp_path / "absent", tmp_path / "absent-too") is None
    assert available_cpus(tmp_path / "absent", tmp_path / "absent-too") == AFFINITY


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux's")
def test_the_affinity_counts_not_the_host(tmp_path: Path) -> None:
    """A process pinned to one CPU (taskset, a cpuset) may use one, however many the host has."""
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from modelserve.cpus import available_cpus\n"
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "print(available_cpus(Path(sys.argv[1]), Path(sys.argv[1])))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "absent")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_inference_threads_follow_the_cpus_available(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not the host's CPUs (os.cpu_count()): a container's quota and the affinity bound them, at least 2."""
    monkeypatch.delenv("INFERENCE_THREADS", raising=False)
    monkeypatch.delenv("inference_threads", raising=False)
    assert Settings().inference_threads == max(2, available_cpus())
