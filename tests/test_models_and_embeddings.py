"""Model resolution, GGUF conversion cache, and the embedder (pooling, batching, cache)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptlab import AdaptlabError, Embedder
from adaptlab._io import atomic_directory
from adaptlab.models import PACKAGED_MODELS, model_kind, resolve_model
from conftest import MINILM_DIR


def test_short_names_resolve_to_packaged_weights():
    ref = resolve_model("minilm")
    assert ref.local and ref.path == str(MINILM_DIR)
    assert model_kind(ref) == "encoder"
    assert set(PACKAGED_MODELS) == {"minilm", "smollm2-135m"}


def test_local_directory_and_bad_paths(tiny_bert, tmp_path):
    assert resolve_model(str(tiny_bert)).path == str(tiny_bert)
    with pytest.raises(AdaptlabError, match="no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(AdaptlabError, match="not a model directory"):
        resolve_model("./does/not/exist")


def test_hub_model_offline_fails_clearly(monkeypatch):
    from adaptlab.hub import hub_unreachable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_unreachable.cache_clear()
    with pytest.raises(AdaptlabError, match="not a packaged model .*Hugging Face Hub is not reachable .offline"):
        resolve_model("someone/no-such-model-xyz")
    with pytest.raises(AdaptlabError, match="did you mean minilm"):
        resolve_model("minilmm")
    hub_unreachable.cache_clear()


def test_fingerprint_changes_when_weights_are_rewritten(tiny_bert, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_bert, copy)
    before = resolve_model(str(copy)).fingerprint()
    (copy / "model.safetensors").write_bytes((copy / "model.safetensors").read_bytes())
    import os

    os.utime(copy / "model.safetensors", ns=(1, 1))
    assert resolve_model(str(copy)).fingerprint() != before


def test_atomic_directory_keeps_the_old_content_on_failure(tmp_path):
    target = tmp_path / "work" / "target"
    with atomic_directory(target) as tmp:
        (tmp / "file").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "file").write_text("half")
            raise RuntimeError("interrupted")
    assert (target / "file").read_text() == "v1"
    assert [p.name for p in target.parent.iterdir()] == ["target"]  # no temporary left behind


def _reference(model_dir, texts, pooling):
    """One text at a time, no padding at all: what the batched embedder must reproduce."""
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(model_dir), AutoModel.from_pretrained(model_dir).eval()
    rows = []
    with torch.no_grad():
        for text in texts:
            hidden = model(**tok(text, return_tensors="pt", truncation=True, max_length=128)).last_hidden_state[0]
            rows.append({"mean": hidden.mean(0), "cls": hidden[0], "last": hidden[-1]}[pooling].numpy())
    return np.stack(rows)


@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
def test_batched_embeddings_equal_unpadded_reference(tiny_bert, pooling):
    texts = ["short", "a somewhat longer sentence with more tokens in it", "mid length text here", "x"]
    embedder = Embedder(str(tiny_bert), pooling, batch_size=3, precision="fp32", cache=False, progress=False)
    got = embedder.embed(texts)
    assert got.shape == (4, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, _reference(tiny_bert, texts, pooling), atol=1e-5)


def test_cache_hit_skips_the_model_and_is_keyed_by_settings(tiny_bert):
    texts = ["alpha", "beta", "gamma", "alpha"]
    first = Embedder(str(tiny_bert), "mean", precision="fp32", progress=False).embed(texts)
    np.testing.assert_array_equal(first[0], first[3])
    again = Embedder(str(tiny_bert), "mean", precision="fp32", progress=False)
    np.testing.assert_array_equal(again.embed(texts), first)
    assert again._model is None  # served from the cache without loading weights
    other = Embedder(str(tiny_bert), "cls", precision="fp32", progress=False)
    assert not np.allclose(other.embed(texts), first)
    assert other._model is not None


def test_embedder_rejects_bad_options(tiny_bert):
    with pytest.raises(AdaptlabError, match="--pooling"):
        Embedder(str(tiny_bert), "max")
    with pytest.raises(AdaptlabError, match="--precision"):
        Embedder(str(tiny_bert), precision="fp8")


@pytest.mark.slow
def test_minilm_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    texts = ["the rock is destined to be the 21st century's new conan", "effective but too-tepid biopic", "ok"]
    ours = Embedder("minilm", "mean", precision="fp32", normalize=True, cache=False, progress=False).embed(texts)
    theirs = SentenceTransformer(str(MINILM_DIR), device="cpu").encode(texts)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    bf16 = Embedder("minilm", "mean", precision="bf16", normalize=True, cache=False, progress=False).embed(texts)
    assert (bf16 * theirs).sum(1).min() > 0.999


@pytest.mark.slow
def test_gguf_decoder_is_converted_once_and_matches_the_gguf(monkeypatch, tmp_path):
    """The converted safetensors copy computes the same logits as transformers' own GGUF load."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = PACKAGED_MODELS["smollm2-135m"]
    ref = resolve_model("smollm2-135m")
    assert ref.path.endswith(f"smollm2-135m-{spec.package_version()}")
    assert resolve_model("smollm2-135m").path == ref.path  # second resolve: no new conversion
    converted = AutoModelForCausalLM.from_pretrained(ref.path).eval()
    assert getattr(converted.config, "quantization_config", None) is None
    original = AutoModelForCausalLM.from_pretrained(spec.package_dir(), gguf_file=spec.gguf_file).eval()
    tok = AutoTokenizer.from_pretrained(ref.path)
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(converted(**ids).logits, original(**ids).logits)
    assert model_kind(ref) == "decoder"
    vectors = Embedder("smollm2-135m", "last", cache=False, progress=False).embed(["hello", "a longer sentence"])
    assert vectors.shape == (2, 576) and np.isfinite(vectors).all()


def test_interrupted_embedding_resumes_from_the_cache(tiny_bert, monkeypatch):
    import adaptlab.embeddings as embeddings

    monkeypatch.setattr(embeddings, "FLUSH_EVERY", 4)
    texts = [f"text number {i}" for i in range(12)]
    reference = Embedder(str(tiny_bert), precision="fp32", cache=False, progress=False).embed(texts)
    calls = {"n": 0}
    original = embeddings.pool

    def dies_on_third_batch(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(embeddings, "pool", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        Embedder(str(tiny_bert), precision="fp32", batch_size=4, progress=False).embed(texts)
    monkeypatch.setattr(embeddings, "pool", original)
    resumed = Embedder(str(tiny_bert), precision="fp32", batch_size=4, progress=False)
    with embeddings.EmbeddingCache.open(resumed._cache_key()) as cache:
        assert len(cache.get(texts)) == 8  # two batches were stored before the interruption
    np.testing.assert_allclose(resumed.embed(texts), reference, atol=1e-6)
