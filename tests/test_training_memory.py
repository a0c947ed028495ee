"""The activation-memory estimate behind SFT's "this pass will not fit" warning."""

from __future__ import annotations

from types import SimpleNamespace

from adaptlab.training.memory import activation_bytes_per_token, micro_batch_advice

SMOLLM2 = SimpleNamespace(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, vocab_size=49152)
GB = 2**30


def test_the_estimate_is_near_the_measured_smollm2_figure():
    # measured: 2.95 MB per trained token (SmolLM2-135M + LoRA, float32, 2 x 1024 tokens, peak RSS over the weights)
    assert 2.8e6 < activation_bytes_per_token(SMOLLM2) < 3.4e6


def test_the_pass_that_was_oom_killed_gets_the_batch_that_ran():
    # 16 x 1024 tokens was killed on a 24 GB machine; 4 x 1024 accumulated 4 times trained
    advice = micro_batch_advice(SMOLLM2, 16, 1, 1024, 22 * GB)
    assert advice and "--batch-size 4 --grad-accum 4" in advice and "16 sequences x 1024" in advice
    assert micro_batch_advice(SMOLLM2, 16, 2, 1024, 22 * GB).count("--grad-accum 8") == 1  # the same 32 per step


def test_no_advice_when_it_fits_or_cannot_be_told():
    assert micro_batch_advice(SMOLLM2, 4, 4, 1024, 22 * GB) is None
    assert micro_batch_advice(SMOLLM2, 16, 1, 1024, None) is None
    assert micro_batch_advice(SimpleNamespace(n_positions=1024), 16, 1, 1024, GB) is None  # sizes not named
    assert "--batch-size 1 " in micro_batch_advice(SMOLLM2, 16, 1, 1024, GB)  # never below one sequence


def test_reward_models_count_pairs_and_no_vocabulary_projection():
    minilm = SimpleNamespace(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, vocab_size=30522)
    # measured: 16 sequences x 256 tokens on minilm swing resident memory by about 1.4 GB
    assert 1.2 * GB < activation_bytes_per_token(minilm, lm_head=False) * 16 * 256 < 1.7 * GB
    advice = micro_batch_advice(SMOLLM2, 8, 4, 512, 8 * GB, per_item=2, item="pairs", lm_head=False)
    assert "8 pairs x 512 tokens" in advice and "--batch-size 2 --grad-accum 16" in advice and "32 pairs" in advice
