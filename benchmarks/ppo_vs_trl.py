"""adaptlab's PPO against TRL 0.29's experimental ``PPOTrainer``, back to back with the same settings.

Both train SmolLM2-135M-Instruct (the packaged Q4_1 GGUF, de-quantised to float) with LoRA r=16 on all linear
layers, on the same IMDB review prompts, against the same reward: the log-odds of "positive" from a minilm
sentiment head adaptlab trains here. Same rollout batch (8), response length (24 tokens, stopping at EOS),
PPO epochs (4), minibatches (2 of 4), learning rate (constant), a fixed KL coefficient, temperature 1, no top-k.
Each library runs as it is designed: adaptlab puts a value head on the LoRA policy and gets the reference by
disabling the adapter; TRL trains a separate value model (a full SmolLM2 with a scalar head, its documented set-up)
and also uses the disabled adapter as reference. TRL gets the text reward through a small module in the shape its
``get_reward`` expects (backbone + ``score``): it decodes the tokens and calls the same function.

TRL 0.29 is installed only for this benchmark, into a virtual environment the script creates under --workdir
(``trl`` alone; every other package is the adaptlab environment's, so torch/transformers/peft are identical).
Each library runs in its own process, so ``peak_rss_mb`` is that process's own peak (ru_maxrss).

TRL's ``PPOConfig`` turns gradient checkpointing on by default (memory for speed); adaptlab does not checkpoint.
So TRL runs twice, as shipped (``trl``) and with ``gradient_checkpointing=False`` (``trl_no_checkpointing``), and
each headline ratio is taken against TRL's better configuration for that measure:

- ``seconds_per_step_ratio`` = TRL's faster run / adaptlab, median seconds per PPO step after --warmup steps
  (target >= 1.5)
- ``peak_rss_ratio`` = adaptlab / TRL's leaner run, peak resident memory (target <= 0.5)

    python benchmarks/ppo_vs_trl.py [--steps 12] [--warmup 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import sysconfig
import tempfile
import time
import venv
from pathlib import Path

TRL_VERSION = "0.29.0"
SETTINGS = {"policy": "smollm2-135m", "lora_r": 16, "lora_alpha": 32, "batch_size": 8, "mini_batch_size": 4,
            "num_mini_batches": 2, "ppo_epochs": 4, "response_length": 24, "lr": 1e-4, "kl_coef": 0.05,
            "temperature": 1.0, "vf_coef": 0.1, "cliprange": 0.2, "cliprange_value": 0.2, "gamma": 1.0, "lam": 0.95,
            "seed": 0}
TARGETS = {"seconds_per_step_ratio": 1.5, "peak_rss_ratio": 0.5}
WORKERS = ("adaptlab", "trl", "trl_no_checkpointing")  # TRL as shipped (gradient checkpointing on), then without


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # kilobytes on Linux


def trl_environment(workdir: Path) -> Path:
    """A virtual environment with TRL 0.29 on top of this one's packages (a .pth file adds them after its own)."""
    python = workdir / "trl-venv" / "bin" / "python"
    if not python.exists():
        venv.create(python.parent.parent, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", f"trl=={TRL_VERSION}"], check=True)
        site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        ours = sysconfig.get_paths()["purelib"]
        Path(site, "zz_adaptlab_environment.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    return python


def prepare(workdir: Path, steps: int) -> None:
    """The reward classifier and the prompts, shared by both workers."""
    import adaptlab
    from adaptlab.rlhf.prompts import review_prompts

    if not (workdir / "imdb-head" / "manifest.json").exists():
        splits = adaptlab.load_splits("imdb", train_size=2000, val_size=300, test_size=500)
        adaptlab.train("head", splits, workdir / "imdb-head", model="minilm", max_length=256, progress=False)
    prompts = review_prompts(steps * SETTINGS["batch_size"], seed=0)
    (workdir / "prompts.json").write_text(json.dumps(prompts))


def run_adaptlab(workdir: Path, prompts: list[str], reward) -> list[dict]:
    from adaptlab.rlhf.ppo import PPOConfig, PPOTrainer

    s = SETTINGS
    config = PPOConfig(steps=len(prompts) // s["batch_size"], batch_size=s["batch_size"], mini_batch_size=s["mini_batch_size"],
                       ppo_epochs=s["ppo_epochs"], max_new_tokens=s["response_length"], lr=s["lr"], r=s["lora_r"],
                       init_kl_coef=s["kl_coef"], target_kl=0, temperature=s["temperature"], vf_coef=s["vf_coef"],
                       cliprange=s["cliprange"], cliprange_value=s["cliprange_value"], gamma=s["gamma"], lam=s["lam"],
                       seed=s["seed"])
    trainer = PPOTrainer(s["policy"], reward, config, device="cpu")
    steps = []
    for start in range(0, len(prompts), s["batch_size"]):
        began = time.perf_counter()
        stats = trainer.step(prompts[start:start + s["batch_size"]])
        steps.append({"seconds": time.perf_counter() - began, "reward_mean": stats["reward_mean"], "kl": stats["kl"]})
        print(f"adaptlab step {len(steps)}: {steps[-1]['seconds']:.1f} s, reward {stats['reward_mean']:.2f}", flush=True)
    return steps


def run_trl(workdir: Path, prompts: list[str], reward, checkpointing: bool) -> list[dict]:
    from types import SimpleNamespace

    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from adaptlab.adapt import lora_options, peft_config
    from adaptlab.models.causal import load_causal_lm

    s = SETTINGS
    torch.manual_seed(s["seed"])
    policy, tokenizer, ref = load_causal_lm(s["policy"], "cpu")
    tokenizer.padding_side = "left"
    value = AutoModelForSequenceClassification.from_pretrained(ref.path, num_labels=1)
    value.config.pad_token_id = tokenizer.pad_token_id

    class Scorer(torch.nn.Module):
        def forward(self, input_ids, attention_mask, **_):
            texts = [tokenizer.decode(ids[m], skip_special_tokens=True) for ids, m in zip(input_ids, attention_mask.bool())]
            scores = torch.tensor(reward([""] * len(texts), texts), dtype=torch.float32)
            return SimpleNamespace(hidden_states=(scores[:, None, None].expand(-1, input_ids.shape[1], 1),))

    class TextReward(torch.nn.Module):  # the shape TRL's get_reward reads: getattr(model, base_model_prefix), .score
        base_model_prefix = "backbone"

        def __init__(self):
            super().__init__()
            self.backbone, self.score = Scorer(), torch.nn.Identity()

    steps: list[dict] = []
    name = "trl" if checkpointing else "trl_no_checkpointing"

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.last = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "objective/scores" in logs:
                now = time.perf_counter()
                steps.append({"seconds": now - self.last, "reward_mean": logs["objective/scores"], "kl": logs["objective/kl"]})
                self.last = now
                print(f"{name} step {len(steps)}: {steps[-1]['seconds']:.1f} s, reward {steps[-1]['reward_mean']:.2f}", flush=True)

    dataset = Dataset.from_dict({"input_ids": [tokenizer(p)["input_ids"] for p in prompts]})
    args = PPOConfig(output_dir=str(workdir / "trl-run"), per_device_train_batch_size=s["batch_size"],
                     gradient_accumulation_steps=1, num_mini_batches=s["num_mini_batches"], num_ppo_epochs=s["ppo_epochs"],
                     response_length=s["response_length"], total_episodes=len(prompts), learning_rate=s["lr"],
                     lr_scheduler_type="constant", kl_coef=s["kl_coef"], temperature=s["temperature"], stop_token="eos",
                     vf_coef=s["vf_coef"], cliprange=s["cliprange"], cliprange_value=s["cliprange_value"],
                     gamma=s["gamma"], lam=s["lam"], seed=s["seed"], num_sample_generations=0, report_to="none",
                     save_strategy="no", logging_steps=1, use_cpu=True, dataloader_num_workers=0,
                     gradient_checkpointing=checkpointing)
    lora = peft_config(policy, "lora", lora_options("ppo")(r=s["lora_r"], alpha=s["lora_alpha"]), "ppo")
    trainer = PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=None, reward_model=TextReward(),
                         train_dataset=dataset, value_model=value, peft_config=lora, callbacks=[Timer()])
    trainer.train()
    return steps


def worker(name: str, workdir: Path) -> None:
    from adaptlab.rlhf.rewards import load_reward

    prompts = json.loads((workdir / "prompts.json").read_text())
    reward = load_reward(str(workdir / "imdb-head"), "positive", device="cpu")
    started = time.perf_counter()
    if name == "adaptlab":
        steps = run_adaptlab(workdir, prompts, reward)
    else:
        steps = run_trl(workdir, prompts, reward, checkpointing=name == "trl")
    result = {"steps": steps, "seconds": round(time.perf_counter() - started, 1), "peak_rss_mb": peak_rss_mb()}
    if name != "adaptlab":
        import trl

        result["trl_version"] = trl.__version__
    (workdir / f"{name}.json").write_text(json.dumps(result))


def summary(name: str, result: dict, warmup: int) -> dict:
    import numpy as np

    timed = [step["seconds"] for step in result["steps"][warmup:]]
    return {"seconds_per_step": round(float(np.median(timed)), 2), "seconds_per_step_mean": round(float(np.mean(timed)), 2),
            "steps": len(result["steps"]), "timed_steps": len(timed), "peak_rss_mb": result["peak_rss_mb"],
            "reward_per_step": [round(float(step["reward_mean"]), 3) for step in result["steps"]],
            "kl_per_step": [round(float(step["kl"]), 3) for step in result["steps"]],
            **({"version": result["trl_version"]} if "trl_version" in result else {})}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the per-step time")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "adaptlab-ppo-vs-trl")
    parser.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ADAPTLAB_CACHE", str(args.workdir / "cache"))
    if args.worker:
        return worker(args.worker, args.workdir)
    from _common import save

    prepare(args.workdir, args.steps)
    trl_python = trl_environment(args.workdir)
    interpreters = {name: trl_python if name.startswith("trl") else Path(sys.executable) for name in WORKERS}
    for name, python in interpreters.items():  # one after the other: two PyTorch processes would share 2 cores
        subprocess.run([str(python), __file__, "--worker", name, "--workdir", str(args.workdir)], check=True,
                       env={**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1"})
    results = {name: summary(name, json.loads((args.workdir / f"{name}.json").read_text()), args.warmup)
               for name in interpreters}
    trl_runs = [results["trl"], results["trl_no_checkpointing"]]
    step_ratio = min(run["seconds_per_step"] for run in trl_runs) / results["adaptlab"]["seconds_per_step"]
    rss_ratio = results["adaptlab"]["peak_rss_mb"] / min(run["peak_rss_mb"] for run in trl_runs)
    save("ppo_vs_trl", {
        "settings": SETTINGS, "reward": "minilm head on IMDB (2,000 reviews), log-odds of positive",
        "policy_weights": "SmolLM2-135M-Instruct from the packaged Q4_1 GGUF, de-quantised to float",
        "value_function": {"adaptlab": "scalar head on the LoRA policy", "trl": "separate full SmolLM2 value model (TRL's design)"},
        "adaptlab": results["adaptlab"], "trl": results["trl"], "trl_no_checkpointing": results["trl_no_checkpointing"],
        "ratios_against": "seconds: TRL's faster run; memory: TRL's leaner run",
        "seconds_per_step_ratio": round(step_ratio, 3), "peak_rss_ratio": round(rss_ratio, 3), "targets": TARGETS,
        "meets_targets": step_ratio >= TARGETS["seconds_per_step_ratio"] and rss_ratio <= TARGETS["peak_rss_ratio"],
    })


if __name__ == "__main__":
    main()
