"""What the soak sends, and how each answer is judged.

Requests are encoded once, before the load, with the answer the model gives in this process to the same
input (onnxruntime, scikit-learn or TorchScript on the repository's own file), so every 200 is checked
against it, not just counted. A request to the model that is loaded and unloaded may also be refused
(503 or 404 naming that model); a malformed request must be refused with its own 4xx.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2

from modelserve.bench.loadgen import GrpcTarget, HttpTarget
from modelserve.bench.workload import Workload
from modelserve.protocol.raw import to_raw

# One pre-encoded request per protocol; "v1" is the runbooks' POST /v1/predict.
PROTOCOLS = ("http-binary", "http-json", "v1", "grpc")
Arrays = dict[str, np.ndarray[Any, Any]]


class Outcome(StrEnum):
    """The classes an answer falls in; the last three are failures."""

    OK = "ok"
    REFUSED = "expected refusal"
    WRONG = "wrong answer"
    UNEXPECTED = "unexpected status"
    TRANSPORT = "transport error"


FAILURES = (Outcome.WRONG, Outcome.UNEXPECTED, Outcome.TRANSPORT)


@dataclass(frozen=True)
class Answer:
    """What came back: ``code`` is the HTTP status ("200") or the gRPC code ("grpc OK"); ``body`` the
    response body, or a gRPC error's details; ``header_length`` the binary extension's JSON header size."""

    code: str
    body: bytes
    header_length: int | None = None

    @property
    def ok(self) -> bool:
        return self.code in ("200", "grpc OK")

    def error(self) -> str:
        """The error message the server gave ('' when there is none)."""
        if self.code.startswith("grpc"):
            return self.body.decode(errors="replace")
        try:
            document = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return ""
        message = document.get("error") if isinstance(document, dict) else None
        return message if isinstance(message, str) else ""


@dataclass(frozen=True)
class Verdict:
    """An answer's class, its status code, and what went wrong (failures only)."""

    outcome: Outcome
    code: str
    detail: str = ""


Judge = Callable[[Answer], Verdict]


@dataclass(frozen=True)
class Request:
    """One pre-encoded request: a raw HTTP/1.1 request, or a serialised ModelInferRequest for gRPC."""

    what: str
    grpc: bool
    payload: bytes
    judge: Judge


def _decode(protocol: str, answer: Answer, names: list[str]) -> Arrays:
    if protocol == "grpc":
        result = grpcclient.InferResult(service_pb2.ModelInferResponse.FromString(answer.body))
        return {n: result.as_numpy(n) for n in names}
    if protocol == "http-binary":
        binary = httpclient.InferResult.from_response_body(answer.body, header_length=answer.header_length)
        return {n: binary.as_numpy(n) for n in names}
    document = orjson.loads(answer.body)
    if protocol == "v1":
        return {n: np.asarray(document["outputs"][n]) for n in names}
    tensors = {t["name"]: t for t in document["outputs"]}
    return {n: np.asarray(tensors[n]["data"]).reshape(tensors[n]["shape"]) for n in names}


def _same(actual: np.ndarray[Any, Any] | None, expected: np.ndarray[Any, Any]) -> bool:
    if actual is None or actual.shape != expected.shape:
        return False
    if expected.dtype.kind in "biu":
        return bool(np.array_equal(actual, expected))
    # Batched with other requests, a model may sum in another order: last-bit differences only.
    return bool(np.allclose(actual, expected, rtol=1e-4, atol=1e-5))


@dataclass(frozen=True)
class InferenceJudge:
    """A 200 must carry the expected outputs; with ``refusable``, a 503 or 404 naming the model is expected."""

    model: str
    protocol: str
    expected: Arrays
    refusable: bool = False

    def __call__(self, answer: Answer) -> Verdict:
        if answer.ok:
            try:
                outputs = _decode(self.protocol, answer, list(self.expected))
            except Exception as exc:  # any undecodable 200 is a wrong answer, whatever the decoder raised
                return Verdict(Outcome.WRONG, answer.code, f"undecodable answer: {type(exc).__name__}: {exc}")
            wrong = [n for n, e in self.expected.items() if not _same(outputs.get(n), e)]
            if wrong:
                return Verdict(Outcome.WRONG, answer.code, f"outputs {', '.join(wrong)} differ from in-process")
            return Verdict(Outcome.OK, answer.code)
        refusals = ("503", "404", "grpc UNAVAILABLE", "grpc NOT_FOUND")
        if self.refusable and answer.code in refusals and f"'{self.model}'" in answer.error():
            return Verdict(Outcome.REFUSED, answer.code)
        return Verdict(Outcome.UNEXPECTED, answer.code, answer.error() or repr(answer.body[:200]))


@dataclass(frozen=True)
class RefusalJudge:
    """A bad request must be refused with ``code`` and a message saying what is wrong."""

    code: str

    def __call__(self, answer: Answer) -> Verdict:
        if answer.code == self.code and answer.error():
            return Verdict(Outcome.REFUSED, answer.code)
        said = answer.error() or repr(answer.body[:200])
        return Verdict(Outcome.UNEXPECTED, answer.code, f"expected {self.code}: {said}")


