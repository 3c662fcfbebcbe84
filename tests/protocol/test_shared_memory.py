"""The system shared-memory registry: regions are real /dev/shm objects, bounds are always checked."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from modelserve.errors import InvalidInput
from modelserve.protocol.shared_memory import SHM_ROOT, Placement, SharedMemoryRegistry


@pytest.fixture
def shm_object() -> Iterator[tuple[str, Path]]:
    """A 256-byte POSIX shared-memory object, and its key."""
    key = f"/ms_unit_{os.getpid()}"
    path = Path(SHM_ROOT) / key.lstrip("/")
    path.write_bytes(bytes(256))
    yield key, path
    path.unlink(missing_ok=True)


@pytest.fixture
def registry(shm_object: tuple[str, Path]) -> SharedMemoryRegistry:
    """`r` registered as bytes 64..191 of the object."""
    registry = SharedMemoryRegistry()
    registry.register("r", shm_object[0], 64, 128)
    return registry


def test_status_lists_what_was_registered(registry: SharedMemoryRegistry, shm_object: tuple[str, Path]) -> None:
    assert registry.status() == [{"name": "r", "key": shm_object[0], "offset": 64, "byte_size": 128}]
    assert registry.status("r") == registry.status()
    registry.unregister("r")
    assert registry.status() == []
    registry.unregister("r")  # already gone: not an error


def test_inputs_are_views_of_the_region(registry: SharedMemoryRegistry, shm_object: tuple[str, Path]) -> None:
    data = np.arange(8, dtype=np.float32)
    with shm_object[1].open("r+b") as handle:
        handle.seek(64 + 16)
        handle.write(data.tobytes())
    array = registry.read(Placement("r", 32, 16), "FP32", [2, 4], "x")
    np.testing.assert_array_equal(array, data.reshape(2, 4))
    with shm_object[1].open("r+b") as handle:  # a view, not a copy: later writes show through
        handle.seek(64 + 16)
        handle.write(np.float32(42).tobytes())
    assert array[0, 0] == 42


def test_outputs_are_written_where_placed(registry: SharedMemoryRegistry, shm_object: tuple[str, Path]) -> None:
    parameters = registry.place(Placement("r", 24, 8), np.array([7, 8, 9], dtype=np.int64), "y")
    assert parameters == {"shared_memory_region": "r", "shared_memory_byte_size": 24, "shared_memory_offset": 8}
    raw = shm_object[1].read_bytes()
    assert np.frombuffer(raw[72:96], np.int64).tolist() == [7, 8, 9]
    assert raw[:72] == bytes(72)
    assert raw[96:] == bytes(160)


@pytest.mark.parametrize(
    ("placement", "message"),
    [
        (Placement("r", 16, 120), "run past the end of shared-memory region 'r' (128 bytes)"),
        (Placement("nope", 4), "'nope' is not registered"),
        (Placement("r", 12), "shared_memory_byte_size 12 does not match shape [2, 4] of FP32 (32 bytes)"),
    ],
)
def test_reads_outside_the_region_are_refused(
    registry: SharedMemoryRegistry, placement: Placement, message: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        registry.read(placement, "FP32", [2, 4], "x")
    assert message in caught.value.message


def test_an_output_larger_than_its_placement_is_refused(
    registry: SharedMemoryRegistry, shm_object: tuple[str, Path]
) -> None:
    with pytest.raises(InvalidInput, match="needs 32 bytes, but its shared_memory_byte_size is 16"):
        registry.write(Placement("r", 16), np.zeros(4, np.float64), "y")
    assert shm_object[1].read_bytes() == bytes(256), "nothing was written"


@pytest.mark.parametrize(
    ("name", "key", "offset", "size", "message"),
    [
        ("s", "../../etc/passwd", 0, 8, "not the name of a POSIX shared-memory object"),
        ("s", "/a/b", 0, 8, "not the name of a POSIX shared-memory object"),
        ("s", "/..", 0, 8, "not the name of a POSIX shared-memory object"),
        ("s", "/ms_no_such_object", 0, 8, "cannot open shared-memory object"),
        ("s", "KEY", 200, 100, "runs past the end of shared-memory object"),
        ("s", "KEY", 0, 0, "byte_size a positive one"),
        ("s", "KEY", -1, 8, "offset must be a non-negative integer"),
        ("r", "KEY", 0, 8, "'r' is already registered"),
        ("", "KEY", 0, 8, "needs a name"),
    ],
)
def test_bad_registrations_are_refused(
    registry: SharedMemoryRegistry,
    shm_object: tuple[str, Path],
    name: str,
    key: str,
    offset: int,
    size: int,
    message: str,
) -> None:
    with pytest.raises(InvalidInput, match=message):
        registry.register(name, shm_object[0] if key == "KEY" else key, offset, size)
    assert [r["name"] for r in registry.status()] == ["r"]


@pytest.mark.parametrize(
    "parameters",
    [
        {"shared_memory_region": "r"},
        {"shared_memory_region": "r", "shared_memory_byte_size": -1},
        {"shared_memory_region": "r", "shared_memory_byte_size": 4, "shared_memory_offset": "0"},
        {"shared_memory_region": 3, "shared_memory_byte_size": 4},
    ],
)
def test_placement_parameters_must_be_complete(parameters: dict[str, object]) -> None:
    with pytest.raises(InvalidInput, match="tensor 'x': shared_memory_region needs"):
        Placement.from_parameters(parameters, "x")
    assert Placement.from_parameters({}, "x") is None
