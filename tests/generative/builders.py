"""A tiny Llama-architecture model with random weights and a locally trained tokenizer.

No model hub is reachable from the tests, so a generative model is built here: a byte-level BPE
tokenizer trained with `tokenizers` on a bundled paragraph, and a `LlamaConfig` small enough that a
forward pass takes a fraction of a millisecond, saved with `save_pretrained` as a Hugging Face folder
(config.json, model.safetensors, tokenizer.json) exactly as a real model is published.
"""

from __future__ import annotations

from pathlib import Path

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
    model = LlamaForCausalLM(config)
    model.eval()
    model.save_pretrained(folder)
    return folder
