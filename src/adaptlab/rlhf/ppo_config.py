"""PPO's settings, apart from the loop so the command line is built without torch."""

from __future__ import annotations

from dataclasses import dataclass

from adaptlab.adapt import default_lr, lora_options, lr_help
from adaptlab.errors import AdaptlabError
from adaptlab.params import check_fields, param
from adaptlab.training.tracking import check_logger


@dataclass(kw_only=True)
class PPOConfig(lora_options("ppo")):
    """PPO's settings (names and defaults in the spirit of TRL's former ``PPOConfig``). There is no precision
    setting: PPO trains and generates in fp32 only (``adaptlab.rlhf.ppo``)."""

    steps: int = param(20, "PPO steps (one batch of rollouts each).", minimum=1, maximum=1_000_000)
    batch_size: int = param(8, "Prompts per step.", minimum=1, below=2**31)
    mini_batch_size: int = param(4, "Rollouts per gradient step.", minimum=1, below=2**31)
    ppo_epochs: int = param(4, "Passes over each batch of rollouts.", minimum=1, maximum=1000)
    max_new_tokens: int = param(24, "Tokens per response.", minimum=1, maximum=65_536)
    temperature: float = param(1.0, "Sampling temperature of the rollouts.", above=0, maximum=100)
    top_k: int = param(0, "Sample from the k most likely tokens (0 = off).", minimum=0)
    lr: float | None = param(None, lr_help("ppo", "Learning rate"), above=0, maximum=10)
    method: str = param("lora", "lora (reference = adapter disabled) or full.", choices=("lora", "full"))
    lora_r: int | None = param(None, replaced_by="r")
    init_kl_coef: float = param(0.2, "Initial KL penalty coefficient.", minimum=0)
    target_kl: float | None = param(6.0, "Adaptive KL target (nats per response); 0 = fixed coefficient.", minimum=0)
    kl_horizon: int = param(10_000, "Horizon of the adaptive KL controller.", minimum=1)
    gamma: float = param(1.0, "Discount factor.", minimum=0, below=1.000001)
    lam: float = param(0.95, "GAE lambda.", minimum=0, below=1.000001)
    cliprange: float = param(0.2, "Policy ratio clip range.", above=0)
    cliprange_value: float = param(0.2, "Value clip range.", above=0)
    vf_coef: float = param(0.1, "Value loss coefficient.", minimum=0)
    max_grad_norm: float = param(1.0, "Gradient norm clip.", above=0)
    score_clip: float | None = param(None, "Clip (normalised) scores to +-this value.", above=0)
    score_norm: bool = param(False, "Scale scores by a running mean/std of all scores seen (reward models drift in scale).")
    missing_eos_penalty: float | None = param(
        None, "Subtract this from the score of a response that ends without EOS (cut at --max-new-tokens), as TRL's "
              "missing_eos_penalty: the policy learns to finish its sentences.", minimum=0)
    ratio_threshold: float | None = param(
        10.0, "Skip a minibatch update whose mean policy ratio exceeds this (a runaway batch; TRL's ratio_threshold).", above=1)
    logger: str = param("csv", "Step log: csv (kept in the artifact); tensorboard (csv plus TensorBoard events, also kept "
                               "in the artifact under tensorboard/); mlflow or wandb (csv plus a tracking run with the "
                               "params, per-step metrics and the artifact).", choices=("csv", "tensorboard", "mlflow", "wandb"))
    seed: int = param(0, "Seed.", minimum=0, below=2**32)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.lr is None:
            self.lr = default_lr("ppo", self.method)
        if not self.target_kl:
            self.target_kl = None  # 0 on the command line: a fixed coefficient

    def check(self) -> None:
        if self.batch_size % self.mini_batch_size:
            raise AdaptlabError("--batch-size must be a multiple of --mini-batch-size")
        check_logger(self.logger)  # tensorboard, mlflow, wandb: one line with the pip command if missing
