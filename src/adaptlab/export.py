"""Export a generator (an SFT, DPO or PPO artifact, or any causal LM) to GGUF, and to an Ollama model directory.

A LoRA adapter is merged into the base weights first (``load_causal_lm`` merges on load); the merged model is then
written with the ``gguf`` package's ``GGUFWriter``: its tensor names come from ``gguf.get_tensor_name_map``, its
special tokens, merges and chat template from ``gguf.SpecialVocab``, its quantisation from ``gguf.quants``. Nothing
of the format is written by hand. What is adaptlab's own is the mapping of a transformers config onto GGUF's
metadata keys and the tokenizer's vocabulary listing, both as llama.cpp's ``convert_hf_to_gguf.py`` does them.

Only the llama architecture is mapped (SmolLM2, Llama 2/3, TinyLlama, Mistral-style llama checkpoints) with a
byte-level BPE tokenizer (``tokenizer.ggml.model = gpt2``); anything else is refused in one line before a byte
is written.

Types: ``f32`` stores every weight as float32 (lossless: logits as the artifact's, for checks and further
conversion, at twice f16's size); ``f16`` stores every matrix in half precision and every vector (the norms) in float32; ``q8_0`` stores
every matrix whose rows are a multiple of 32 in Q8_0 (8-bit blocks of 32 with one f16 scale), the rest as f16.
Measured on an SFT LoRA artifact of SmolLM2-135M loaded back through transformers' GGUF loader
(tests/test_export.py, 20 chat prompts, every position of prompt + 20-token greedy reply, all 49,152 logits):
the export adds nothing beyond the chosen precision (under 1e-3 against the artifact with its matrices rounded as
the file stores them), and the greedy replies are the same. The rounding itself moves the logits (up to ~40):
f16 by up to ~0.06 (1.5e-3 of their scale), q8_0 by up to ~1.6; ``F16_LOGIT_TOLERANCE`` and
``Q8_0_LOGIT_TOLERANCE`` are those figures with headroom.

The Ollama directory holds ``model.gguf`` and a ``Modelfile`` whose ``TEMPLATE`` is the Go-template form of the
chat template (ChatML templates, such as SmolLM2's, are recognised by rendering them, and their default system
message becomes ``SYSTEM``), with a ``PARAMETER stop`` per end-of-turn token. A template that is not ChatML is
not guessed: the Modelfile then says so in a comment, and Ollama reads the chat template stored in the GGUF.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from adaptlab._io import atomic_directory, atomic_file, umask_mode
from adaptlab.errors import AdaptlabError

TYPES = ("f32", "f16", "q8_0")
#: the largest difference from the artifact's logits a round trip may show, as measured on SmolLM2-135M (see the
#: module's docstring): f16 0.058, q8_0 1.58; with headroom. Relative to the logits' scale f16 is within 1e-2.
F16_LOGIT_TOLERANCE = 0.1
Q8_0_LOGIT_TOLERANCE = 3.0
MODELFILE = "Modelfile"
GGUF_NAME = "model.gguf"
_MAPPED = {"llama": "LlamaForCausalLM"}  # transformers model_type -> the architecture GGUF's llama arch holds


def export_gguf(artifact: str | Path, output: str | Path, type: str = "f16", *, overwrite: bool = False) -> dict:
    """Write ``artifact`` (a generator artifact, a base model name or a causal LM directory) to the GGUF file
    ``output`` in ``type`` (``f16`` or ``q8_0``); a file already there is replaced only with ``overwrite``.
    Returns a summary: ``path``, ``type``, ``architecture``, ``tensors``, ``size_bytes``."""
    from adaptlab.jobs import check_output

    _check_type(type)
    output = Path(output).expanduser()
    if output.is_dir():
        raise AdaptlabError(f"--output '{output}' is a directory; give the path of the .gguf file to write")
    _check_source(artifact)
    check_output(output, overwrite, inputs=[artifact])
    model, tokenizer = _load(artifact)
    return _write_gguf(model, tokenizer, output, type, name=_display_name(artifact))


def export_ollama(artifact: str | Path, output: str | Path, type: str = "f16", *, overwrite: bool = False) -> dict:
    """Write an Ollama model directory ``output``: ``model.gguf`` (as ``export_gguf``) and a ``Modelfile`` with
    the chat template and stop tokens (``ollama create NAME -f output/Modelfile``). A directory this command wrote
    is replaced only with ``overwrite``; one that holds anything else is refused. Returns the GGUF summary plus
    ``modelfile`` (its path), ``template`` (``chatml`` or None where it was not converted) and ``stop``."""
    from adaptlab.jobs import check_output_directory

    _check_type(type)
    output = Path(output).expanduser()
    _check_source(artifact)
    check_output_directory(output, [artifact], marker=(MODELFILE,))
    if (output / MODELFILE).exists() and not overwrite:
        raise AdaptlabError(f"--output '{output}' already holds an Ollama export; pass --overwrite to replace it, or "
                            "choose another --output")
    model, tokenizer = _load(artifact)
    modelfile, template, stops = modelfile_text(tokenizer)
    with atomic_directory(output) as tmp:
        summary = _write_gguf(model, tokenizer, tmp / GGUF_NAME, type, name=_display_name(artifact))
        with atomic_file(tmp / MODELFILE) as handle:
            handle.write(modelfile)
    return {**summary, "path": str(output / GGUF_NAME), "modelfile": str(output / MODELFILE), "template": template,
            "stop": stops}


# -- checks, before any model loads ---------------------------------------------------------------------------
def _check_type(type: str) -> None:
    if type not in TYPES:
        raise AdaptlabError(f"--type '{type}' is not one of {', '.join(TYPES)}")


def _check_source(artifact: str | Path) -> None:
    """What can be refused without loading: a missing path, a classifier artifact, an encoder, a prompt-learning
    adapter (its virtual tokens are not weights a GGUF can hold)."""
    from adaptlab.models.loading import check_model

    name = str(artifact)
    path = Path(name).expanduser()
    if not path.exists() and (path.suffix or os.sep in name or name.startswith((".", "~"))):
        raise AdaptlabError(f"artifact '{artifact}' does not exist; give a generator artifact directory, a local "
                            "causal LM directory or a model name such as smollm2-135m")
    check_model(name, decoder=True)
    adapter = path / "adapter" / "adapter_config.json"
    if adapter.is_file() and json.loads(adapter.read_text(encoding="utf-8")).get("peft_type") != "LORA":
        raise AdaptlabError(f"artifact '{artifact}' is a prompt-learning adapter (virtual tokens, not weights); only "
                            "full and LoRA artifacts can be exported to GGUF")


def _display_name(artifact: str | Path) -> str:
    return Path(str(artifact)).expanduser().name or str(artifact)


def _load(artifact: str | Path):
    from adaptlab.models.causal import load_causal_lm

    model, tokenizer, _ = load_causal_lm(str(artifact), "cpu")  # LoRA adapters are merged on load
    config = model.config
    if config.model_type not in _MAPPED:
        architecture = (getattr(config, "architectures", None) or [config.model_type])[0]
        raise AdaptlabError(f"model '{artifact}' is a {architecture} ('{config.model_type}'); the GGUF export maps "
                            f"only the llama architecture ({', '.join(_MAPPED.values())}: SmolLM2, Llama, TinyLlama)")
    return model, tokenizer


# -- the GGUF file --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _atomic_path(final: Path) -> Iterator[Path]:
    """A temporary sibling path of ``final`` for a writer that opens files itself; renamed into place on success."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    os.close(fd)
    os.chmod(tmp, umask_mode(0o666))
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_gguf(model, tokenizer, output: Path, type: str, *, name: str) -> dict:
    import gguf

    config = model.config
    with tempfile.TemporaryDirectory(prefix="adaptlab-export-") as scratch:
        tokenizer.save_pretrained(scratch)  # what gguf.SpecialVocab reads: tokenizer.json, its config, the template
        config.to_json_file(Path(scratch) / "config.json")
        tokens, token_types = vocabulary(tokenizer, config.vocab_size)
        pre = pre_tokenizer_name(Path(scratch) / "tokenizer.json")
        special = gguf.SpecialVocab(scratch, load_merges=True, n_vocab=len(tokens))
    for kind in ("bos", "eos"):  # what the tokenizer does to plain text, where its files do not say
        special.add_special_token.setdefault(kind, _adds(tokenizer, kind))
    if not special.merges:
        raise AdaptlabError(f"model '{name}': its tokenizer has no BPE merges; the GGUF export maps only byte-level "
                            "BPE tokenizers (GPT-2 style, as SmolLM2's and Llama 3's)")
    tensors = list(_tensors(model, type))
    with _atomic_path(output) as tmp:
        writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
        _add_hyperparameters(writer, config, name, type)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_types(token_types)
        special.add_to_gguf(writer, quiet=True)
        for tensor_name, data, raw_dtype in tensors:
            writer.add_tensor(tensor_name, data, raw_dtype=raw_dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return {"path": str(output), "type": type, "architecture": "llama", "tensors": len(tensors),
            "size_bytes": output.stat().st_size}


def _adds(tokenizer, kind: str) -> bool:
    """Whether encoding plain text puts the tokenizer's ``kind`` (bos or eos) token at its start (end)."""
    token_id = getattr(tokenizer, f"{kind}_token_id", None)
    ids = tokenizer("a")["input_ids"]
    return token_id is not None and bool(ids) and ids[0 if kind == "bos" else -1] == token_id


def _add_hyperparameters(writer, config, name: str, type: str) -> None:
    import gguf

    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    theta = rope.get("rope_theta", getattr(config, "rope_theta", None))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "linear"):
        raise AdaptlabError(f"model '{name}' uses '{rope_type}' rotary scaling; the GGUF export maps only the default "
                            "and linear ones")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise AdaptlabError(f"model '{name}' has bias terms in its attention or MLP layers, which the llama GGUF "
                            "layout does not hold")
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(head_dim)
    if theta is not None:
        writer.add_rope_freq_base(float(theta))
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    writer.add_vocab_size(config.vocab_size)
    file_types = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    writer.add_file_type(file_types[type])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _tensors(model, type: str):
    """``(gguf name, numpy data, raw ggml type or None)`` for every weight, in the model's order: the names from
    gguf's llama map, Q and K permuted from transformers' rotary layout to GGUF's (as llama.cpp's converter does;
    transformers' GGUF loader undoes it), a tied output head left out (the loader ties it back)."""
    import gguf
    import numpy as np

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, parameter in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise AdaptlabError(f"the weight '{hf_name}' has no GGUF name in the llama layout; this model cannot be "
                                "exported")
        data = parameter.detach().float().cpu().numpy()
        if hf_name.endswith("self_attn.q_proj.weight"):
            data = permute(data, heads, heads)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            data = permute(data, heads, kv_heads)
        if data.ndim == 1 or type == "f32":
            yield gguf_name, data.astype(np.float32), None
        elif type == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
            qtype = gguf.GGMLQuantizationType.Q8_0
            yield gguf_name, gguf.quants.quantize(data, qtype), qtype
        else:  # f16; in q8_0, a matrix whose rows are not whole blocks of 32 (llama.cpp falls back the same way)
            yield gguf_name, data.astype(np.float16), None


