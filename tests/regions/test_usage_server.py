"""A real server accounts what its models used in its database, SQLite or PostgreSQL, under its REGION:
exactly the requests and samples answered, compute and memory held; and its /metrics shows the pool
of the engine that writes them."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from sqlalchemy import select

from modelserve.db import open_engine
from modelserve.history.schema import UsageBucket
from modelserve.regions.usage import CPU, USAGE_BUCKET_S
from tests.e2e.server import serve, stop

MLP = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [0.0] * 16}]}
MLP_3 = {"inputs": [{"name": "input", "shape": [3, 16], "datatype": "FP32", "data": [0.0] * 48}]}
SIMPLE = {
    "inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16},
    ]
}


def test_usage_lands_in_the_database_by_shutdown(built_repository: Path, tmp_path: Path, database_url: str) -> None:
    started = time.time()
    with serve(
        built_repository,
        tmp_path / "server.log",
        "--history-flush-interval-sec",
        "3600",  # only the sample and the write at shutdown can store them
        env={"DATABASE_URL": database_url, "REGION": "eu-west-1"},
    ) as running:
        for body in (MLP, MLP, MLP_3):
            assert httpx.post(f"{running.url}/v2/models/mlp/infer", json=body).status_code == 200
        for _ in range(2):
            assert httpx.post(f"{running.url}/v2/models/simple/infer", json=SIMPLE).status_code == 200
        stop(running.process, 30)
        assert running.process.returncode == 0, running.output()
    engine = open_engine(database_url)
    with engine.connect() as connection:
        rows = {row.model: row for row in connection.execute(select(UsageBucket.__table__))}
    engine.dispose()

    assert {"mlp", "simple"} <= rows.keys()
    mlp, simple = rows["mlp"], rows["simple"]
    assert (mlp.requests, mlp.inferences, simple.requests, simple.inferences) == (3, 5, 2, 2)
    for row in (mlp, simple):
        assert (row.region, row.device, row.peer_region, row.tokens, row.transfer_bytes) == ("eu-west-1", CPU, "", 0, 0)
        assert row.compute_seconds > 0
        assert started - USAGE_BUCKET_S <= row.bucket_start <= time.time()


def test_usage_is_written_while_serving_and_the_pool_shows_on_metrics(built_repository: Path, tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'usage.sqlite3'}"
    with serve(
        built_repository,
        tmp_path / "server.log",
        "--history-flush-interval-sec",
        "0.2",
        "--db-pool-size",
        "3",
        env={"DATABASE_URL": database_url},
    ) as running:
        assert httpx.post(f"{running.url}/v2/models/mlp/infer", json=MLP).status_code == 200
        engine = open_engine(database_url)
        deadline = time.monotonic() + 20
        written: list[int] = []
        while not written:
            assert time.monotonic() < deadline, f"no usage written within 20 s:\n{running.output()}"
            with engine.connect() as connection:
                query = select(UsageBucket.requests).where(UsageBucket.model == "mlp", UsageBucket.region == "local")
                written = [requests for (requests,) in connection.execute(query) if requests]
            time.sleep(0.1)
        assert written == [1]
        with engine.connect() as connection:
            held = connection.execute(select(UsageBucket.model, UsageBucket.memory_byte_seconds)).all()
        engine.dispose()
        assert {model for model, byte_seconds in held if byte_seconds > 0} >= {"mlp", "simple", "iris"}, (
            "every loaded model holds memory, used or not"
        )

        metrics = httpx.get(f"{running.url}/metrics").text
        assert 'model_serving_db_pool_size{pool="history"} 3.0' in metrics
        assert 'model_serving_db_pool_overflow{pool="history"} 0.0' in metrics
