"""Peers to measure in the same run as modelserve: Seldon MLServer, installed in a venv of its own.

MLServer's dependencies conflict with ours (pydantic, protobuf, fastapi pins), so it lives in
`.bench/mlserver` (created on first use: a few minutes, then reused) and runs as its own process,
serving the same ONNX file through a small custom runtime (benchmarks/mlserver/onnx_runtime.py),
with MLServer's default settings otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.startup import free_port, wait_ready

ROOT = Path(__file__).resolve().parent.parent
MLSERVER_VENV = ROOT / ".bench" / "mlserver"
# uvloop 0.22 made get_event_loop() raise outside a running loop, which kills MLServer 1.7's workers.
MLSERVER_REQUIREMENTS = ["mlserver>=1.7,<1.8", "uvloop<0.22", "onnxruntime", "numpy"]


def mlserver_venv() -> Path:
    """The venv holding MLServer, created on first use."""
    binary = MLSERVER_VENV / "bin" / "mlserver"
    if not binary.exists():
        print(f"installing {' '.join(MLSERVER_REQUIREMENTS)} into {MLSERVER_VENV} (first run only)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
        pip = [str(MLSERVER_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, *MLSERVER_REQUIREMENTS], check=True)
    return binary


@contextmanager
def mlserver(model: str, model_file: Path, workdir: Path) -> Iterator[tuple[str, str]]:
    """MLServer serving ``model_file`` as ``model``: (HTTP URL, gRPC address) until the block ends."""
    binary = mlserver_venv()
    folder = workdir / "mlserver" / model
    if folder.parent.exists():
        shutil.rmtree(folder.parent)
    folder.mkdir(parents=True)
    shutil.copy(model_file, folder / "model.onnx")
    shutil.copy(ROOT / "benchmarks" / "mlserver" / "onnx_runtime.py", folder / "onnx_runtime.py")
    (folder / "model-settings.json").write_text(
        json.dumps({"name": model, "implementation": "onnx_runtime.OnnxModel", "parameters": {"uri": "./model.onnx"}})
    )
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    settings = {"host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port}
    (folder.parent / "settings.json").write_text(json.dumps(settings))
    log = (workdir / "mlserver.log").open("wb")
    process = subprocess.Popen([str(binary), "start", str(folder.parent)], stdout=log, stderr=log, cwd=folder.parent)
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_ready(process, f"{url}/v2/models/{model}/ready", 180, f"MLServer (log: {workdir / 'mlserver.log'})")
        yield url, f"127.0.0.1:{grpc_port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
