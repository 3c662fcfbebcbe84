"""The OpenAI-compatible request bodies, as the official SDK sends them; a malformed one is a 400 naming
the field (``errors.validation_problems``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelserve.generative.params import MAX_STOP_STRINGS


class StreamOptions(BaseModel):
    """``stream_options``: a last chunk with the usage, before ``[DONE]``."""

    include_usage: bool = False


class TextPart(BaseModel):
    """A text part of a message's content (the only kind a text model takes)."""

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One message of a conversation."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] = Field(description="The text, or a list of text parts.")

    def text(self) -> str:
        """The content as one string."""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class _Sampling(BaseModel):
    """What both endpoints take. Unknown fields are ignored, as OpenAI's API ignores them; fields the
    engine cannot honour are refused rather than ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, description="A generative model of the repository (GET /v1/models).")
    max_tokens: int | None = Field(None, ge=1, description="Tokens to generate at most; default: the rest.")
    temperature: float | None = Field(None, ge=0, le=2, description="0 is greedy decoding.")
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1, description="vLLM's extension: -1 or 0 for no limit.")
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP_STRINGS)] | None = None
    seed: int | None = Field(None, ge=0, lt=2**63)
    n: Literal[1] = Field(1, description="One choice per request.")
    presence_penalty: Literal[0] | None = Field(None, description="Not supported by the CPU engine: 0 only.")
    frequency_penalty: Literal[0] | None = Field(None, description="Not supported by the CPU engine: 0 only.")
    ignore_eos: bool = Field(False, description="vLLM's extension: generate max_tokens, ignoring end of text.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256, description="Your end user's id, logged as user_id.")

    def sampling(self, max_tokens: int | None) -> dict[str, Any]:
        """The sampling parameters asked for; None where the model's defaults apply."""
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        top_k = None if self.top_k is None else max(self.top_k, 0)
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": top_k,
            "max_tokens": max_tokens,
            "stop": None if stop is None else tuple(stop),
            "seed": self.seed,
            "ignore_eos": self.ignore_eos,
        }

    @property
    def include_usage(self) -> bool:
        """Whether a streamed answer ends with a usage chunk."""
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="The newer name of max_tokens.")

    def conversation(self) -> list[dict[str, str]]:
        """The messages as the chat template takes them."""
        return [{"role": m.role, "content": m.text()} for m in self.messages]


class CompletionRequest(_Sampling):
    """``POST /v1/completions``: a prompt as text, or as token ids."""

    prompt: Annotated[str, Field(min_length=1)] | Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
    echo: Literal[False] = False
