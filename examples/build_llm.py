"""Build a tiny generative model: a random Llama and a tokenizer trained here, as a Hugging Face folder.

Nothing is downloaded. The tokenizer is a byte-level BPE trained with `tokenizers` on the paragraph
below; the model is a `LlamaConfig` small enough that a token takes about a millisecond on a CPU, with
random weights from a fixed seed, saved with `save_pretrained` (config.json, model.safetensors,
tokenizer.json) exactly as a real model is published. Its text is gibberish; everything around it (the
OpenAI-compatible API, streaming, continuous batching, token metrics) is real. `make run` builds it into
the example repository beside the other examples; the tests build theirs with the same function.

    .venv/bin/python examples/build_llm.py [REPO_DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_REPO = Path(__file__).resolve().parent / "model_repository"
NAME = "tiny-llm"
CONFIG = """\
platform: llm
llm:
  max_model_len: 512
  max_num_seqs: 8
  max_tokens: 32
  temperature: 0.7
"""

TEXT = (
    "The model server answers requests for many models at once. Each model lives in a repository folder, "
    "and each version has its own files. Operators load, unload and watch models; clients send prompts and "
    "read the tokens as they are generated. A request waits in a queue, joins the running batch, and leaves "
    "it when its answer is complete. Tokens are counted, latencies are measured, and every answer is logged. "
    "Hello, world! How are you today? I am fine, thank you. What is the capital of France? Paris is. "
)

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_llama(folder: Path, *, seed: int = 0, layers: int = 2, hidden: int = 64) -> Path:
    """Write a tiny random Llama with its tokenizer to ``folder`` (a version folder) and return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([TEXT] * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=fast.vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        # Weights far from zero make attention sharp, so a wrong position or mask changes the tokens chosen.
        initializer_range=0.5,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def build(repo_dir: Path) -> None:
    """Write the tiny LLM and its config.yaml into ``repo_dir`` unless it is there already."""
    version = repo_dir / NAME / "1"
    if (version / "config.json").is_file():
        print(f"skipped {NAME}/1 (exists)")
    else:
        tiny_llama(version)
        print(f"built   {NAME}/1")
    (repo_dir / NAME / "config.yaml").write_text(CONFIG)


def main() -> None:
    """Parse the command line and build the repository."""
    parser = argparse.ArgumentParser(description="Build the tiny generative model's repository.")
    parser.add_argument("repo_dir", nargs="?", type=Path, default=DEFAULT_REPO, help="repository to fill")
    build(parser.parse_args().repo_dir)


if __name__ == "__main__":
    main()
