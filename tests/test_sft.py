"""Supervised fine-tuning of causal LMs: data, masking through the chat template, packing, the job, artifacts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import write_jsonl
from adaptlab.errors import AdaptlabError

CHAT = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue"}]


def pc_rows(n: int = 24) -> list[dict]:
    words = ["red", "green", "blue", "black", "white", "grey"]
    return [{"prompt": f"Say the colour number {i}.", "completion": words[i % len(words)]} for i in range(n)]


@pytest.fixture(scope="module")
def smol_tokenizer():
    from adaptlab.models import resolve_model
    from adaptlab.models.loading import ModelRef, prepare_tokenizer

    return prepare_tokenizer(ModelRef("smollm2-135m", resolve_model("smollm2-135m").path, True), "decoder")


# -- data ------------------------------------------------------------------------------------------------
def test_prompt_completion_chat_and_text_files_load_with_their_shape(tmp_path):
    from adaptlab.data.generation import load_generation_data

    pc = load_generation_data(write_jsonl(tmp_path / "pc.jsonl", pc_rows(3)), system="Be brief.")
    assert pc.kind == "chat" and pc.records[0] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say the colour number 0."},
        {"role": "assistant", "content": "red"}]
    renamed = tmp_path / "qa.csv"
    renamed.write_text("question,answer\nWhat is 2+2?,4\nAnd 3+3?,6\n", encoding="utf-8")
    qa = load_generation_data(renamed, prompt_column="question", completion_column="answer")
    assert qa.records[1][-1] == {"role": "assistant", "content": "6"}
    chat = load_generation_data(write_jsonl(tmp_path / "chat.jsonl", [{"messages": CHAT}] * 2))
    assert chat.kind == "chat" and chat.records[0] == CHAT
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.txt").write_text(f"First paragraph {i}.\n\nSecond paragraph {i}.", encoding="utf-8")
    text = load_generation_data(folder)
    assert text.kind == "text" and len(text) == 6 and len(set(text.groups)) == 3  # a file never spans two splits


@pytest.mark.parametrize("rows, expected", [
    ([{"messages": [{"role": "user", "content": "hi"}]}], ["line 1", "no assistant turn"]),
    ([{"messages": CHAT}, {"messages": [{"role": "bot", "content": "x"}]}], ["line 2", "message 1", "'role'"]),
    ([{"prompt": "a", "completion": ""}], ["line 1", "column 'completion'", "empty"]),
    ([{"question": "a", "reply": "b"}], ["none of the columns", "--prompt-column"]),
    ([{"messages": "not json"}], ["line 1", "not valid JSON"]),
])
def test_bad_generation_rows_are_refused_naming_the_row(tmp_path, rows, expected):
    from adaptlab.data.generation import load_generation_data

    with pytest.raises(AdaptlabError) as error:
        load_generation_data(write_jsonl(tmp_path / "bad.jsonl", rows))
    assert all(part in str(error.value) for part in expected), str(error.value)
    assert "bad.jsonl" in str(error.value)


def test_wiki_descriptions_split_by_article_and_forgetting_sample_held_out():
    from adaptlab.data.generation import general_text_sample, load_generation_data, split_generation

    data = load_generation_data("wiki-descriptions")
    assert 9_000 < len(data) < 10_000 and data.kind == "chat"
    first = next(r for r, g in zip(data.records, data.groups) if g == "A Sunday Afternoon on the Island of La Grande Jatte")
    assert first[-1]["content"] == "Painting by Georges Seurat"
    splits = split_generation(data, seed=0)
    seen = [set(getattr(splits, name).groups) for name in ("train", "val", "test")]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    small = split_generation(data, seed=0, train_size=50)
    assert small.test.groups == splits.test.groups  # the test set does not depend on --train-size
    assert split_generation(data, seed=1).test.groups != splits.test.groups
    general = general_text_sample()
    assert len(general) == 64
    task_texts = {turn["content"] for record in data.records for turn in record}
    assert not any(any(text[:80] in t for t in task_texts) for text in general)  # no training ever sees it


# -- the chat template and the loss mask -----------------------------------------------------------------
def test_only_the_reply_and_its_end_of_turn_token_are_in_the_loss(smol_tokenizer):
    from adaptlab.sft.template import IGNORE, encode_conversation, encode_prompt

    ids, labels = encode_conversation(smol_tokenizer, CHAT, 512)
    learned = [t for t, label in zip(ids, labels) if label != IGNORE]
    assert smol_tokenizer.decode(learned) == "Blue<|im_end|>"
    assert learned[-1] == smol_tokenizer.eos_token_id  # the model learns to stop
    prompt = encode_prompt(smol_tokenizer, CHAT[:1])
    assert ids[: len(prompt)] == prompt  # trained on exactly the tokens inference sends
    assert all(label == IGNORE for label in labels[: len(prompt)])


def test_every_assistant_turn_of_a_conversation_is_learned(smol_tokenizer):
    from adaptlab.sft.template import IGNORE, encode_conversation

    turns = CHAT + [{"role": "user", "content": "Another."}, {"role": "assistant", "content": "Red"}]
    ids, labels = encode_conversation(smol_tokenizer, turns, 512)
    learned = smol_tokenizer.decode([t for t, label in zip(ids, labels) if label != IGNORE])
    assert learned == "Blue<|im_end|>Red<|im_end|>"
    assert encode_conversation(smol_tokenizer, turns, 30) is None or len(encode_conversation(smol_tokenizer, turns, 30)[0]) == 30


def test_a_template_that_rewrites_earlier_turns_is_refused(smol_tokenizer):
    import copy

    from adaptlab.sft.template import encode_conversation

    tokenizer = copy.deepcopy(smol_tokenizer)
    # drops earlier assistant replies from the history, as some reasoning models' templates do
    tokenizer.chat_template = ("{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}"
                               "{{ m['role'] }}: {{ m['content'] }}\n{% endif %}{% endfor %}"
                               "{% if add_generation_prompt %}assistant: {% endif %}")
    turns = CHAT + [{"role": "user", "content": "Again."}, {"role": "assistant", "content": "Red"}]
    with pytest.raises(AdaptlabError, match="cannot mark assistant turns"):
        encode_conversation(tokenizer, turns, 512)


def test_a_tokenizer_without_template_gets_the_plain_one_ending_replies_with_eos(smol_tokenizer):
    import copy

    from adaptlab.sft.template import IGNORE, PLAIN_TEMPLATE, encode_conversation, ensure_chat_template

    tokenizer = copy.deepcopy(smol_tokenizer)
    tokenizer.chat_template = None
    ensure_chat_template(tokenizer)
    assert tokenizer.chat_template == PLAIN_TEMPLATE
    ids, labels = encode_conversation(tokenizer, CHAT, 512)
    assert tokenizer.decode([t for t, label in zip(ids, labels) if label != IGNORE]) == "Blue<|im_end|>"
    assert "### Response:\n" in tokenizer.decode(ids)


# -- packing -----------------------------------------------------------------------------------------------
def test_packed_examples_do_not_attend_to_each_other(tiny_llama):
    from transformers import AutoModelForCausalLM

    from adaptlab.training.data import CausalCollator, causal_rows

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    a, b = list(range(100, 112)), list(range(200, 207))
    rows = causal_rows([(a, a), (b, b)], block_size=32)
    assert len(rows) == 1 and rows[0]["position_ids"] == list(range(12)) + list(range(7))
    batch = CausalCollator(pad_id=0)(rows)
    assert "attention_mask" not in batch
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        alone = model(input_ids=torch.tensor([b])).logits[0]
    torch.testing.assert_close(packed[12:19], alone, atol=1e-5, rtol=1e-4)  # b saw nothing of a
    assert len(causal_rows([(a, a), (b, b)], block_size=15)) == 2  # over the block: a row each
    from adaptlab.training.module import causal_lm_loss

    packed_loss, tokens = causal_lm_loss(model, {**batch, "labels": torch.tensor([rows[0]["labels"]])}, reduction="sum")
    separate = [causal_lm_loss(model, {"input_ids": torch.tensor([x]), "labels": torch.tensor([x])}, reduction="sum") for x in (a, b)]
    assert tokens == sum(n for _, n in separate) == 11 + 6  # nothing is predicted across the boundary
    torch.testing.assert_close(packed_loss, sum(loss for loss, _ in separate), atol=1e-3, rtol=1e-4)



# -- the job on a tiny random decoder ----------------------------------------------------------------------
FAST = {"epochs": 1, "batch_size": 8, "max_new_tokens": 4, "generate_limit": 8, "progress": False, "forgetting": False}


@pytest.mark.parametrize("method", ["lora", "full", "last-k", "prefix-tuning", "prompt-tuning"])
def test_every_method_trains_evaluates_and_reloads_as_a_generator(tiny_llama, tmp_path, method):
    import adaptlab
    from adaptlab.generation import Generator

    splits = adaptlab.load_generation_splits(write_jsonl(tmp_path / "pc.jsonl", pc_rows(40)))
    result = adaptlab.train_sft(splits, tmp_path / method, model=str(tiny_llama), method=method, layers=1, **FAST)
    manifest = result.manifest
    test = manifest["metrics"]["test"]
    assert {"loss", "perplexity", "rouge_l", "token_f1", "exact_match", "mean_length", "stopped"} <= set(test)
    assert manifest["strategy"] == "sft" and manifest["params"]["method"] == method
    from adaptlab.jobs import COST_KEYS, MANIFEST_KEYS

    assert set(MANIFEST_KEYS) <= set(manifest) and set(COST_KEYS) == set(manifest["cost"])  # the one schema
    trainable, total = manifest["cost"]["trainable_params"], manifest["cost"]["total_params"]
    assert 0 < trainable <= total and (trainable == total) == (method == "full")
    assert manifest["training"]["tokens_per_second"] > 0 and manifest["training"]["best_val_loss"] is not None
    assert manifest["details"]["chat_template"]  # stored: inference renders prompts exactly as training did
    weights = "adapter" if method in ("lora", "prefix-tuning", "prompt-tuning") else "model"
    assert (tmp_path / method / weights / "tokenizer_config.json").exists()
    generator = Generator(str(tmp_path / method))
    prompt = generator.render_chat(splits.test.records[0][0]["content"])
    assert generator.generate(prompt) == Generator(str(tmp_path / method)).generate(prompt)  # reload is deterministic


def test_a_prefix_started_from_real_tokens_is_the_model_reading_them_first(tiny_llama):
    """Prefix tuning starts from the keys and values of real tokens: before any step the model with the prefix
    predicts exactly what the base predicts after reading those tokens (a random prefix does not)."""
    from transformers import AutoModelForCausalLM

    from adaptlab.adapt.peft_factory import init_prefix_from_ids, prompt_learning_config
    from peft import get_peft_model

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    model = get_peft_model(base, prompt_learning_config("prefix", "sft", base, num_virtual_tokens=6)).eval()
    prefix, text = [11, 12, 13], torch.tensor([[21, 22, 23, 24]])
    with torch.no_grad():
        random_start = model(input_ids=text).logits
        init_prefix_from_ids(model, prefix)  # cycled to the 6 virtual tokens
        started = model(input_ids=text).logits
        with model.disable_adapter():
            reading = model(input_ids=torch.tensor([prefix * 2 + text[0].tolist()])).logits[:, 6:]
    torch.testing.assert_close(started, reading, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(random_start, reading, atol=1e-3)


def test_prefix_tuning_of_the_real_model_starts_where_the_model_was(tmp_path):
    """On SmolLM2 (packaged Q4_1 GGUF, de-quantized) the default prefix starts at the base's held-out loss;
    PEFT's random prefix starts far above it, which is what made quick prefix tuning end worse than zero-shot."""
    import adaptlab
    from adaptlab.models.causal import load_causal_lm
    from adaptlab.models.loading import pad_id
    from adaptlab.sft.evaluate import sequence_loss
    from adaptlab.sft.job import SFTJob

    splits = adaptlab.load_generation_splits(write_jsonl(tmp_path / "pc.jsonl", pc_rows(40)))
    losses = {}
    for init in ("data", "random"):
        torch.manual_seed(0)
        job = SFTJob(method="prefix-tuning", prefix_init=init, forgetting=False, progress=False)
        lm, job.tokenizer_, job.ref_ = load_causal_lm(job.model, "cpu")
        job.splits_ = splits
        job.kept_ = {name: job._encode(getattr(splits, name)) for name in ("train", "val")}
        base = sequence_loss(lm, job.kept_["val"], pad_id(job.tokenizer_))["loss"]
        losses[init] = sequence_loss(job._adapt(lm), job.kept_["val"], pad_id(job.tokenizer_))["loss"]
    assert abs(losses["data"] - base) < 0.1 * base, (losses, base)
    assert losses["random"] > base + 1.0, (losses, base)


