"""GPU metrics through NVML (the ``nvidia-ml-py`` package, in the ``gpu`` extra), read at scrape time.

NVML calls block, for as long as the driver takes to answer, so ``collect`` runs in the scrape's thread
(``GET /metrics`` runs the exposition with ``asyncio.to_thread``), never on the event loop.

On a machine with no NVIDIA GPU, no driver or no ``nvidia-ml-py``, the collector exports nothing: the
series are absent, rather than zero, so the GPU alert rules neither fire nor resolve on CPU hosts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import ModuleType

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("modelserve.gpu")

# Every series is labelled ``gpu``: the device's index.
GPU_METRICS = {
    "model_serving_gpu_memory_used_bytes": "GPU memory in use, in bytes.",
    "model_serving_gpu_memory_total_bytes": "GPU memory, in bytes.",
    "model_serving_gpu_utilization_ratio": "Share of the last sample period the GPU was executing kernels (0 to 1).",
    "model_serving_gpu_temperature_celsius": "GPU temperature, in degrees Celsius.",
    "model_serving_gpu_power_watts": "GPU power draw, in watts.",
}


def _nvml() -> ModuleType | None:
    try:
        import pynvml  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:  # no driver, no device: the normal case on a CPU host
        log.debug("no GPU metrics: %s", exc)
        return None
    module: ModuleType = pynvml
    return module


class GpuCollector(Collector):
    """Memory used and total, utilisation, temperature and power of every GPU, labelled ``gpu`` (its index)."""

    def __init__(self) -> None:
        self._nvml = _nvml()

    @property
    def available(self) -> bool:
        """Whether there are GPUs to report on."""
        return self._nvml is not None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        nvml = self._nvml
        if nvml is None:
            return
        families = {name: GaugeMetricFamily(name, text, labels=["gpu"]) for name, text in GPU_METRICS.items()}
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            values = {
                "model_serving_gpu_memory_used_bytes": float(memory.used),
                "model_serving_gpu_memory_total_bytes": float(memory.total),
                "model_serving_gpu_utilization_ratio": nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100,
                "model_serving_gpu_temperature_celsius": float(
                    nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
                ),
                "model_serving_gpu_power_watts": nvml.nvmlDeviceGetPowerUsage(handle) / 1000,  # NVML: milliwatts
            }
            for name, value in values.items():
                families[name].add_metric([str(index)], value)
        yield from families.values()


def device_memory(index: int = 0) -> tuple[int, int] | None:
    """GPU ``index``'s memory in use and in total (bytes), or None on a host without one."""
    nvml = _nvml()
    if nvml is None or index >= nvml.nvmlDeviceGetCount():
        return None
    memory = nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(index))
    return int(memory.used), int(memory.total)


def device_name(index: int = 0) -> str:
    """GPU ``index``'s model name as NVML gives it ("NVIDIA H100 80GB HBM3"), or "" on a host without one."""
    nvml = _nvml()
    if nvml is None or index >= nvml.nvmlDeviceGetCount():
        return ""
    name = nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(index))
    return name.decode() if isinstance(name, bytes) else str(name)  # bytes before nvidia-ml-py 11.515
