"""CPU profiles of a live server: what the sampler records, the three renderings, and /debug/profile."""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from modelserve.observability.profiling import Busy, Profile, ProfileFormat, Profiler
from tests.protocol.serving import TestClient, serving, wait_until

MLP = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}]}


def spin_until(stop: threading.Event) -> None:
    """Pure Python work, so the sampler sees this function on top of its thread's stack."""
    total = 0
    while not stop.is_set():
        total += sum(range(1000))


@pytest.fixture
def spinning() -> Iterator[threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=spin_until, args=(stop,), name="spinner")
    thread.start()
    yield thread
    stop.set()
    thread.join()


def test_the_sampler_sees_a_busy_thread_and_leaves_idle_ones_out(spinning: threading.Thread) -> None:
    idle = threading.Event()
    waiter = threading.Thread(target=idle.wait, name="waiter")
    waiter.start()
    try:
        profile = Profiler().record(0.5, 100)
        with_idle = Profiler().record(0.3, 100, idle=True)
    finally:
        idle.set()
        waiter.join()

    by_thread = Counter[str]()
    for stack, count in profile.samples.items():
        by_thread[stack[0]] += count
    assert by_thread["spinner"] >= 20  # ~50 expected; the GIL makes the exact number vary
    assert any("spin_until" in frame for stack in profile.samples if stack[0] == "spinner" for frame in stack)
    assert "waiter" not in by_thread
    assert profile.idle > 0
    assert any(stack[0] == "waiter" for stack in with_idle.samples)


def test_arguments_are_checked_and_one_profile_runs_at_a_time() -> None:
    profiler = Profiler()
    with pytest.raises(ValueError, match="seconds must be above 0 and at most 60"):
        profiler.record(61, 100)
    with pytest.raises(ValueError, match="hz must be between 1 and 1000"):
        profiler.record(1, 0)
    first = threading.Thread(target=profiler.record, args=(0.5, 10))
    first.start()
    time.sleep(0.1)
    with pytest.raises(Busy, match="being recorded already"):
        profiler.record(0.1, 10)
    first.join()
    assert profiler.record(0.05, 10).seconds == 0.05  # free again


def _profile() -> Profile:
    profile = Profile(2.0, 100)
    profile.samples[("MainThread", "main (app.py:1)", "serve (server.py:10)", "infer (rest.py:40)")] = 30
    profile.samples[("MainThread", "main (app.py:1)", "serve (server.py:10)")] = 10
    profile.samples[("inference_0", "run (thread.py:5)", "Session.run (onnx.py:383)")] = 60
    return profile


def test_speedscope_rendering_follows_the_file_format() -> None:
    body, media_type = _profile().render(ProfileFormat.speedscope)
    document = orjson.loads(body)
    assert media_type == "application/json"
    assert document["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    frames = document["shared"]["frames"]
    assert {"name": "Session.run", "file": "onnx.py", "line": 383} in frames
    profiles = {p["name"]: p for p in document["profiles"]}
    assert set(profiles) == {"MainThread", "inference_0"}
    for profile in profiles.values():
        assert profile["type"] == "sampled"
        assert len(profile["samples"]) == len(profile["weights"])
        assert all(0 <= index < len(frames) for sample in profile["samples"] for index in sample)
        assert profile["endValue"] == pytest.approx(sum(profile["weights"]))
    assert profiles["inference_0"]["endValue"] == pytest.approx(0.6)  # 60 samples at 100 Hz


def test_folded_and_svg_renderings() -> None:
    profile = _profile()
    folded = profile.folded().splitlines()
    assert "inference_0;run (thread.py:5);Session.run (onnx.py:383) 60" in folded
    assert len(folded) == 3
    svg, media_type = profile.render(ProfileFormat.svg)
    assert media_type == "image/svg+xml"
    root = ET.fromstring(svg)
    titles = [element.text or "" for element in root.iter("{http://www.w3.org/2000/svg}title")]
    assert "Session.run (onnx.py:383) (60 samples, 60.0 %)" in titles
    assert "serve (server.py:10) (40 samples, 40.0 %)" in titles  # its own 10 and its callee's 30


class _Load:
    """MLP requests in a loop on a thread of its own; statuses are kept, not asserted there, so a
    failing request fails the test instead of silently ending the load."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.statuses = Counter[int]()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="load")

    def _run(self) -> None:
        while not self.stop.is_set():
            self.statuses[self.client.post("/v2/models/mlp/infer", json=MLP).status_code] += 1

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())


def test_the_endpoint_profiles_a_server_under_load(built_repository: Path) -> None:
    with serving(built_repository) as client:
        load = _Load(client)
        load.thread.start()
        try:
            wait_until(lambda: load.sent > 0, "the load's first answer")
            before = load.sent
            response = client.get("/debug/profile", params={"seconds": 2, "hz": 500, "format": "folded"})
            during = load.sent - before
        finally:
            load.stop.set()
            load.thread.join()
        assert set(load.statuses) == {200}, load.statuses
        assert during >= 10, f"only {during} requests answered while the profile recorded"
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert 'filename="modelserve-profile.folded.txt"' in response.headers["content-disposition"]
        # The server's own inference path was on the CPU: on the event loop when batches run inline, in
        # the inference threads when they take longer (a busy machine can tip the MLP either way).
        # The sampler takes the GIL mostly when the loop lets go of it, in epoll: 1,000 samples, not 100,
        # so that a few land inside a batch of the MLP however busy the host is.
        assert "Batcher._execute" in response.text or "Batcher._run_live" in response.text
        # The event loop waiting in epoll is idle, left out like the other waits. Only a stack that ends
        # in the selector's select waits: one that goes on below it handles the events epoll returned.
        innermost = [line.rpartition(" ")[0].split(";")[-1] for line in response.text.splitlines()]
        assert not [frame for frame in innermost if "Selector.select (" in frame]

        svg = client.get("/debug/profile", params={"seconds": 0.2})
        assert svg.status_code == 200
        assert svg.headers["content-type"] == "image/svg+xml"
        ET.fromstring(svg.text)

        speedscope = client.get("/debug/profile", params={"seconds": 0.2, "format": "speedscope", "idle": True})
        assert speedscope.status_code == 200
        assert orjson.loads(speedscope.content)["profiles"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"seconds": 0}, "seconds: Input should be greater than 0"),
        ({"seconds": 600}, "seconds: Input should be less than or equal to 60"),
        ({"hz": 5000}, "hz: Input should be less than or equal to 1000"),
        ({"format": "pprof"}, "format: Input should be 'speedscope', 'folded' or 'svg'"),
    ],
)
def test_the_endpoint_refuses_bad_arguments_saying_which(
    built_repository: Path, params: dict[str, object], message: str
) -> None:
    with serving(built_repository) as client:
        response = client.get("/debug/profile", params=params)
        assert response.status_code == 400
        assert response.json() == {"error": message, "trace_id": response.headers["x-trace-id"]}


def test_a_second_profile_while_one_records_is_a_conflict(built_repository: Path) -> None:
    with serving(built_repository) as client:
        first: list[int] = []
        recording = threading.Thread(
            target=lambda: first.append(client.get("/debug/profile", params={"seconds": 1}).status_code)
        )
        recording.start()
        time.sleep(0.3)
        second = client.get("/debug/profile", params={"seconds": 0.1})
        recording.join()
        assert first == [200]
        assert second.status_code == 409
        assert "being recorded already" in second.json()["error"]
        assert second.json()["trace_id"] == second.headers["x-trace-id"]  # like every error answer
        assert client.post("/v2/models/mlp/infer", json=MLP).status_code == 200