def test_plain_text_trains_packed_with_checkpointing_and_accumulation(tiny_llama, tmp_path):
    import adaptlab

    folder = tmp_path / "domain"
    folder.mkdir()
    for i in range(6):
        (folder / f"doc{i}.txt").write_text("\n\n".join(f"Paragraph {j} of document {i} about owls." for j in range(4)))
    splits = adaptlab.load_generation_splits(folder)
    manifest = adaptlab.train_sft(splits, tmp_path / "cpt", model=str(tiny_llama), method="lora", max_length=32,
                                  gradient_checkpointing=True, grad_accum=2, **FAST).manifest
    assert manifest["details"]["data_kind"] == "text" and manifest["details"]["packing"] is True
    assert manifest["metrics"]["test"]["perplexity"] > 1 and "rouge_l" not in manifest["metrics"]["test"]
    assert manifest["training"]["steps"] >= 1


def test_lora_adapter_loads_with_plain_peft_and_merges_for_pipeline(tiny_llama, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, pipeline

    import adaptlab
    from adaptlab.generation import Generator
    from adaptlab.merge import merge_lora

    splits = adaptlab.load_generation_splits(write_jsonl(tmp_path / "pc.jsonl", pc_rows(40)))
    adaptlab.train_sft(splits, tmp_path / "lora", model=str(tiny_llama), method="lora", lr=5e-2, **FAST)
    config = json.loads((tmp_path / "lora" / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_llama) and config["task_type"] == "CAUSAL_LM"
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), tmp_path / "lora" / "adapter")
    from peft import AutoPeftModelForCausalLM

    auto = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "lora" / "adapter")  # finds the base by itself
    ours = Generator(str(tmp_path / "lora"))
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(tuned(input_ids=ids).logits, ours.model(input_ids=ids).logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(auto(input_ids=ids).logits, ours.model(input_ids=ids).logits, atol=1e-4, rtol=1e-4)
    merge_lora(tmp_path / "lora", tmp_path / "merged")
    prompt = ours.render_chat("Say the colour number 3.")
    pipe = pipeline("text-generation", model=str(tmp_path / "merged" / "model"))
    text = pipe(prompt, max_new_tokens=6, do_sample=False, return_full_text=False)[0]["generated_text"]
    from adaptlab.generation import SamplingOptions

    assert text.replace("<|im_end|>", "").strip() == ours.generate(prompt, SamplingOptions(max_new_tokens=6)).strip()
    with pytest.raises(AdaptlabError, match="already holds full weights"):
        merge_lora(tmp_path / "merged", tmp_path / "again")


RESUME_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import adaptlab
    from lightning.pytorch.callbacks import Callback

    class KillMidEpoch(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 1:
                os.kill(os.getpid(), signal.SIGKILL)  # kill -9: no clean-up runs

    model, data, out, mode = sys.argv[1:5]
    splits = adaptlab.load_generation_splits(data)
    adaptlab.train_sft(splits, out, model=model, method="lora", epochs=3, batch_size=4, progress=False, forgetting=False,
                       max_new_tokens=2, generate_limit=2, callbacks=[KillMidEpoch()] if mode == "kill" else [],
                       resume=(mode == "resume"))
    """
)


def test_kill_9_then_resume_ends_with_the_same_weights(tiny_llama, tmp_path):
    from safetensors.torch import load_file

    data = write_jsonl(tmp_path / "pc.jsonl", pc_rows(40))
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT)
    run = lambda out, mode: subprocess.run([sys.executable, str(script), str(tiny_llama), str(data), str(out), mode],
                                           capture_output=True, text=True, timeout=300)
    assert run(tmp_path / "straight", "plain").returncode == 0
    assert run(tmp_path / "resumed", "kill").returncode == -9
    assert not (tmp_path / "resumed").exists()
    resumed = run(tmp_path / "resumed", "resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((tmp_path / "resumed" / "manifest.json").read_text())["training"]["resumed_from_epoch"] == 1
    a = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5, msg=lambda m: f"{key}: {m}")


def test_options_are_checked_before_anything_loads(tiny_llama):
    from adaptlab.sft import SFTJob

    for bad, match in (({"method": "qlora"}, "method"), ({"lr": -1.0}, "lr"), ({"max_length": 0}, "max-length"),
                       ({"method": "prompt-tuning", "packing": True}, "packing"),
                       ({"forgetting_text": "nope.txt"}, "forgetting-text")):
        with pytest.raises(AdaptlabError, match=match):
            SFTJob(model=str(tiny_llama), **bad)
    assert SFTJob(method="prompt-tuning").lr == 3e-2 and SFTJob(method="full").lr == 5e-5  # the generation ladder's


# -- the command line ------------------------------------------------------------------------------------
def test_sft_cli_trains_generates_and_refuses_bad_data_in_one_line(tiny_llama, tmp_path, cli):
    data = write_jsonl(tmp_path / "pc.jsonl", pc_rows(40))
    out = tmp_path / "cli-sft"
    code, stdout, stderr = cli("sft", "train", "--data", str(data), "--model", str(tiny_llama), "--method", "lora",
                               "--epochs", "1", "--max-new-tokens", "4", "--no-forgetting", "-o", str(out), "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["metrics"]["test"]["n"] > 0
    code, stdout, _ = cli("generate", "--model", str(out), "--max-new-tokens", "3", "--no-stream", "Say the colour number 1.")
    assert code == 0
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "user", "content": "x"}]}])
    code, _, stderr = cli("sft", "train", "--data", str(bad), "--model", str(tiny_llama), "-o", str(tmp_path / "never"))
    assert code == 2 and "line 1" in stderr and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {{source: {data}, train_size: 16}}\nparams: {{method: lora, epochs: 1, lr: 5e-4, "
                      f"max_new_tokens: 2, forgetting: false, model: {tiny_llama}}}\noutput: {tmp_path / 'yaml-out'}\n")
    code, stdout, stderr = cli("sft", "train", "--config", str(config), "--json")
    assert code == 0, stderr
    assert json.loads((tmp_path / "yaml-out" / "manifest.json").read_text())["params"]["lr"] == 5e-4
    config.write_text("params: {methd: lora}\n")
    code, _, stderr = cli("sft", "train", "--config", str(config))
    assert code == 2 and "methd" in stderr


def test_ddp_on_two_cpu_processes(tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "pc.jsonl", pc_rows(40))
    command = [str(Path(sys.executable).parent / "adaptlab"), "sft", "train", "--data", str(data), "--model", str(tiny_llama),
               "--epochs", "1", "--batch-size", "4", "--devices", "2", "--strategy", "ddp", "--device", "cpu",
               "--max-new-tokens", "2", "--no-forgetting", "-o", str(tmp_path / "ddp")]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("artifact:") == 1  # one report, from rank 0
    assert json.loads((tmp_path / "ddp" / "manifest.json").read_text())["training"]["epochs_run"] == 1


def test_sft_eval_scores_zero_and_few_shot_prompting(tiny_llama, tmp_path, cli):
    data = write_jsonl(tmp_path / "pc.jsonl", pc_rows(40))
    code, stdout, stderr = cli("sft", "eval", "--data", str(data), "--model", str(tiny_llama), "--shots", "2",
                               "--max-new-tokens", "3", "--json")
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["strategy"] == "2-shot" and result["metrics"]["test"]["n"] == 4


# -- generator artifacts in the rest of the toolkit ---------------------------------------------------------
def prompts_file(directory: Path) -> Path:
    path = directory / "prompts.txt"
    path.write_text("\n".join(f"Question {i}:" for i in range(4)))
    return path


def test_sft_then_dpo_then_generate_serve_and_rag_from_the_artifacts(tiny_llama, tiny_bert, tmp_path, cli, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # the PPO reward function test_rlhf:colons
    from fastapi.testclient import TestClient

    from adaptlab.rag import RagIndex
    from adaptlab.serve import create_app, load_registry

    data = write_jsonl(tmp_path / "pc.jsonl", pc_rows(40))
    sft = tmp_path / "sft"
    assert cli("sft", "train", "--data", str(data), "--model", str(tiny_llama), "--epochs", "1", "--max-new-tokens", "2",
               "--no-forgetting", "-o", str(sft))[0] == 0
    prefs = write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": f"Question {i}", "chosen": "a kind answer",
                                                    "rejected": "a rude answer"} for i in range(30)])
    code, _, err = cli("rlhf", "dpo", "--data", str(prefs), "--model", str(sft), "--epochs", "1", "--max-length", "64",
                       "-o", str(tmp_path / "dpo"))
    assert code == 0, err
    manifest = json.loads((tmp_path / "dpo" / "manifest.json").read_text())
    assert manifest["base_model"]["name"] == str(tiny_llama) and manifest["base_model"]["started_from"]["strategy"] == "sft"
    assert (tmp_path / "dpo" / "model" / "config.json").exists()  # self-contained: SFT and DPO merged, no dependency
    code, _, err = cli("rlhf", "ppo", "--reward", "test_rlhf:colons", "--prompts", str(prompts_file(tmp_path)),
                       "--model", str(sft), "--steps", "1", "--batch-size", "2", "--mini-batch-size", "2",
                       "--max-new-tokens", "3", "-o", str(tmp_path / "ppo"))
    assert code == 0, err
    for artifact in (sft, tmp_path / "dpo", tmp_path / "ppo"):
        code, out, err = cli("generate", "--model", str(artifact), "--max-new-tokens", "3", "--no-stream", "Hello")
        assert code == 0, err
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "eiffel.txt").write_text("The Eiffel Tower was completed in 1889.")
    RagIndex(tmp_path / "store", model=str(tiny_bert), progress=False).update([str(tmp_path / "docs")])
    code, out, err = cli("rag", "ask", "When?", "--store", str(tmp_path / "store"), "--model", str(sft), "-k", "1",
                         "--max-new-tokens", "3", "--json")
    assert code == 0, err
    registry = load_registry({}, [str(tmp_path / "dpo")], None, "cpu")
    with TestClient(create_app(registry)) as client:
        reply = client.post("/v1/generate", json={"prompt": "Hello", "max_new_tokens": 3})
        assert reply.status_code == 200 and isinstance(reply.json()["text"], str)
    code, _, err = cli("generate", "--model", str(tmp_path / "docs"), "Hello")
    assert code == 2 and "config.json" in err


# -- the real packaged model -------------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_sft_learns_to_stop_and_survives_merge_and_pipeline(tmp_path):
    from transformers import pipeline

    import adaptlab
    from adaptlab.generation import Generator, SamplingOptions
    from adaptlab.merge import merge_lora

    splits = adaptlab.load_generation_splits("wiki-descriptions", train_size=48, val_size=8, test_size=8)
    manifest = adaptlab.train_sft(splits, tmp_path / "sft", method="lora", epochs=1, batch_size=4, lr=1e-3,
                                  max_new_tokens=16, forgetting_sample=32, progress=False).manifest
    test, forgetting = manifest["metrics"]["test"], manifest["metrics"]["forgetting"]
    assert test["stopped"] >= 0.75 and test["mean_length"] < 16  # replies end with the end-of-turn token
    assert test["rouge_l"] > 0.1 and test["perplexity"] < manifest["metrics"]["forgetting"]["before"]["general_ppl"] * 10
    assert 0.5 <= forgetting["before"]["rt_accuracy"] <= 1 and forgetting["before"]["general_ppl"] > 1
    assert manifest["base_model"]["name"] == "smollm2-135m"
    assert manifest["base_model"]["hub_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    adapter = json.loads((tmp_path / "sft" / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # portable, not this machine's path
    merge_lora(tmp_path / "sft", tmp_path / "merged")
    generator = Generator(str(tmp_path / "merged"))
    prompt = generator.render_chat(splits.test.records[0][-2]["content"])
    ours = generator.generate(prompt, SamplingOptions(max_new_tokens=16))
    pipe = pipeline("text-generation", model=str(tmp_path / "merged" / "model"))
    theirs = pipe(prompt, max_new_tokens=16, do_sample=False, return_full_text=False)[0]["generated_text"]
    assert theirs.replace("<|im_end|>", "").strip() == ours.strip() and ours.strip()


def test_a_pass_too_large_for_memory_is_warned_about_before_training(tiny_llama, tmp_path, monkeypatch, capfd):
    import adaptlab
    from adaptlab.training import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 10_000_000)  # 10 MB: tiny_llama's pass of 8 won't fit
    splits = adaptlab.load_generation_splits(write_jsonl(tmp_path / "pc.jsonl", pc_rows(40)))
    adaptlab.train_sft(splits, tmp_path / "warned", model=str(tiny_llama), method="lora", **FAST)
    assert "--grad-accum" in capfd.readouterr().err
