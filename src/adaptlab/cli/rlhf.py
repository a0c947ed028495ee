"""``adaptlab rlhf``: reward models, PPO, DPO and policy evaluation. The model options of ``reward``, ``ppo`` and
``dpo`` are generated from ``RewardModel``, ``PPOConfig`` and ``DPOPolicy``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from adaptlab.cli.common import (DEVICE, JsonOpt, OverwriteOpt, TestData, TrainData, ValData, command, dataclass_options,
                                 default_output, format_params, given, opt, out, preflight)
from adaptlab.errors import AdaptlabError
from adaptlab.rlhf.dpo import DPOPolicy
from adaptlab.rlhf.ppo_config import PPOConfig
from adaptlab.rlhf.reward import RewardModel
from adaptlab.training.options import TrainingOptions

PreferenceData = opt(str, "Preference data: pairs, rankings or HH-RLHF dialogues (.jsonl[.gz], .json, .csv), a feedback project, or a Hub id.", "--data")
Output = opt(Path, "Artifact directory to write (default: runs/<data>-<command>, e.g. runs/prefs-reward-model).", "--output", "-o")
PREFERENCE_OPTIONS = {
    "data": PreferenceData, "output": Output, "overwrite": OverwriteOpt,
    "train_size": opt(int, "Sub-sample the training pairs."),
    "skip_invalid": opt(bool, "Drop invalid rows (counted) instead of stopping at the first.", "--skip-invalid/--no-skip-invalid"),
}


def _preferences(values: dict, job: type, what: str):
    """Check the job's options (constructing it only stores and checks them) and the output, then read and split
    the data. Returns the split, the data's kind, the output and whether to overwrite it."""
    from adaptlab.errors import AdaptlabError
    from adaptlab.jobs import check_output
    from adaptlab.rlhf import read_preferences, split_preferences

    data, output, overwrite = values.pop("data"), values.pop("output"), values.pop("overwrite")
    skip_invalid, train_size = bool(values.pop("skip_invalid")), values.pop("train_size")
    if data is None:
        raise AdaptlabError("--data is required")
    output = default_output(output, data, what)
    job(**given(values))  # a bad option fails before the data is read
    check_output(output, overwrite, inputs=[data, values.get("model")], trains=True)
    pairs, kind = read_preferences(data, skip_invalid)
    split = split_preferences(pairs, data, seed=values.get("seed") or 0, train_size=train_size)
    return split, kind, output, overwrite


def reward(values: dict) -> None:
    from adaptlab.rlhf import train_reward_model

    as_json = values.pop("as_json")
    split, kind, output, overwrite = _preferences(values, RewardModel, "reward-model")
    manifest = train_reward_model(split, output, overwrite=overwrite, **given(values)).manifest.to_json()
    if as_json:
        print(json.dumps({"artifact": str(output), "metrics": manifest["metrics"], "cost": manifest["cost"]}, indent=2))
        return
    test = manifest["metrics"]["test"]
    out.print(f"reward model ({kind}, {split.describe()['pairs']['train']} training pairs) -> {output}")
    out.print(f"held-out pairwise accuracy {test['pairwise_accuracy']:.4f} on {test['pairs']} pairs "
              f"(val {manifest['metrics']['val']['pairwise_accuracy']:.4f}); mean margin {test['mean_margin']:.3f}; "
              f"{format_params(manifest['cost'])} trainable parameters; {manifest['cost']['train_seconds']:.0f} s")


def dpo(values: dict) -> None:
    from adaptlab.rlhf.dpo import train_dpo

    split, _, output, overwrite = _preferences(values, DPOPolicy, "dpo")
    manifest = train_dpo(split, output, overwrite=overwrite, **given(values)).manifest.to_json()
    test = manifest["metrics"]["test"]
    out.print(f"DPO on {split.describe()['pairs']['train']} pairs -> {output}; held-out preference accuracy "
              f"{test.get('rewards/accuracies', float('nan')):.3f}, margin {test.get('rewards/margins', float('nan')):.3f}")


PPO_OPTIONS = {
    "reward": opt(str, "A reward-model artifact, a classifier artifact (with --reward-label), or module:function."),
    "output": Output, "overwrite": OverwriteOpt,
    "prompts": opt(str, "'imdb' (first words of IMDB reviews), or a .txt / .jsonl / .csv file of prompts. (default: imdb)"),
    "prompt_column": opt(str, "Column of a tabular --prompts file. (default: prompt)"),
    "reward_label": opt(str, "For a classifier reward: the label whose log-odds is the reward."),
    "model": opt(str, "Policy: a causal LM. (default: smollm2-135m)"),
    "resume": opt(bool, "Continue from the last checkpoint.", "--resume/--no-resume"),
    "device": DEVICE,
}


