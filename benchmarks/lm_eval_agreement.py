"""lm-evaluation-harness against `adaptlab serve` vs adaptlab's own forgetting probe, on the same items.

Two generators served by one `adaptlab serve` on loopback: SmolLM2-135M-Instruct and an SFT LoRA artifact trained
on it here (wiki-descriptions, 96 examples, one epoch), an adapter on the same weights. lm-evaluation-harness
(`local-completions`, `/v1/completions` with `echo`/`logprobs`, batch size 8) scores the shipped local tasks
(`adaptlab.serve.evaltasks`): `adaptlab_rt_sentiment` (the probe's 200 Rotten Tomatoes items, chat template on)
and `adaptlab_wiki_ppl` (the 64 held-out Wikipedia summaries, rolling log-likelihood). adaptlab's side, in this
process on the same weights: `rt_accuracy` (the forgetting probe's zero-shot accuracy, `LabelScorer`) and
`sequence_loss` over the same summaries (each after the harness's prefix token; word perplexity = exp(total
loss / words), words counted as the harness counts them; token perplexity also recorded).

    python benchmarks/lm_eval_agreement.py
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
from pathlib import Path

from _common import save
from serve_load import _serve


def harness(url: str, name: str, tokenizer: str, task: str, **options) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    from adaptlab.serve.evaltasks import TASKS_DIR

    started = time.perf_counter()
    result = lm_eval.simple_evaluate(
        model="local-completions", tasks=[task], batch_size=8,
        model_args=f"base_url={url}/v1/completions,model={name},tokenizer={tokenizer},tokenizer_backend=huggingface",
        task_manager=TaskManager(include_path=str(TASKS_DIR)), **options)
    return {**result["results"][task], "seconds": round(time.perf_counter() - started, 1)}


def own_probe(generator) -> dict:
    import torch

    from adaptlab.data.generation import general_text_sample
    from adaptlab.models.loading import pad_id
    from adaptlab.sft.evaluate import rotten_tomatoes_probe, rt_accuracy, sequence_loss
    from adaptlab.sft.template import IGNORE

    tokenizer = generator.tokenizer
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id  # the harness's
    texts = general_text_sample()
    examples = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        examples.append(([prefix, *ids], [IGNORE, *ids]))
    with generator.selected(), torch.inference_mode():
        accuracy = rt_accuracy(generator.model, tokenizer, *rotten_tomatoes_probe())
        loss = sequence_loss(generator.model, examples, pad_id(tokenizer))
    words = sum(len(re.split(r"\s+", t)) for t in texts)
    return {"rt_accuracy": accuracy, "word_perplexity": math.exp(loss["loss"] * loss["tokens"] / words),
            "token_perplexity": loss["perplexity"], "tokens": loss["tokens"], "words": words}


def main() -> None:
    os.environ.setdefault("ADAPTLAB_CACHE", tempfile.mkdtemp(prefix="adaptlab-bench-"))
    import adaptlab
    from adaptlab.models import resolve_model
    from adaptlab.serve import load_registry

    artifact = Path(tempfile.mkdtemp()) / "sft"
    started = time.perf_counter()
    splits = adaptlab.load_generation_splits("wiki-descriptions", train_size=96, val_size=8, test_size=4)
    adaptlab.train_sft(splits, artifact, method="lora", epochs=1, batch_size=8, lr=2e-3, forgetting=False,
                       max_new_tokens=2, generate_limit=1, progress=False)
    train_seconds = round(time.perf_counter() - started, 1)
    tokenizers = {"smollm2-135m": resolve_model("smollm2-135m").path, "sft": str(artifact / "tokenizer")}
    if not Path(tokenizers["sft"]).is_dir():
        tokenizers["sft"] = tokenizers["smollm2-135m"]
    server, url = _serve(["--generator", "smollm2-135m", "--generator", f"sft={artifact}"])
    rows = {}
    try:
        for name, tokenizer in tokenizers.items():
            rows[name] = {"rt": harness(url, name, tokenizer, "adaptlab_rt_sentiment", apply_chat_template=True),
                          "wiki": harness(url, name, tokenizer, "adaptlab_wiki_ppl")}
            print(name, rows[name], flush=True)
    finally:
        server.kill()
    registry = load_registry({}, ["smollm2-135m", f"sft={artifact}"], None, "cpu")
    models = []
    for name in tokenizers:
        own = own_probe(registry.generators[name])
        lm_acc, lm_ppl = rows[name]["rt"]["acc,none"], rows[name]["wiki"]["word_perplexity,none"]
        models.append({
            "model": name,
            "rt_sentiment": {"items": 200, "lm_eval_accuracy": round(lm_acc, 4), "adaptlab_accuracy": own["rt_accuracy"],
                             "abs_difference": round(abs(lm_acc - own["rt_accuracy"]), 4),
                             "lm_eval_seconds": rows[name]["rt"]["seconds"]},
            "wiki_perplexity": {"items": 64, "lm_eval_word_perplexity": round(lm_ppl, 4),
                                "adaptlab_word_perplexity": round(own["word_perplexity"], 4),
                                "abs_difference": round(abs(lm_ppl - own["word_perplexity"]), 4),
                                "relative_difference": round(abs(lm_ppl - own["word_perplexity"]) / own["word_perplexity"], 6),
                                "adaptlab_token_perplexity": own["token_perplexity"], "tokens": own["tokens"], "words": own["words"],
                                "lm_eval_byte_perplexity": round(rows[name]["wiki"]["byte_perplexity,none"], 4),
                                "lm_eval_seconds": rows[name]["wiki"]["seconds"]},
        })
        print(models[-1], flush=True)
    import importlib.metadata

    save("lm_eval_agreement", {
        "harness": f"lm-evaluation-harness {importlib.metadata.version('lm-eval')} (local-completions, batch size 8)",
        "served_by": "adaptlab serve --generator smollm2-135m --generator sft=ARTIFACT (the SFT LoRA as an adapter on the base)",
        "sft_artifact": {"data": "wiki-descriptions", "train_size": 96, "epochs": 1, "method": "lora", "lr": 2e-3,
                         "train_seconds": train_seconds},
        "models": models,
        "max_abs_difference_accuracy": max(m["rt_sentiment"]["abs_difference"] for m in models),
        "max_relative_difference_perplexity": max(m["wiki_perplexity"]["relative_difference"] for m in models),
    })


if __name__ == "__main__":
    main()
