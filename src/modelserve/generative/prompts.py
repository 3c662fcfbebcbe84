"""What both engines do the same before a generation is queued: prompts turned into token ids with the
model's own tokenizer and chat template, and a prompt checked against the vocabulary and the context, so
that an impossible request is a 400 naming what to change, whichever engine runs the model."""

from __future__ import annotations

import asyncio
from typing import Any

from modelserve.errors import InvalidInput
from modelserve.generative.params import SamplingParams

# Up to this many characters a prompt is tokenized on the event loop: it takes about 100 microseconds
# (a chat template about as long), no more than handing it to a thread and back costs, and the hop is
# time to first token. A longer one goes to a thread so the loop serves the others meanwhile.
INLINE_CHARACTERS = 256


class Prompts:
    """An engine's tokenizer, vocabulary size and context length, and the checks they allow."""

    tokenizer: Any
    vocab_size: int
    max_model_len: int

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """A chat's prompt token ids through the model's chat template."""
        if not self.tokenizer.chat_template:
            raise InvalidInput("this model has no chat template; use /v1/completions with a prompt")
        encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = encoded["input_ids"] if isinstance(encoded, dict) or hasattr(encoded, "keys") else encoded
        return [int(i) for i in ids]

    def encode(self, text: str) -> list[int]:
        """A plain prompt's token ids."""
        return [int(i) for i in self.tokenizer(text)["input_ids"]]

    async def tokenize(self, text: str) -> list[int]:
        """``encode`` from the event loop: in place when short, in a thread when long."""
        if len(text) <= INLINE_CHARACTERS:
            return self.encode(text)
        return await asyncio.to_thread(self.encode, text)

    async def tokenize_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """``encode_chat`` from the event loop: in place when short, in a thread when long."""
        if sum(len(str(m.get("content", ""))) for m in messages) <= INLINE_CHARACTERS:
            return self.encode_chat(messages)
        return await asyncio.to_thread(self.encode_chat, messages)

    def room(self, prompt_ids: list[int], params: SamplingParams) -> int:
        """The most tokens the generation may produce; InvalidInput when the prompt cannot be run."""
        if not prompt_ids:
            raise InvalidInput("the prompt is empty")
        if max(prompt_ids) >= self.vocab_size:
            raise InvalidInput(
                f"the prompt holds token id {max(prompt_ids)}; this model's vocabulary has {self.vocab_size}"
            )
        room = self.max_model_len - len(prompt_ids)
        if room < 1:
            raise InvalidInput(
                f"the prompt is {len(prompt_ids)} tokens; this model's max_model_len is {self.max_model_len}, "
                "which must leave room for at least one generated token: shorten the prompt"
            )
        if params.max_tokens is not None and params.max_tokens > room:
            raise InvalidInput(
                f"max_tokens {params.max_tokens} plus the prompt's {len(prompt_ids)} tokens exceed max_model_len "
                f"{self.max_model_len}; ask for at most {room}"
            )
        return params.max_tokens or room