def reference(version_dir: Path, inputs: Arrays, outputs: list[str]) -> Arrays:
    """The model file in ``version_dir`` run in this process, as its runtime runs it on the server."""
    if (version_dir / "model.onnx").exists():
        import onnxruntime as ort

        session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
        return dict(zip(outputs, session.run(outputs, inputs), strict=True))
    if (version_dir / "model.joblib").exists():
        import joblib

        estimator = joblib.load(version_dir / "model.joblib")
        (features,) = inputs.values()
        return {name: np.asarray(getattr(estimator, name)(features)) for name in outputs}
    if (version_dir / "model.pt").exists():
        import torch

        module = torch.jit.load(str(version_dir / "model.pt"))  # type: ignore[no-untyped-call]
        with torch.inference_mode():
            result = module(*(torch.from_numpy(a.copy()) for a in inputs.values()))
        tensors = (result,) if isinstance(result, torch.Tensor) else result
        return {name: t.numpy() for name, t in zip(outputs, tensors, strict=True)}
    raise SystemExit(f"no model file the soak can run in {version_dir}")


def inference_requests(
    workload: Workload, expected: Arrays, url: str, grpc_address: str, refusable: bool = False
) -> dict[str, Request]:
    """The workload's request in every protocol, keyed by protocol, each judged against ``expected``."""
    requests = {}
    for protocol in PROTOCOLS:
        what = f"{workload.model} {protocol} batch {workload.batch}"
        judge = InferenceJudge(workload.model, protocol, expected, refusable)
        if protocol == "v1":
            body = {"model": workload.model, "inputs": workload.inputs}
            payload = _http(url, "/v1/predict", orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))
            requests[protocol] = Request(what, False, payload, judge)
            continue
        target = workload.target(protocol, url, grpc_address)
        if isinstance(target, GrpcTarget):
            requests[protocol] = Request(what, True, target.message, judge)
        else:
            requests[protocol] = Request(what, False, target.request, judge)
    return requests


def bad_requests(url: str, grpc_address: str, max_input_bytes: int) -> list[Request]:
    """Malformed requests, each with the status it must get, over HTTP (V2 and /v1) and gRPC."""
    zeros = [0.0] * 16
    good = {"name": "input", "datatype": "FP32", "shape": [1, 16], "data": zeros}
    short = {**good, "shape": [1, 15], "data": zeros[:15]}
    integer = {**good, "datatype": "INT32", "data": [0] * 16}

    def v2(path: str, document: object) -> bytes:
        return _http(url, path, orjson.dumps(document))

    http = [
        ("malformed JSON", _http(url, "/v2/models/mlp/infer", b'{"inputs": ['), "400"),
        ("wrong shape", v2("/v2/models/mlp/infer", {"inputs": [short]}), "400"),
        ("wrong datatype", v2("/v2/models/mlp/infer", {"inputs": [integer]}), "400"),
        ("unknown model", v2("/v2/models/no_such_model/infer", {"inputs": [good]}), "404"),
        ("unknown version", v2("/v2/models/mlp/versions/7/infer", {"inputs": [good]}), "404"),
        ("oversized body", _http(url, "/v2/models/mlp/infer", b" " * (2 * max_input_bytes)), "413"),
        ("malformed JSON /v1", _http(url, "/v1/predict", b'{"model": "mlp", '), "400"),
        ("wrong shape /v1", v2("/v1/predict", {"model": "mlp", "inputs": [[1.0, 2.0]]}), "400"),
        ("unknown model /v1", v2("/v1/predict", {"model": "no_such_model", "inputs": [zeros]}), "404"),
    ]
    grpc = [
        ("unknown model gRPC", _grpc("no_such_model", "", "FP32", np.zeros((1, 16), np.float32)), "grpc NOT_FOUND"),
        ("unknown version gRPC", _grpc("mlp", "7", "FP32", np.zeros((1, 16), np.float32)), "grpc NOT_FOUND"),
        ("wrong shape gRPC", _grpc("mlp", "", "FP32", np.zeros((1, 15), np.float32)), "grpc INVALID_ARGUMENT"),
        ("wrong datatype gRPC", _grpc("mlp", "", "INT32", np.zeros((1, 16), np.int32)), "grpc INVALID_ARGUMENT"),
    ]
    return [
        *(Request(f"bad: {name}", False, payload, RefusalJudge(code)) for name, payload, code in http),
        *(Request(f"bad: {name}", True, payload, RefusalJudge(code)) for name, payload, code in grpc),
    ]


def control_request(url: str, path: str) -> Request:
    """A load or unload call: it must answer 200."""
    return Request(f"control: POST {path}", False, _http(url, path, b""), _control)


def _control(answer: Answer) -> Verdict:
    if answer.code == "200":
        return Verdict(Outcome.OK, answer.code)
    return Verdict(Outcome.UNEXPECTED, answer.code, answer.error() or repr(answer.body[:200]))


def _http(url: str, path: str, body: bytes) -> bytes:
    return HttpTarget(url, path, body, {"Content-Type": "application/json"}).request


def _grpc(model: str, version: str, datatype: str, array: np.ndarray[Any, Any]) -> bytes:
    message = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    message.inputs.add(name="input", datatype=datatype, shape=array.shape)
    message.raw_input_contents.append(bytes(to_raw(array)))
    return bytes(message.SerializeToString())
