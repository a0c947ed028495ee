"""The adaptation layer (adaptlab.adapt): one declaration per method's options, one defaults table, one apply."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from adaptlab.adapt import LastKOptions, LoraOptions, apply, default_lr, lora_options, modules_above_blocks, peft_config
from adaptlab.adapt.defaults import TASKS

SRC = Path(__file__).resolve().parents[1] / "src" / "adaptlab"


def lora_jobs() -> dict[str, type]:
    from adaptlab.methods import STRATEGIES
    from adaptlab.rlhf.dpo import DPOPolicy
    from adaptlab.rlhf.ppo_config import PPOConfig
    from adaptlab.rlhf.reward import RewardModel
    from adaptlab.sft.job import SFTJob

    return {"classifier": STRATEGIES["lora"], "sft": SFTJob, "reward": RewardModel, "dpo": DPOPolicy, "ppo": PPOConfig}


def test_loras_rank_alpha_and_dropout_are_declared_once_and_every_family_inherits_them():
    lora_field = re.compile(r'^\s+(r|alpha|target_modules|use_dora|use_rslora): [^=]+= param\(|= param\([^"\n]*"LoRA', re.MULTILINE)
    declaring = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if lora_field.search(p.read_text()))
    assert declaring == ["adapt/options.py"]
    for task, job in lora_jobs().items():
        assert issubclass(job, LoraOptions) and issubclass(job, lora_options(task)), job
        lora = TASKS[task].lora
        defaults = {f.name: f.default for f in dataclasses.fields(job)}
        assert (defaults["r"], defaults["alpha"], defaults["dropout"]) == (lora.r, lora.alpha, lora.dropout), task


def test_the_defaults_table_is_what_train_sft_rlhf_and_both_ladders_resolve(tiny_bert, tiny_llama):
    from adaptlab.compare.generation import SFT_ENTRIES

    GENERATION_ENTRIES = {e.name: e for e in SFT_ENTRIES}
    from adaptlab.compare.plan import ComparePlan, ModelInfo
    from adaptlab.config import DataConfig
    from adaptlab.methods import STRATEGIES
    from adaptlab.rlhf.dpo import DPOPolicy
    from adaptlab.rlhf.ppo_config import PPOConfig
    from adaptlab.rlhf.reward import RewardModel
    from adaptlab.sft.job import SFTJob

    for method, rate in TASKS["classifier"].lr.items():
        assert STRATEGIES[method](model=str(tiny_bert)).lr == rate, method
    assert STRATEGIES["soft-prompt"]().lr == default_lr("label-words", "prompt-tuning")
    for method, rate in TASKS["sft"].lr.items():
        assert SFTJob(method=method).lr == rate, method
        assert GENERATION_ENTRIES[method].params["lr"] == rate, method
    for method in ("lora", "full"):
        assert RewardModel(method=method).lr == default_lr("reward", method)
        assert DPOPolicy(method=method).lr == default_lr("dpo", method)
        assert PPOConfig(method=method).lr == default_lr("ppo", method)
    plan = ComparePlan(data=DataConfig(source="rotten_tomatoes"), task="classification", models=[str(tiny_bert)])
    for run in plan.runs({str(tiny_bert): ModelInfo("encoder", 128)}):
        if run.strategy in TASKS["classifier"].lr:
            assert STRATEGIES[run.strategy](**run.params).lr == default_lr("classifier", run.strategy), run.entry


def test_last_k_opens_the_same_kind_of_modules_above_the_blocks_of_an_encoder_and_a_decoder(tiny_bert, tiny_llama):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    def opened(model, blocks: str) -> set[str]:
        return {n.rsplit(".", 1)[0] for n, p in model.named_parameters() if p.requires_grad and blocks not in n}

    last = LastKOptions(layers=1)
    encoder = apply(AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2), "last-k", last,
                    "classifier", keep=["classifier"])
    decoder = apply(AutoModelForCausalLM.from_pretrained(tiny_llama), "last-k", last, "sft")
    classifier = AutoModelForSequenceClassification.from_pretrained(tiny_llama, num_labels=2)
    assert modules_above_blocks(encoder) == ["bert.pooler"]  # the pooler and the norms: one rule
    assert modules_above_blocks(decoder) == modules_above_blocks(classifier) == ["model.norm"]
    assert opened(encoder, ".layer.") == {"bert.pooler.dense", "classifier"}
    assert opened(decoder, ".layers.") == {"model.norm"}
    for model, blocks in ((encoder, ".layer."), (decoder, ".layers.")):
        assert all(p.requires_grad == (f"{blocks}1." in n) for n, p in model.named_parameters() if blocks in n)


@pytest.mark.parametrize("task, r, alpha", [("dpo", 8, 16), ("ppo", 4, 8), ("sft", 8, 32)])
def test_an_unset_alpha_is_twice_the_rank_where_the_table_says_so(tiny_llama, task, r, alpha):
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(tiny_llama)
    config = peft_config(lm, "lora", lora_options(task)(r=r, lora_init="gaussian"), task)
    assert (config.r, config.lora_alpha, config.init_lora_weights) == (r, alpha, "gaussian")
    assert config.target_modules == "all-linear" and config.lora_dropout == TASKS[task].lora.dropout


def test_old_spellings_still_work_for_one_release_with_one_line(capsys, cli):
    from adaptlab.params import recorded_params
    from adaptlab.rlhf.ppo_config import PPOConfig
    from adaptlab.sft.job import SFTJob

    config = PPOConfig(lora_r=4)
    assert (config.r, config.lora_r) == (4, None)
    job = SFTJob(lora_dropout=0.2)
    assert (job.dropout, job.lora_dropout) == (0.2, None)
    assert capsys.readouterr().err.splitlines() == ["adaptlab: '--lora-r' is deprecated; use '--r'",
                                                    "adaptlab: '--lora-dropout' is deprecated; use '--dropout'"]
    assert SFTJob(lora_dropout=0.2, dropout=0.3).dropout == 0.3  # the new spelling wins
    code, out, _ = cli("rlhf", "ppo", "--help")
    assert code == 0 and "--lora-r" in out and "Deprecated: use --r." in out and "--use-dora" in out
    assert "lora_r" not in recorded_params(PPOConfig()) and "lora_dropout" not in SFTJob().get_params()  # never recorded
