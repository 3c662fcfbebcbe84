"""What a gRPC request for a generative model asks for, read as Triton's vLLM backend reads it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tritonclient.grpc import service_pb2

from modelserve.errors import InvalidInput
from modelserve.protocol.grpc_generation import read


def request(prompt: str = "Hello", parameters: dict[str, Any] | None = None, **inputs: Any) -> Any:
    """A ModelInferRequest with typed contents: ``text_input``, then BOOL inputs, or BYTES for text values."""
    message = service_pb2.ModelInferRequest(model_name="tiny-llm")
    message.inputs.add(name="text_input", datatype="BYTES", shape=[1]).contents.bytes_contents.append(prompt.encode())
    for name, value in inputs.items():
        if isinstance(value, bool):
            message.inputs.add(name=name, datatype="BOOL", shape=[1]).contents.bool_contents.append(value)
        else:
            message.inputs.add(name=name, datatype="BYTES", shape=[1]).contents.bytes_contents.append(value.encode())
    for key, value in (parameters or {}).items():
        if isinstance(value, bool):
            message.parameters[key].bool_param = value
        elif isinstance(value, int):
            message.parameters[key].int64_param = value
        else:
            message.parameters[key].string_param = value
    return message


def test_sampling_parameters_come_as_json_with_text_values_as_triton_samples_send_them() -> None:
    sampling = {"temperature": "0.1", "top_p": "0.95", "max_tokens": "100", "stop": "\n"}
    asked = read(request(sampling_parameters=json.dumps(sampling), stream=True), None)
    assert asked.sampling == {"temperature": 0.1, "top_p": 0.95, "max_tokens": 100, "stop": ("\n",)}
    assert asked.stream
    assert asked.prompt == "Hello"


def test_without_the_json_input_the_request_parameters_are_read() -> None:
    parameters = {"max_tokens": 8, "temperature": "0", "stream": "true", "triton_enable_empty_final_response": True}
    asked = read(request(parameters=parameters), None)
    assert asked.sampling == {"max_tokens": 8, "temperature": 0.0}
    assert asked.stream


def test_the_stream_input_wins_over_the_parameter() -> None:
    assert not read(request(parameters={"stream": True}, stream=False), None).stream


def test_outputs_are_the_text_and_what_was_enabled_and_asked_for() -> None:
    assert read(request(), None).outputs == {"text_output"}
    enabled = read(request(return_finish_reason=True, return_num_output_tokens=True), None)
    assert enabled.outputs == {"text_output", "finish_reason", "num_output_tokens"}
    message = request(return_finish_reason=True)
    message.outputs.add(name="finish_reason")
    assert read(message, None).outputs == {"finish_reason"}


def test_the_prompt_comes_first_only_when_exclude_input_in_output_is_false() -> None:
    assert not read(request(), None).prepend
    assert read(request(exclude_input_in_output=False), None).prepend
    assert not read(request(exclude_input_in_output=True), None).prepend


@pytest.mark.parametrize(
    ("message", "words"),
    [
        (request(stream=True, exclude_input_in_output=False), "not allowed when streaming"),
        (request(sampling_parameters="[1, 2]"), "must be a JSON object"),
        (request(sampling_parameters=json.dumps({"top_p": 0})), "top_p"),
        (request(parameters={"stream": "maybe"}), "parameter 'stream' must be true or false"),
        (request(stream="yes"), "input 'stream' must be BOOL"),
        (request(prompt_tokens="1 2 3"), "input 'prompt_tokens' is not one a generative model takes"),
        (request(return_cumulative_logprob=True), "return_cumulative_logprob is not supported"),
    ],
)
def test_what_cannot_be_served_is_refused_naming_it(message: Any, words: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        read(message, None)
    assert words in refused.value.message


def test_a_request_without_a_prompt_is_refused() -> None:
    message = service_pb2.ModelInferRequest(model_name="tiny-llm")
    message.inputs.add(name="stream", datatype="BOOL", shape=[1]).contents.bool_contents.append(True)
    with pytest.raises(InvalidInput, match="needs the BYTES input 'text_input'"):
        read(message, None)
