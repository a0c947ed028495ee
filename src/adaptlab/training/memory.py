"""Will one training pass of a causal LM fit in memory? A warning before the pass, not an OOM kill during it.

On a GPU an out-of-memory error is an exception; on a CPU the kernel kills the process with nothing on screen,
minutes into a run. A causal LM's activation memory grows with the tokens in one pass (batch x padded length):
every layer keeps about 20 hidden-size and 5 intermediate-size vectors per token for the backward pass, and the
vocabulary projection 4 vocabulary-size ones (logits, their float32 copy, log-softmax and its gradient).
Measured on SmolLM2-135M with LoRA in float32: 2.95 MB per token; this estimate gives 3.09 MB. SFT projects only
labelled positions onto the vocabulary, so for long prompts with short replies it is an upper bound (by ~25%).
"""

from __future__ import annotations

import math

SAFE_SHARE = 0.8  # of the memory available now


def activation_bytes_per_token(config, lm_head: bool = True) -> int | None:
    """Float32 activation bytes one trained token holds until the backward pass (see the module docstring);
    ``lm_head=False`` for a scalar head (reward models): no vocabulary-size activations. None for a configuration
    that does not name its sizes the usual way."""
    hidden, layers, vocab = (getattr(config, name, None) for name in ("hidden_size", "num_hidden_layers", "vocab_size"))
    if not (hidden and layers and vocab):
        return None
    intermediate = getattr(config, "intermediate_size", None) or 4 * hidden
    return 4 * (layers * (20 * hidden + 5 * intermediate) + (4 * vocab if lm_head else 0))


def available_bytes(device) -> int | None:
    """Memory free for this process on ``device`` now (None when it cannot be told)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        import psutil

        return psutil.virtual_memory().available
    return None


def micro_batch_advice(config, batch_size: int, grad_accum: int, longest: int, available: int | None,
                       per_item: int = 1, item: str = "sequences", lm_head: bool = True) -> str | None:
    """One line advising a smaller ``--batch-size`` (and a larger ``--grad-accum``, the same optimiser step) when
    ``batch_size`` items of ``per_item`` sequences (2 for preference pairs) of ``longest`` tokens would need more
    than SAFE_SHARE of ``available`` bytes."""
    per_token = activation_bytes_per_token(config, lm_head)
    if available is None or per_token is None:
        return None
    per_batch_item = per_token * longest * per_item
    needed = per_batch_item * batch_size
    if needed <= SAFE_SHARE * available:
        return None
    fits = max(1, int(SAFE_SHARE * available // per_batch_item))
    smaller = 2 ** int(math.log2(fits))  # a power of two at most what fits
    accum = math.ceil(batch_size * grad_accum / smaller)
    return (f"one training pass of {batch_size} {item} x {longest} tokens needs up to about {needed / 2**30:.1f} GB of "
            f"activations, and {available / 2**30:.1f} GB is available: pass --batch-size {smaller} --grad-accum {accum} "
            f"(the same {batch_size * grad_accum} {item} per optimiser step), a smaller --max-length, or "
            "--gradient-checkpointing")


def warn_if_pass_too_large(job, config, longest: int, per_item: int = 1, item: str = "sequences",
                           lm_head: bool = True) -> None:
    """Print the advice above for a training job (its batch_size, grad_accum, gradient_checkpointing, runtime)
    before it trains: on a CPU the alternative is the kernel killing the process, silently, minutes in."""
    from adaptlab.progress import stderr

    if job.gradient_checkpointing:
        return
    runtime = job.runtime
    available = available_bytes(runtime.torch_device)
    if available is not None and runtime.resolved_precision(training=True) != "fp32":
        available *= 2  # half-precision activations: about half the float32 estimate
    advice = micro_batch_advice(config, job.batch_size, job.grad_accum, longest, available, per_item, item, lm_head)
    if advice:
        stderr.print(f"[yellow]{advice}[/]")
