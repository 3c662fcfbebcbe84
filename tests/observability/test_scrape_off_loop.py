"""A scrape whose GPU readings hang (an NVIDIA driver stuck, as ``nvidia-smi`` sometimes is) holds up
only itself: the event loop goes on answering probes meanwhile, and the scrape completes once NVML does."""

from __future__ import annotations

import sys
import threading
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.protocol.serving import metric_value, metrics_of, serving

WAIT_S = 10.0


class HungNvml(types.ModuleType):
    """``pynvml`` over one GPU whose utilisation reading hangs until the test releases it.

    Only that reading hangs, and only the scrape's GPU collector takes it: whatever else asks NVML for
    memory at startup is answered at once.
    """

    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        """What pynvml raises; never raised here."""

    def __init__(self) -> None:
        super().__init__("pynvml")
        self.reading = threading.Event()  # a scrape is inside NVML
        self.release = threading.Event()  # the test lets it out
        self.returned = threading.Event()  # it has come out

    def nvmlInit(self) -> None:
        """The driver answers."""

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(used=1 << 30, total=80 << 30)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> types.SimpleNamespace:
        self.reading.set()
        self.release.wait(WAIT_S)
        self.returned.set()
        return types.SimpleNamespace(gpu=50)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return 40

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return 300_000  # milliwatts


def test_the_event_loop_answers_while_a_scrape_waits_on_nvml(
    built_repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nvml = HungNvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    with serving(built_repository, load_models=["simple"]) as client, ThreadPoolExecutor(1) as scraper:
        scrape = scraper.submit(metrics_of, client)
        assert nvml.reading.wait(WAIT_S), "the scrape never read the GPU"

        live = client.get("/health/live")
        infer = client.post(
            "/v2/models/simple/infer",
            json={
                "inputs": [
                    {"name": n, "datatype": "INT32", "shape": [1, 16], "data": [1] * 16} for n in ("INPUT0", "INPUT1")
                ]
            },
        )

        assert not nvml.returned.is_set(), "the probe was answered only after NVML returned: the loop was blocked"
        assert live.status_code == 200
        assert infer.status_code == 200, infer.text
        nvml.release.set()
        samples = scrape.result(WAIT_S)
    assert metric_value(samples, "model_serving_gpu_utilization_ratio", gpu="0") == 0.5
