"""One meaning of ``--precision``: a job's evaluation runs in the precision its training ran in (SFT: held-out
loss, replies and the forgetting probe; DPO: TRL's evaluation), and the default on a CPU is fp32 with no autocast
anywhere, so default numbers are unchanged."""

from __future__ import annotations

import contextlib

import pytest
import torch

from adaptlab.runtime import Runtime
from conftest import write_jsonl


def _autocast_seen(model) -> tuple[list[bool], object]:
    """Whether bf16 autocast was on for the CPU at every forward of the model's decoder layers, and the hooks."""
    seen: list[bool] = []
    layers = [m for name, m in model.named_modules() if type(m).__name__.endswith("DecoderLayer")]
    assert layers
    hooks = [layer.register_forward_hook(lambda *_: seen.append(
        torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)) for layer in layers]
    return seen, hooks


def _sft_splits(tmp_path):
    import adaptlab

    rows = [{"prompt": f"Say the colour number {i}.", "completion": ["red", "green", "blue"][i % 3]} for i in range(30)]
    return adaptlab.load_generation_splits(write_jsonl(tmp_path / "pc.jsonl", rows))


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_sft_evaluation_runs_in_the_jobs_precision(tiny_llama, tmp_path, precision):
    """Every evaluation pass of an SFT job (losses, greedy replies, both forgetting probes) sees the autocast
    training used: bf16 with --precision bf16, none with fp32."""
    from adaptlab.sft.job import SFTJob

    splits = _sft_splits(tmp_path)
    job = SFTJob(model=str(tiny_llama), method="lora", precision=precision, device="cpu", epochs=1, batch_size=8,
                 max_new_tokens=3, generate_limit=4, forgetting_sample=16, progress=False)
    job.fit(splits, tmp_path / "work")
    seen, hooks = _autocast_seen(job.model_)
    metrics = job.evaluate(splits)
    for hook in hooks:
        hook.remove()
    assert {"val", "test", "forgetting"} <= set(metrics) and "rouge_l" in metrics["test"]
    assert len(seen) > 20 and set(seen) == {precision == "bf16"}
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks out of evaluate


def test_the_default_precision_on_this_cpu_is_no_autocast_at_all():
    """auto resolves to fp32 for training on a CPU, and fp32 evaluation is no context (numbers exactly as before)."""
    assert Runtime("cpu", "auto", training=True).resolved_precision() == "fp32"
    assert isinstance(Runtime("cpu", "auto", training=True).autocast(), contextlib.nullcontext)
    assert isinstance(Runtime("cpu", "fp32", training=True).autocast(), contextlib.nullcontext)


def test_dpo_evaluation_runs_in_the_jobs_precision(tiny_llama, tmp_path):
    """DPO's --precision reaches TRL (Runtime.trl()), whose evaluation runs the model under the same autocast."""
    from adaptlab.rlhf.dpo import DPOPolicy
    from adaptlab.rlhf.preferences import Pair, PreferenceSplit

    pairs = [Pair(prompt=f"Question {i}", chosen="a helpful answer", rejected="a rude answer", group=i) for i in range(10)]
    split = PreferenceSplit(pairs[:6], pairs[6:8], pairs[8:], "test")
    job = DPOPolicy(model=str(tiny_llama), precision="bf16", device="cpu", epochs=1, max_length=64, progress=False)
    job.fit(split, tmp_path / "work")
    seen, hooks = _autocast_seen(job.trainer_.model)
    metrics = job.evaluate(split)
    for hook in hooks:
        hook.remove()
    assert "rewards/accuracies" in metrics["test"]
    assert seen and set(seen) == {True}
