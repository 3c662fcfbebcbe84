"""A model deployed as the runbooks deploy one: a single file copied into MODEL_CACHE_DIR, the only
variable set (`kubectl cp scale.onnx pod:/models/` with MODEL_CACHE_DIR=/models), loaded by the runbook's
`/v1/models/{name}/load?model_format=...` and served under the file's stem as version 1."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.builders import scale_onnx
from tests.e2e.server import serve

pytestmark = pytest.mark.e2e
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]}]}


def test_a_file_in_model_cache_dir_alone_is_a_model_the_v1_load_finds(tmp_path: Path) -> None:
    models = tmp_path / "models"
    scale_onnx(models / "scale-v2.onnx", factor=3.0)
    env = {"MODEL_CACHE_DIR": str(models), "MODEL_CONTROL_MODE": "explicit"}
    with serve(None, tmp_path / "server.log", env=env) as server:
        index = httpx.post(f"{server.url}/v2/repository/index", json={}, timeout=30).json()
        assert [(m["name"], m.get("state")) for m in index] == [("scale-v2", "UNAVAILABLE")], index

        wrong = httpx.post(f"{server.url}/v1/models/scale-v2/load", params={"model_format": "tensorrt"}, timeout=30)
        assert wrong.status_code == 400, wrong.text
        assert "onnx" in wrong.text
        loaded = httpx.post(f"{server.url}/v1/models/scale-v2/load", params={"model_format": "onnx"}, timeout=60)
        assert loaded.status_code == 200, loaded.text

        answer = httpx.post(f"{server.url}/v2/models/scale-v2/infer", json=BODY, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == "1"
        assert answer.json()["outputs"][0]["data"] == [3.0] * 4
        # The server's own files in the same folder (its traffic history, load overrides) are no models.
        index = httpx.post(f"{server.url}/v2/repository/index", json={}, timeout=30).json()
        assert [(m["name"], m.get("state")) for m in index] == [("scale-v2", "READY")], index
