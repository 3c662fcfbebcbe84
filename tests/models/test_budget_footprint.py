"""The memory budget counts what a model costs once it has served, not only what its load allocated.

ONNX Runtime allocates its arena and plans its buffers on a session's first run: for ResNet-18 some
25 of the 75 MB one more copy costs. Measured at load alone, the footprint missed that, and the
budget let about half as many models again stay READY as it holds. The scenario, from a review: on
demand, with MODEL_MEMORY_BUDGET_MB at 3.5 times what one more ResNet-18 costs in RSS after its first
inference, eight copies requested round-robin must leave at most three READY at once, and the READY
models' real resident memory within the budget.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.models import export_resnet18
from modelserve.models.budget import MemoryBudget
from modelserve.models.memory import release_freed_memory, rss_bytes
from modelserve.types import InferenceRequest
from tests.models.conftest import Factory

COPIES = 8
ROUNDS = 2
BUDGET_MODELS = 3.5


@pytest.fixture(scope="module")
def resnets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight models, each the same ResNet-18 file under its own name."""
    root = tmp_path_factory.mktemp("resnets")
    original = root / "resnet_0" / "1" / "model.onnx"
    export_resnet18(original)
    for copy in range(1, COPIES):
        version = root / f"resnet_{copy}" / "1"
        version.mkdir(parents=True)
        (version / "model.onnx").symlink_to(original)
    return root


def request(copy: int) -> InferenceRequest:
    return InferenceRequest(f"resnet_{copy}", {"input": np.ones((1, 3, 224, 224), np.float32)})


def settled_rss() -> int:
    release_freed_memory()
    return rss_bytes()


async def test_resnet_copies_on_demand_stay_within_the_budget(resnets: Path, make_manager: Factory) -> None:
    # What one more copy costs once it has served, with the runtime's own set-up already paid by another.
    unbudgeted = make_manager(resnets)
    await unbudgeted.start(["resnet_0"])
    await unbudgeted.infer(request(0))
    before = settled_rss()
    await unbudgeted.load("resnet_1")
    await unbudgeted.infer(request(1))
    cost = settled_rss() - before
    await unbudgeted.close()
    assert cost > 40 * 2**20, f"one more ResNet-18 costs {cost / 2**20:.0f} MiB: the measurement is broken"

    baseline = settled_rss()
    limit = int(BUDGET_MODELS * cost)
    budget = MemoryBudget("CPU", limit, "MODEL_MEMORY_BUDGET_MB", rss_bytes)
    manager = make_manager(resnets, on_demand=True, budgets=[budget])
    most_ready, most_counted, most_rss = 0, 0, 0
    for copy in [c for _ in range(ROUNDS) for c in range(COPIES)]:
        response = await manager.infer(request(copy))
        assert response.outputs["logits"].shape == (1, 1000)
        most_ready = max(most_ready, len(manager.ready()))
        most_counted = max(most_counted, sum(r.memory_bytes for r in manager.ready()))
        most_rss = max(most_rss, settled_rss() - baseline)

    assert most_ready <= int(BUDGET_MODELS), f"{most_ready} copies READY at once under a budget of {BUDGET_MODELS}"
    assert most_counted <= limit
    # Real memory, not the budget's own accounting. Each load and unload leaves a few MiB of the heap in
    # fragments that malloc_trim cannot return (docs/TROUBLESHOOTING.md): a quarter over, at most.
    assert most_rss <= 1.25 * limit, f"READY models held {most_rss / 2**20:.0f} MiB of a {limit / 2**20:.0f} MiB budget"


async def test_a_footprint_counts_what_the_first_request_allocates(resnets: Path, make_manager: Factory) -> None:
    budget = MemoryBudget("CPU", 2**40, "MODEL_MEMORY_BUDGET_MB", rss_bytes)
    manager = make_manager(resnets, budgets=[budget])
    await manager.start(["resnet_0"])  # the runtime's one-off set-up, out of the way
    await manager.infer(request(0))
    shares = []
    for copy in range(1, 4):
        await manager.load(f"resnet_{copy}")
        counted = manager.get(f"resnet_{copy}").memory_bytes
        before = settled_rss()
        await manager.infer(request(copy))
        shares.append((settled_rss() - before) / counted)
    # Measured at load alone, ONNX Runtime's first run then added some 12 % more (its arena, its plans) to
    # every copy; counted after a first run, some 3 %. A heap fragmented by earlier work may grow once by a
    # few MiB more on any request, so the least of three copies is the figure that tells the two apart.
    assert min(shares) < 0.06, f"the first request added {', '.join(f'{s:.1%}' for s in shares)} to each copy"