def ppo(values: dict) -> None:
    from adaptlab.errors import AdaptlabError
    from adaptlab.jobs import check_output

    spec, output, device, overwrite = values.pop("reward"), values.pop("output"), values.pop("device"), values.pop("overwrite")
    if spec is None:
        raise AdaptlabError("--reward is required")
    model, resume = values.pop("model") or "smollm2-135m", bool(values.pop("resume"))
    prompts, column, label = values.pop("prompts"), values.pop("prompt_column") or "prompt", values.pop("reward_label")
    prompts = "imdb" if prompts is None else prompts  # an empty --prompts is refused, not the default
    output = default_output(output, prompts, "ppo")
    check_output(output, overwrite, inputs=[prompts, spec, model], trains=True)
    config = PPOConfig(**given(values))
    from adaptlab.rlhf.rewards import check_reward

    check_reward(spec, label)

    from adaptlab.rlhf.prompts import read_prompts

    prompt_list = read_prompts(prompts, column, None, config.seed)  # before torch is imported: a bad file is refused at once
    from adaptlab.rlhf.ppo import train_ppo

    manifest = train_ppo(prompt_list, output, reward=spec, reward_label=label, model=model, config=config, resume=resume,
                         device=device, overwrite=overwrite).manifest.to_json()
    metrics = manifest["metrics"]
    out.print(f"{metrics['steps']} PPO steps: mean reward {metrics['reward_first_steps']:.3f} (first 3) -> "
              f"{metrics['reward_last_steps']:.3f} (last 3), KL {metrics['kl_last']:.2f}; policy -> {output}")


def rlhf_eval(
    policies: Annotated[list[Path], typer.Argument(help="A policy artifact from `adaptlab rlhf ppo` (compared with its base), or several generators (sft, dpo, ppo artifacts) compared with one --reference.", metavar="POLICY...")],
    reward: Annotated[str, typer.Option(help="Reward to score with: reward-model or classifier artifact, or module:function.")],
    reward_label: Annotated[Optional[str], typer.Option(help="For a classifier reward: the label whose log-odds is the reward.")] = None,
    prompts: Annotated[str, typer.Option(help="'imdb' (held-out review openings) or a prompts file; the policy's own training prompts are left out.")] = "imdb",
    prompt_column: Annotated[str, typer.Option(help="Column of a tabular --prompts file.")] = "prompt",
    n: Annotated[int, typer.Option("-n", "--n", min=1, max=2**31 - 1, help="How many prompts.")] = 64,
    max_new_tokens: Annotated[int, typer.Option(min=1, max=65_536, help="Tokens per response.")] = 24,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Sampling seed (the same for base and tuned).")] = 0,
    reference: Annotated[Optional[str], typer.Option(help="What every policy is compared with (default: the listed artifact the others started from, e.g. the SFT model PPO and DPO were trained from; else the first policy's base).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Directory for results.json and results.md (default: runs/<policy>-rlhf-eval).")] = None,
    device: DEVICE = None,
) -> None:
    """Policies vs their reference on held-out prompts (the policies' training prompts left out): mean reward, win
    rate, KL to the reference, samples."""
    for policy in policies:  # a policy is an artifact directory, or (compared with others) a model name
        if not policy.is_dir() and (len(policies) == 1 and reference is None or policy.is_absolute() or len(policy.parts) > 1):
            raise AdaptlabError(f"policy '{policy}' does not exist; give a policy artifact (adaptlab rlhf ppo -o DIR)")
    from adaptlab.jobs import check_output_directory
    from adaptlab.rlhf.prompts import read_prompts

    output = Path(default_output(output, policies[0], "rlhf-eval"))
    check_output_directory(output, [*policies, reward, prompts, reference], marker=("results.json",))  # apart from inputs
    from adaptlab.rlhf.rewards import check_reward

    check_reward(reward, reward_label)  # every name is checked before torch is imported
    for model in [*policies, reference]:
        preflight({"device": device, "model": None if model is None else str(model)}, decoder=True)
    # a generous draw of candidates, so that n remain once the policies' training prompts are left out
    drawn = 4 * n * len(policies) if prompts in ("imdb", "rotten_tomatoes") else None
    prompt_list = read_prompts(prompts, prompt_column, drawn, 10_000 + seed)
    from adaptlab.rlhf.evaluate import compare_policies, evaluate_policy, held_out, write_comparison, write_report
    from adaptlab.rlhf.rewards import load_reward

    for policy in policies:
        prompt_list = held_out(policy, prompt_list, None)
    prompt_list = prompt_list[:n]
    score = load_reward(reward, reward_label, device)
    if len(policies) == 1 and reference is None:
        result = evaluate_policy(policies[0], prompt_list, score, max_new_tokens=max_new_tokens, seed=seed, device=device)
        write_report(result, output)
        out.print(f"reward {result['reward_base']:.3f} (base) -> {result['reward_tuned']:.3f} (tuned), win rate "
                  f"{result['win_rate']:.3f}, KL to base {result['kl_to_base']:.2f}; {output / 'results.md'}")
        return
    result = compare_policies(policies, prompt_list, score, reference=reference, max_new_tokens=max_new_tokens, seed=seed,
                              device=device)
    write_comparison(result, output)
    out.print(f"reference {result['reference']}: reward {result['reward_reference']:.3f}", highlight=False)
    for row in result["policies"]:
        out.print(f"{row['policy']}: reward {row['reward']:.3f} ({row['reward_gain']:+.3f}), win rate {row['win_rate']:.3f}, "
                  f"KL {row['kl_to_reference']:.2f}", highlight=False)
    out.print(f"{output / 'results.md'}", highlight=False)


