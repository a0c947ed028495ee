"""Random-weight miniatures of the packaged models, with their real tokenizers: a 2-layer, 32-wide BERT (minilm's
tokenizer) and a 2-layer, 16-wide Llama (SmolLM2's architecture and tokenizer). They load and train in
milliseconds, for tests of mechanics and for sweeps that run every command many times; they learn nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

from adaptlab.models.loading import resolve_model

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def save_tiny_bert(directory: Path, mean_pooling: bool = False) -> Path:
    """``mean_pooling``: declare sentence-transformers mean pooling, as minilm does (its classifiers then read the
    mean of the token vectors)."""
    import json

    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(directory)
    minilm = Path(resolve_model("minilm").path)
    for name in _TOKENIZER_FILES:
        shutil.copy(minilm / name, Path(directory) / name)
    if mean_pooling:
        (Path(directory) / "1_Pooling").mkdir()
        modules = json.loads((minilm / "modules.json").read_text())[:2]  # Transformer, Pooling (not Normalize)
        (Path(directory) / "modules.json").write_text(json.dumps(modules))
        pooling = json.loads((minilm / "1_Pooling" / "config.json").read_text())
        (Path(directory) / "1_Pooling" / "config.json").write_text(json.dumps({**pooling, "word_embedding_dimension": 32}))
    return Path(directory)


def save_tiny_llama(directory: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m").path)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=32, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return Path(directory)
