"""What adaptlab's ``rlhf grpo`` costs over TRL's ``GRPOTrainer`` called directly, with the same settings.

Both sides train SmolLM2-135M-Instruct (the packaged Q4_1 GGUF, de-quantised to float) with the same LoRA config
(built by adaptlab's adaptation layer and handed to TRL in both cases), the same prompts (the shipped ``arithmetic``
task), the same reward function (``numeric``), group size, batch, completion length, learning rate and seed, in one
process, alternating A B B A, both in fp32. (TRL's own default, ``bf16=None``, resolves to bf16 autocast on a CPU, which
on one without native bf16 is an order of magnitude slower: about 100 s per step against 7.7 in a first attempt on
the AVX2 machine of the result file; adaptlab's ``auto`` precision picks fp32 there.) The figure is TRL's ``train_runtime`` per optimiser step on each side (model loading
outside it on both), median over the runs; ``seconds_per_step_ratio`` = TRL / adaptlab (>= 0.95: the wrapper costs
nothing).

    python benchmarks/grpo_overhead.py [--steps 6] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from _common import save

SETTINGS = {"batch_size": 2, "num_generations": 4, "max_completion_length": 8, "lr": 2e-5, "seed": 0}


def runtime_per_step(trainer) -> float:
    entry = next(e for e in trainer.state.log_history if "train_runtime" in e)
    return entry["train_runtime"] / trainer.state.global_step


def adaptlab_side(splits, steps: int, work: Path) -> float:
    from adaptlab.rlhf.grpo import GRPOPolicy

    job = GRPOPolicy(model="smollm2-135m", reward=["numeric"], max_steps=steps, progress=False, **SETTINGS)
    job.fit(splits, work)
    return runtime_per_step(job.trainer_)


def trl_side(splits, steps: int, work: Path) -> float:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from adaptlab.adapt import lora_options, peft_config
    from adaptlab.models import resolve_model
    from adaptlab.rlhf.grpo import prompt_rows
    from adaptlab.rlhf.reward_functions import build_rewards, check_rewards

    path = resolve_model("smollm2-135m").path
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    lora = peft_config(model, "lora", lora_options("grpo")(), "grpo")
    args = GRPOConfig(output_dir=str(work), learning_rate=SETTINGS["lr"], max_steps=steps,
                      per_device_train_batch_size=SETTINGS["batch_size"] * SETTINGS["num_generations"],
                      num_generations=SETTINGS["num_generations"], max_completion_length=SETTINGS["max_completion_length"],
                      seed=SETTINGS["seed"], use_cpu=True, bf16=False, fp16=False,  # fp32, as adaptlab's auto on this CPU
                      report_to="none", logging_steps=1, save_strategy="no",
                      disable_tqdm=True)
    trainer = GRPOTrainer(model=model, reward_funcs=build_rewards(check_rewards(["numeric"])), args=args,
                          train_dataset=Dataset.from_list(prompt_rows(splits.train)), processing_class=tokenizer,
                          peft_config=lora)
    trainer.train()
    return runtime_per_step(trainer)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=1, help="A B B A blocks (each side runs twice per block)")
    args = parser.parse_args()
    os.environ.setdefault("ADAPTLAB_CACHE", tempfile.mkdtemp(prefix="adaptlab-bench-"))
    import adaptlab

    splits = adaptlab.load_generation_splits("arithmetic", train_size=64, val_size=8, test_size=8)
    seconds = {"adaptlab": [], "trl": []}
    for repeat in range(args.repeats):
        for side in ("adaptlab", "trl", "trl", "adaptlab") if repeat % 2 == 0 else ("trl", "adaptlab", "adaptlab", "trl"):
            work = Path(tempfile.mkdtemp(prefix=f"grpo-{side}-"))
            seconds[side].append((adaptlab_side if side == "adaptlab" else trl_side)(splits, args.steps, work))
            print(side, round(seconds[side][-1], 3), flush=True)
    adaptlab_median, trl_median = statistics.median(seconds["adaptlab"]), statistics.median(seconds["trl"])
    save("grpo_overhead", {
        "model": "smollm2-135m (the packaged Q4_1 GGUF, de-quantised to float)",
        "settings": {**SETTINGS, "steps": args.steps, "method": "lora", "reward": "numeric", "task": "arithmetic",
                     "precision": "fp32 on both sides (TRL given bf16=False: its default resolves to bf16 autocast)"},
        "order": "A B B A (A = adaptlab), B A A B in every other block",
        "seconds_per_step": {"adaptlab": [round(s, 3) for s in seconds["adaptlab"]], "trl": [round(s, 3) for s in seconds["trl"]]},
        "adaptlab_seconds_per_step": round(adaptlab_median, 3), "trl_seconds_per_step": round(trl_median, 3),
        "seconds_per_step_ratio": round(trl_median / adaptlab_median, 3),
        "target_met": trl_median / adaptlab_median >= 0.95,
    })


if __name__ == "__main__":
    main()
