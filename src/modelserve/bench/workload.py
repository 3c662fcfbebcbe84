"""Requests for a benchmark, built once from a model's metadata: random tensors of the right shapes,
encoded as tritonclient encodes them (HTTP JSON, HTTP binary) or as a ModelInferRequest (gRPC)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import orjson
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2

from modelserve.bench.loadgen import GrpcTarget, HttpTarget
from modelserve.protocol.raw import to_raw
from modelserve.types import datatype_of, numpy_dtype

PROTOCOLS = ("http-json", "http-binary", "grpc")


@dataclass(frozen=True)
class Workload:
    """A model, its inputs for one request, how many samples that request carries, and the bearer
    token (API key or JWT) every request sends when the server needs one."""

    model: str
    inputs: dict[str, np.ndarray[Any, Any]]
    batch: int
    token: str | None = None

    @classmethod
    def from_server(cls, url: str, model: str, batch: int = 1, seed: int = 0, *, token: str | None = None) -> Workload:
        """Random inputs shaped by the model's metadata (the batch dimension set to ``batch``)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        metadata = httpx.get(f"{url}/v2/models/{model}", headers=headers, timeout=30).raise_for_status().json()
        rng = np.random.default_rng(seed)
        inputs = {}
        for spec in metadata["inputs"]:
            shape = [batch if i == 0 and d == -1 else (d if d > 0 else 1) for i, d in enumerate(spec["shape"])]
            dtype = numpy_dtype(spec["datatype"])
            if dtype.kind == "f":
                inputs[spec["name"]] = rng.standard_normal(shape).astype(dtype)
            elif dtype.kind in "iu":
                inputs[spec["name"]] = rng.integers(0, 100, shape).astype(dtype)
            else:
                raise ValueError(f"benchmark inputs of datatype {spec['datatype']} are not generated")
        return cls(model, inputs, batch, token)

    def target(self, protocol: str, url: str, grpc_address: str) -> HttpTarget | GrpcTarget:
        """The pre-encoded request for ``protocol`` (one of PROTOCOLS)."""
        if protocol == "grpc":
            message = service_pb2.ModelInferRequest(model_name=self.model)
            for name, array in self.inputs.items():
                message.inputs.add(name=name, datatype=_datatype(array), shape=array.shape)
                message.raw_input_contents.append(bytes(to_raw(array)))
            metadata = (("authorization", f"Bearer {self.token}"),) if self.token else None
            return GrpcTarget(grpc_address, message.SerializeToString(), metadata)
        credentials = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        path = f"/v2/models/{self.model}/infer"
        if protocol == "http-json":  # JSON both ways, as a client without the binary extension sends it
            tensors = [
                {"name": n, "datatype": _datatype(a), "shape": list(a.shape), "data": a.reshape(-1)}
                for n, a in self.inputs.items()
            ]
            body = orjson.dumps({"inputs": tensors}, option=orjson.OPT_SERIALIZE_NUMPY)
            return HttpTarget(url, path, body, {"Content-Type": "application/json", **credentials})
        items = []
        for name, array in self.inputs.items():
            item = httpclient.InferInput(name, list(array.shape), _datatype(array))
            item.set_data_from_numpy(array, binary_data=True)
            items.append(item)
        body, json_size = httpclient.InferenceServerClient.generate_request_body(items)
        headers = {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(json_size),
            **credentials,
        }
        return HttpTarget(url, path, body, headers)


def _datatype(array: np.ndarray[Any, Any]) -> str:
    return datatype_of(array.dtype)