def add_reward(app: typer.Typer) -> None:
    """The reward family's command: ``rlhf reward``."""
    options = {**PREFERENCE_OPTIONS, **dataclass_options(RewardModel, first=(TrainingOptions,)), "as_json": JsonOpt}
    app.command("reward")(command("rlhf_reward", "Train a reward model on human preferences (Bradley-Terry); reports "
                                  "held-out pairwise accuracy.", options, reward))


def add_ppo(app: typer.Typer) -> None:
    """The ppo family's command: ``rlhf ppo``."""
    app.command("ppo")(command("rlhf_ppo", "Optimise a causal LM with PPO against a reward, with a KL penalty to the "
                               "reference policy.", {**PPO_OPTIONS, **dataclass_options(PPOConfig)}, ppo, decoder=True))


def add_dpo(app: typer.Typer) -> None:
    """The dpo family's command: ``rlhf dpo``."""
    app.command("dpo")(command("rlhf_dpo", "Direct preference optimisation (TRL's DPOTrainer) on the same preference "
                               "data; no reward model.", {**PREFERENCE_OPTIONS, **dataclass_options(DPOPolicy)}, dpo, decoder=True))


RL_DATA_OPTIONS = {
    "data": opt(str, "Prompts with reference answers: arithmetic (the shipped verifiable task), wiki-descriptions, or a "
                "prompt/completion or chat file (.jsonl/.csv/.parquet) or Hub id.", "--data"),
    "reward": Annotated[Optional[list[str]], typer.Option("--reward", help="A reward function NAME[:ARGUMENT][@WEIGHT]: "
                        "exact, numeric[:TOL], regex:PATTERN, json-schema:FILE, length:MIN-MAX, a reward-model artifact or "
                        "module:function; repeat to combine (weights add).")],
    "train_size": opt(int, "Sub-sample the training prompts."),
    "val_size": opt(int, "Sub-sample the validation prompts."),
    "test_size": opt(int, "Sub-sample the test prompts (scored once, after training)."),
    "train_data": TrainData, "val_data": ValData, "test_data": TestData,
    "output": Output, "overwrite": OverwriteOpt,
}


def _reinforce(job_class, train, what: str, values: dict) -> None:
    """GRPO or RLOO: options and rewards checked, then the data read and split, then training."""
    from adaptlab.data.generation import load_generation_splits
    from adaptlab.jobs import check_output

    data, output, overwrite, as_json = values.pop("data"), values.pop("output"), values.pop("overwrite"), values.pop("as_json")
    sizes = {k: values.pop(k) for k in ("train_size", "val_size", "test_size", "train_data", "val_data", "test_data")}
    if data is None and not sizes["train_data"]:
        raise AdaptlabError("--data is required: prompts with reference answers (e.g. --data arithmetic), or your own "
                            "splits with --train-data and --test-data")
    params = {**given(values), "reward": values.get("reward") or []}
    job_class(**params)  # bad options and rewards fail before the data is read or a model loads
    output = default_output(output, data or sizes["train_data"], what)
    check_output(output, overwrite, inputs=[data or sizes["train_data"], params.get("model")], trains=True)
    splits = load_generation_splits(data, seed=params.get("seed") or 0, **sizes)
    manifest = train(splits, output, overwrite=overwrite, **params).manifest.to_json()
    if as_json:
        print(json.dumps({"artifact": str(output), "metrics": manifest["metrics"], "cost": manifest["cost"]}, indent=2))
        return
    training, test = manifest["training"], manifest["metrics"]["test"]
    rewards = ", ".join(f"{name} {value:.3f}" for name, value in test["rewards"].items())
    out.print(f"{what.upper()}: {training['steps']} steps, training reward {training['reward_first_steps']} (first 3) -> "
              f"{training['reward_last_steps']} (last 3); held-out greedy replies ({test['n']} prompts): {rewards}; "
              f"policy -> {output}", highlight=False)