def permute(weights, n_head: int, n_head_kv: int):
    """llama.cpp's ``LlamaModel.permute``: the rows of Q (or K) from transformers' rotate-half rotary layout to the
    interleaved pairs GGUF's llama expects."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def vocabulary(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """The token list and token types, as llama.cpp's ``get_vocab_base`` lists a byte-level BPE vocabulary: the
    tokens in id order up to the model's embedding rows (``[PADn]``, unused, where the tokenizer has no token),
    added tokens marked control when special, user-defined otherwise."""
    import gguf

    vocab = tokenizer.get_vocab()
    if len(vocab) > vocab_size:
        raise AdaptlabError(f"the tokenizer has {len(vocab)} tokens but the model only {vocab_size} embedding rows")
    by_id = {index: token for token, index in vocab.items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        token = by_id.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            special = decoder[index].special if index in decoder else True
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    return tokens, [int(t) for t in types]


def pre_tokenizer_name(tokenizer_json: Path) -> str:
    """``tokenizer.ggml.pre``: llama.cpp's name for how this tokenizer splits text before BPE. Recognised: plain
    GPT-2 byte-level splitting (``gpt-2``), and single digits then byte-level (``smollm``, SmolLM's own tokenizer).
    Anything else is refused: a wrong name would tokenize silently differently in llama.cpp."""
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or (data.get("decoder") or {}).get("type") != "ByteLevel":
        raise AdaptlabError("the tokenizer is not a byte-level BPE (GPT-2 style, as SmolLM2's); the GGUF export maps "
                            "only those")
    pre = data.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    raise AdaptlabError(f"the tokenizer splits text with {' + '.join(map(str, kinds)) or 'nothing'} before BPE; the "
                        "GGUF export names only GPT-2's byte-level split and SmolLM's (digits, then byte-level)")


# -- the Ollama Modelfile ---------------------------------------------------------------------------------------
CHATML_TEMPLATE = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""


def _chatml(messages: list[dict], generation_prompt: bool = True) -> str:
    """What ``CHATML_TEMPLATE`` renders for ``messages`` in Ollama: the reference the chat template is checked
    against."""
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if generation_prompt else "")


def chatml_system(tokenizer) -> tuple[bool, str | None]:
    """Whether the tokenizer's chat template is ChatML, checked by rendering three conversations (with a system
    message, without one, and several turns), and the system message it adds when a conversation has none."""
    import re

    if not getattr(tokenizer, "chat_template", None):
        return False, None
    system = {"role": "system", "content": "Be brief."}
    turns = [{"role": "user", "content": "Hello there."}, {"role": "assistant", "content": "Hi."},
             {"role": "user", "content": "Name a colour."}]
    try:
        render = lambda messages: tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        with_system, without_system = render([system, *turns]), render(turns)
    except Exception:  # a template that cannot render these is not one we can convert
        return False, None
    if with_system != _chatml([system, *turns]):
        return False, None
    if without_system == _chatml(turns):
        return True, None
    found = re.match(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n", without_system, re.S)
    if found and without_system == _chatml([{"role": "system", "content": found.group(1)}, *turns]):
        return True, found.group(1)
    return False, None


def stop_tokens(tokenizer, chatml: bool) -> list[str]:
    """The tokens that end a reply: ChatML's end of turn (and its start of turn), and the tokenizer's own end."""
    stops = ["<|im_end|>", "<|im_start|>"] if chatml else []
    if tokenizer.eos_token and tokenizer.eos_token not in stops:
        stops.append(tokenizer.eos_token)
    return stops


def _quoted(text: str) -> str:
    if '"""' in text:
        raise AdaptlabError('the system message contains """, which a Modelfile cannot quote')
    return f'"""{text}"""'


def modelfile_text(tokenizer) -> tuple[str, str | None, list[str]]:
    """``(Modelfile, template kind or None, stop tokens)``."""
    chatml, system = chatml_system(tokenizer)
    stops = stop_tokens(tokenizer, chatml)
    lines = ["# Written by adaptlab export ollama. Create the model with: ollama create NAME -f Modelfile", "",
             f"FROM ./{GGUF_NAME}", ""]
    if chatml:
        lines += [f"TEMPLATE {_quoted(CHATML_TEMPLATE)}", ""]
        if system is not None:
            lines += [f"SYSTEM {_quoted(system)}", ""]
    else:
        note = ("the chat template is not ChatML, so it was not converted to a Go template: Ollama uses the chat "
                "template stored in model.gguf" if getattr(tokenizer, "chat_template", None) else
                "the model has no chat template: prompts are sent as they are")
        lines += [f"# {note}", ""]
        print(f"adaptlab: note: {note}", file=sys.stderr)
    lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in stops]
    return "\n".join(lines) + "\n", ("chatml" if chatml else None), stops
