"""Memory: unloading gives it back (RSS flat over many load/unload cycles); the soft and hard limits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from modelserve.models.memory import MIB, memory_limit_bytes, rss_bytes
from modelserve.types import InferenceRequest
from tests.builders import matmul_onnx
from tests.models.conftest import Factory
from tests.protocol.serving import metric_value, metrics_of, serving

CYCLES = 50


def test_rss_reads_this_process() -> None:
    before = rss_bytes()
    block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, touched
    assert rss_bytes() - before > 48 * 1024 * 1024
    del block


async def test_rss_is_back_within_10_percent_after_50_load_unload_cycles(tmp_path: Path, make_manager: Factory) -> None:
    matmul_onnx(tmp_path / "big" / "1" / "model.onnx")
    manager = make_manager(tmp_path)
    request = InferenceRequest("big", {"x": np.ones((4, 2048), np.float32)})

    async def cycle() -> None:
        await manager.load("big")
        response = await manager.infer(request)
        assert response.outputs["y"].shape == (4, 2048)
        await manager.unload("big")

    for _ in range(2):  # the runtime's one-time allocations (thread pools, kernels) come first
        await cycle()
    baseline = rss_bytes()
    for _ in range(CYCLES):
        await cycle()
    grown = rss_bytes() - baseline
    # Without malloc_trim after unload, this grows by some 250 MiB (about 5 MiB a cycle).
    assert grown < 0.10 * baseline, f"RSS grew {grown / 2**20:.1f} MiB over {CYCLES} cycles from {baseline / 2**20:.1f}"


def test_above_the_hard_limit_liveness_fails_with_the_reason_and_inference_goes_on(built_repository: Path) -> None:
    with serving(built_repository, memory_hard_limit_mb=1) as client:
        live, v2_live = client.get("/health/live"), client.get("/v2/health/live")
        inferred = client.post("/v1/predict", json={"model": "mlp", "inputs": [[0.5] * 16]})
        metrics = metrics_of(client)

    assert live.status_code == 503
    assert "above MEMORY_HARD_LIMIT_MB (1 MiB): restart wanted" in live.json()["reason"]
    assert v2_live.status_code == 503
    assert v2_live.json()["live"] is False
    assert inferred.status_code == 200
    assert metric_value(metrics, "model_serving_memory_pressure") == 2
    assert metric_value(metrics, "model_serving_memory_rss_bytes") > 2**20


def test_above_the_soft_limit_loads_are_refused_with_507_and_the_process_stays_live(
    built_repository: Path,
) -> None:
    with serving(built_repository, memory_soft_limit_mb=1, load_models=["simple"]) as client:
        load = client.post("/v2/repository/models/mlp/load")
        live = client.get("/health/live")
        inputs = {"INPUT0": [[1] * 16], "INPUT1": [[2] * 16]}
        served = client.post("/v1/predict", json={"model": "simple", "inputs": inputs})
        metrics = metrics_of(client)

    assert load.status_code == 507
    assert "cannot load model 'mlp'" in load.json()["error"]
    assert "above MEMORY_SOFT_LIMIT_MB (1 MiB)" in load.json()["error"]
    assert live.status_code == 200
    assert served.status_code == 200
    assert metric_value(metrics, "model_serving_memory_pressure") == 1


def test_without_limits_liveness_passes_and_pressure_is_0(built_repository: Path) -> None:
    with serving(built_repository, load_models=["simple"]) as client:
        assert client.get("/health/live").status_code == 200
        assert metric_value(metrics_of(client), "model_serving_memory_pressure") == 0


def _cgroup(tmp_path: Path, self_cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "sys-fs-cgroup"
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    root.mkdir(exist_ok=True)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(self_cgroup)
    return root, proc


PHYSICAL = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def test_the_memory_limit_is_the_containers_cgroup_limit(tmp_path: Path) -> None:
    """What MODEL_MEMORY_BUDGET_FRACTION takes a share of: a pod's limit of 512 MiB, its container unlimited
    (v2, no cgroup namespace), or a Docker container's on v1, or the host's memory without any."""
    pod = "kubepods.slice/kubepods-pod1.slice"
    v2 = _cgroup(
        tmp_path / "v2",
        f"0::/{pod}/cri-containerd-1.scope\n",
        {f"{pod}/memory.max": f"{512 * MIB}\n", f"{pod}/cri-containerd-1.scope/memory.max": "max\n"},
    )
    assert memory_limit_bytes(*v2) == 512 * MIB
    v1 = _cgroup(tmp_path / "v1", "9:memory:/docker/abc\n", {"memory/memory.limit_in_bytes": f"{256 * MIB}\n"})
    assert memory_limit_bytes(*v1) == 256 * MIB
    unlimited = _cgroup(tmp_path / "none", "0::/\n", {"memory.max": "max\n"})
    assert memory_limit_bytes(*unlimited) == PHYSICAL
    v1_unlimited = _cgroup(tmp_path / "huge", "9:memory:/\n", {"memory/memory.limit_in_bytes": f"{2**63 - 4096}\n"})
    assert memory_limit_bytes(*v1_unlimited) == PHYSICAL