def add_grpo(app: typer.Typer) -> None:
    """The grpo family's command: ``rlhf grpo``."""
    from adaptlab.rlhf.grpo import GRPOPolicy, train_grpo

    options = {**RL_DATA_OPTIONS, **dataclass_options(GRPOPolicy), "as_json": JsonOpt}
    app.command("grpo")(command("rlhf_grpo", "GRPO (TRL's GRPOTrainer): sample a group of completions per prompt, score them "
                                "with reward functions, move towards the better ones.", options,
                                lambda values: _reinforce(GRPOPolicy, train_grpo, "grpo", values), decoder=True))


def add_rloo(app: typer.Typer) -> None:
    """The rloo family's command: ``rlhf rloo``."""
    from adaptlab.rlhf.grpo import RLOOPolicy, train_rloo

    options = {**RL_DATA_OPTIONS, **dataclass_options(RLOOPolicy), "as_json": JsonOpt}
    app.command("rloo")(command("rlhf_rloo", "RLOO (TRL's RLOOTrainer): as grpo, each completion against the mean reward of "
                                "the others in its group.", options, lambda values: _reinforce(RLOOPolicy, train_rloo, "rloo", values),
                                decoder=True))


def _pairs_trainer(job_class, train, what: str, values: dict) -> None:
    """ORPO or SimPO on preference pairs: options checked, data read and split, then training."""
    split, _, output, overwrite = _preferences(values, job_class, what)
    test = train(split, output, overwrite=overwrite, **given(values)).manifest.metrics.test
    out.print(f"{what.upper()} on {split.describe()['pairs']['train']} pairs -> {output}; held-out reward accuracy "
              f"{test.get('rewards/accuracies', float('nan')):.3f}, margin {test.get('rewards/margins', float('nan')):.3f}",
              highlight=False)


def add_orpo(app: typer.Typer) -> None:
    """The orpo family's command: ``rlhf orpo``."""
    from adaptlab.rlhf.orpo import ORPOPolicy, train_orpo

    app.command("orpo")(command("rlhf_orpo", "ORPO (TRL): SFT on the chosen replies plus an odds-ratio penalty on the "
                                "rejected ones; one stage, no reference model.", {**PREFERENCE_OPTIONS, **dataclass_options(ORPOPolicy)},
                                lambda values: _pairs_trainer(ORPOPolicy, train_orpo, "orpo", values), decoder=True))


def add_simpo(app: typer.Typer) -> None:
    """The simpo family's command: ``rlhf simpo``."""
    from adaptlab.rlhf.simpo import SimPOPolicy, train_simpo

    app.command("simpo")(command("rlhf_simpo", "SimPO (TRL's CPO trainer, simpo loss): length-normalised likelihood as the "
                                 "reward, a target margin, no reference model.", {**PREFERENCE_OPTIONS, **dataclass_options(SimPOPolicy)},
                                 lambda values: _pairs_trainer(SimPOPolicy, train_simpo, "simpo", values), decoder=True))


def _kto(values: dict) -> None:
    from adaptlab.jobs import check_output
    from adaptlab.rlhf.kto import KTOPolicy, read_thumbs, split_thumbs, train_kto

    data, output, overwrite = values.pop("data"), values.pop("output"), values.pop("overwrite")
    train_size = values.pop("train_size")
    values.pop("skip_invalid")
    if data is None:
        raise AdaptlabError("--data is required: {prompt, completion, label} rows, or preference pairs")
    KTOPolicy(**given(values))  # a bad option fails before the data is read
    output = default_output(output, data, "kto")
    check_output(output, overwrite, inputs=[data, values.get("model")], trains=True)
    split = split_thumbs(read_thumbs(data), data, seed=values.get("seed") or 0, train_size=train_size)
    test = train_kto(split, output, overwrite=overwrite, **given(values)).manifest.metrics.test
    rows = split.describe()["rows"]["train"]
    out.print(f"KTO on {rows} thumbs -> {output}; held-out rewards chosen {test.get('rewards/chosen', float('nan')):.3f}, "
              f"rejected {test.get('rewards/rejected', float('nan')):.3f}", highlight=False)


def add_kto(app: typer.Typer) -> None:
    """The kto family's command: ``rlhf kto``."""
    from adaptlab.rlhf.kto import KTOPolicy

    data = opt(str, "Thumbs up/down: {prompt, completion, label} rows (.jsonl/.csv/.parquet; label true/false), or "
               "preference pairs (each read as one up and one down).", "--data")
    app.command("kto")(command("rlhf_kto", "KTO (TRL): learn from replies marked good or bad one by one, no pairs needed.",
                               {**PREFERENCE_OPTIONS, "data": data, **dataclass_options(KTOPolicy)}, _kto, decoder=True))


def add_tools(app: typer.Typer) -> None:
    """The group's own command: ``rlhf eval`` (policies against a reward)."""
    app.command("eval")(rlhf_eval)
