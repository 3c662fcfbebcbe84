"""Requests to a real server land in the traffic history's database, SQLite or PostgreSQL, by shutdown."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
from sqlalchemy import select

from modelserve.db import open_engine
from modelserve.history.schema import TrafficBucket
from tests.e2e.server import serve, stop


def test_requests_to_a_real_server_land_in_the_database(
    built_repository: Path, tmp_path: Path, database_url: str
) -> None:
    started = time.time()
    # The test cluster trusts loopback and ignores passwords: one here checks that it is never logged.
    database_url = database_url.replace("postgres@", "postgres:never-logged@")
    with serve(
        built_repository,
        tmp_path / "server.log",
        "--history-flush-interval-sec",
        "3600",  # only the write at shutdown can store them
        env={"DATABASE_URL": database_url},
    ) as running:
        body = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [0.0] * 16}]}
        for _ in range(5):
            assert httpx.post(f"{running.url}/v2/models/mlp/infer", json=body).status_code == 200
        assert httpx.post(f"{running.url}/v1/predict", json={"model": "mlp", "inputs": [[0.0] * 16]}).status_code == 200
        bad = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [0.0] * 3}]}
        assert httpx.post(f"{running.url}/v2/models/mlp/infer", json=bad).status_code == 400
        assert httpx.post(f"{running.url}/v2/models/no_such_model/infer", json=body).status_code == 404
        with grpcclient.InferenceServerClient(running.grpc_address) as client:
            item = grpcclient.InferInput("input", [1, 16], "FP32")
            item.set_data_from_numpy(np.zeros((1, 16), np.float32))
            client.infer("mlp", [item])
        stop(running.process, 30)
        assert running.process.returncode == 0, running.output()
    engine = open_engine(database_url)
    with engine.connect() as connection:
        written = list(connection.execute(select(TrafficBucket.__table__)))
    engine.dispose()
    assert {row.model for row in written} == {"mlp"}, "a model that does not exist is not recorded"
    assert sum(row.requests for row in written) == 8
    assert sum(row.ok for row in written) == 7
    assert sum(row.invalid for row in written) == 1
    assert all(started - 60 <= row.bucket_start <= time.time() for row in written)
    assert {row.version for row in written} <= {"1", ""}
    assert "traffic history in " in running.output()
    assert "never-logged" not in running.output()
