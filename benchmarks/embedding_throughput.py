"""Embedding throughput: adaptlab ``Embedder`` vs ``SentenceTransformer.encode``, the anchor at its best and at its defaults.

all-MiniLM-L6-v2 (``minilm``), the first ``--texts`` Rotten Tomatoes sentences (file order), one process, one
machine. Every arm runs once per repeat; the order alternates (A B ... B A ...) so drift in machine speed hits
all arms alike. Reported per arm: texts/s of every repeat, their median and spread (min, max); per comparison:
the ratio adaptlab texts/s / sentence-transformers texts/s *within* each repeat, its median and spread.

What is equal between the two sides of a comparison (the like-for-like rows):

- batch size: adaptlab's ``Embedder`` default (64, ``src/adaptlab/embeddings.py``), passed to ``encode(batch_size=)``;
- tokenisation: ``max_length`` of the Embedder and ``max_seq_length`` of the SentenceTransformer are set to the same
  value (default: the model's declared ``max_seq_length``, 256 for all-MiniLM-L6-v2), recorded as ``max_length``;
- output: mean pooling over real tokens, then L2 normalisation (the model's ``modules.json`` ends with
  ``Normalize``, so adaptlab runs with ``normalize=True`` too); both sort texts by length and pad per batch;
- what is timed: only the ``embed`` / ``encode`` call (tokenisation + forward + pooling). Model construction and one
  warm-up call per arm happen before any timer, for both sides; adaptlab's on-disk cache is off (``cache=False``).

Rows (arm names are the keys of ``rows``):

- ``adaptlab fp32`` vs ``sentence-transformers fp32`` (batch 64): ``ratio_fp32_vs_st_fp32``;
- ``adaptlab bf16`` (``precision="bf16"``: bf16 autocast, fp32 weights) vs ``sentence-transformers bf16`` (ST's
  documented way, ``model_kwargs={"torch_dtype": torch.bfloat16}``: bf16 weights), batch 64: ``ratio_bf16_vs_st_bf16``;
- ``sentence-transformers defaults``: ``SentenceTransformer(path).encode(texts)`` as documented (fp32, batch 32),
  reported with ``ratio_fp32_vs_st_defaults`` for reference;
- ``sentence-transformers fp32 compiled`` (only with ``--st-compile``): ST's documented ``model.compile(dynamic=True)``
  (``sentence_transformers/base/model.py``, ``compile``); when it runs, ``ratio_fp32_vs_st_fp32`` is taken against
  whichever ST fp32 arm at batch 64 has the higher median (``st_fp32_reference``). Compilation happens in a
  warm-up call on all the texts, outside the timers (``st_compile_seconds``). Off by default: inductor compilation
  on a busy 2-core CPU takes minutes, and in a 64-text smoke test the compiled model was slower than eager.

ST speed-ups not run here are listed in ``anchor_settings_not_run`` with the reason (the ONNX and OpenVINO backends
need ``optimum``/``onnxruntime``/``openvino``, which are not installed; flash-attention unpadding needs a GPU).
On a CPU without native bf16 (no AVX512-BF16/AMX) both bf16 arms are emulated, about 8x slower than fp32: there
they embed only the first ``--bf16-texts`` (default 300; all texts on a CPU with native bf16), the same texts for
both, recorded as ``bf16_texts``; compare them to each other, not to fp32. ``cosine_*``: minimum cosine similarity
of adaptlab's vectors to sentence-transformers' own fp32 vectors on the same texts (1.0 = same embeddings).
Whole run at the defaults on a 2-core AVX2 CPU without native bf16: about 5 minutes.

    python benchmarks/embedding_throughput.py [--texts 2000] [--bf16-texts N] [--repeats 3] [--st-compile]
                                              [--out DIR/NAME.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _common
import numpy as np
import torch

NAME = "embedding_throughput"
ADAPTLAB_FP32, ADAPTLAB_BF16 = "adaptlab fp32", "adaptlab bf16"
ST_FP32, ST_BF16, ST_DEFAULTS, ST_COMPILED = ("sentence-transformers fp32", "sentence-transformers bf16",
                                              "sentence-transformers defaults", "sentence-transformers fp32 compiled")
BF16_ARMS = (ADAPTLAB_BF16, ST_BF16)
EMULATED_BF16_TEXTS = 300  # without AVX512-BF16/AMX bf16 runs ~8x slower than fp32: a subset keeps the run short
WARMUP_TEXTS = 64
NOT_RUN = {
    'backend="onnx" (and its O1-O4 optimised / int8-quantised exports)':
        "not installed: needs optimum[onnxruntime] (sentence-transformers[onnx]); nothing installed for this benchmark",
    'backend="openvino" (and its int8-quantised export)':
        "not installed: needs optimum-intel[openvino] (sentence-transformers[openvino]); nothing installed for this benchmark",
    "unpad_inputs / flash-attention variable-length batches":
        "GPU only: needs flash attention (sentence_transformers/base/modules/transformer.py, _can_flatten_inputs)",
    'model_kwargs={"attn_implementation": "flash_attention_2"}': "GPU only; the default (sdpa) is what runs here",
}


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def spread(values: list[float], digits: int = 1) -> dict:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16-texts", type=int, default=None,
                        help=f"texts for the two bf16 arms (default: all where the CPU computes bf16 natively, else the "
                             f"first {EMULATED_BF16_TEXTS})")
    parser.add_argument("--max-length", type=int, default=None, help="default: the model's declared max_seq_length")
    parser.add_argument("--st-compile", action="store_true", help="also time ST fp32 after model.compile(dynamic=True)")
    parser.add_argument("--out", type=Path, default=None, help=f"result file, DIR/NAME.json (default: benchmarks/results/{NAME}.json)")
    args = parser.parse_args()
    os.environ["ADAPTLAB_CACHE"] = tempfile.mkdtemp(prefix="adaptlab-bench-")  # nothing read from an earlier run

    from sentence_transformers import SentenceTransformer

    from adaptlab import Embedder, load_data
    from adaptlab.runtime import Runtime, native_bf16

    texts = list(load_data("rotten_tomatoes").texts[: args.texts])
    native = native_bf16(torch.device("cpu"))
    bf16_count = min(len(texts), args.bf16_texts or (len(texts) if native else EMULATED_BF16_TEXTS))
    warmup = texts[:WARMUP_TEXTS]

    # -- construction: outside every timer, for both sides ----------------------------------------------------
    ours = {p: Embedder("minilm", "mean", precision=p, normalize=True, cache=False, progress=False,
                        max_length=args.max_length) for p in ("fp32", "bf16")}
    max_length = ours["fp32"].max_length  # the model's declared max_seq_length unless --max-length
    batch_size = ours["fp32"].batch_size  # the Embedder's default
    assert ours["bf16"].max_length == max_length and ours["bf16"].batch_size == batch_size
    model_dir = ours["fp32"].ref.path
    st = SentenceTransformer(model_dir, device="cpu")
    st_defaults_max_length = st.max_seq_length
    st.max_seq_length = max_length
    st_bf16 = SentenceTransformer(model_dir, device="cpu", model_kwargs={"torch_dtype": torch.bfloat16})
    st_bf16.max_seq_length = max_length
    assert next(st_bf16.parameters()).dtype == torch.bfloat16
    st_default = SentenceTransformer(model_dir, device="cpu")  # untouched: its own max_seq_length, encode's batch 32

    arms = {
        ADAPTLAB_FP32: lambda x: ours["fp32"].embed(x),
        ST_FP32: lambda x: st.encode(x, batch_size=batch_size, show_progress_bar=False),
        ST_DEFAULTS: lambda x: st_default.encode(x, show_progress_bar=False),
        ADAPTLAB_BF16: lambda x: ours["bf16"].embed(x),
        ST_BF16: lambda x: st_bf16.encode(x, batch_size=batch_size, show_progress_bar=False).astype(np.float32),
    }
    settings = {
        ADAPTLAB_FP32: {"call": "Embedder('minilm', 'mean', precision='fp32', normalize=True, cache=False).embed(texts)",
                        "batch_size": batch_size, "max_length": max_length},
        ST_FP32: {"call": "SentenceTransformer(path).encode(texts, batch_size=B)", "batch_size": batch_size,
                  "max_length": max_length, "weights": "fp32"},
        ST_DEFAULTS: {"call": "SentenceTransformer(path).encode(texts)", "batch_size": 32,
                      "max_length": st_defaults_max_length, "weights": "fp32"},
        ADAPTLAB_BF16: {"call": "Embedder(..., precision='bf16', normalize=True, cache=False).embed(texts)",
                        "batch_size": batch_size, "max_length": max_length, "compute": "bf16 autocast, fp32 weights"},
        ST_BF16: {"call": "SentenceTransformer(path, model_kwargs={'torch_dtype': torch.bfloat16}).encode(texts, batch_size=B)",
                  "batch_size": batch_size, "max_length": max_length, "weights": "bf16"},
    }
    not_run = dict(NOT_RUN)
    compile_seconds = None
    if args.st_compile:
        st_compiled = SentenceTransformer(model_dir, device="cpu")
        st_compiled.max_seq_length = max_length
        st_compiled.compile(dynamic=True)
        arms[ST_COMPILED] = lambda x: st_compiled.encode(x, batch_size=batch_size, show_progress_bar=False)
        settings[ST_COMPILED] = {**settings[ST_FP32], "call": "model.compile(dynamic=True); " + settings[ST_FP32]["call"]}
    else:
        not_run["model.compile(dynamic=True) (torch.compile, inductor)"] = (
            "off by default (--st-compile runs it): compiling on a busy 2-core CPU takes minutes")

    # -- warm-up: first-call kernel selection, page faults, compilation ---------------------------------------
    for name, run in arms.items():
        start = time.perf_counter()
        run(texts if name == ST_COMPILED else warmup)  # compiled: every shape it will meet, so no timer sees a compile
        if name == ST_COMPILED:
            compile_seconds = round(time.perf_counter() - start, 1)
        print(f"warm-up {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)

    # -- timed repeats, order reversed every other repeat ----------------------------------------------------
    names = list(arms)
    rates: dict[str, list[float]] = {name: [] for name in names}
    vectors: dict[str, np.ndarray] = {}
    for repeat in range(args.repeats):
        order = names if repeat % 2 == 0 else names[::-1]
        for name in order:
            batch = texts[:bf16_count] if name in BF16_ARMS else texts
            start = time.perf_counter()
            vectors[name] = np.asarray(arms[name](batch), dtype=np.float32)
            rates[name].append(len(batch) / (time.perf_counter() - start))
            print(f"repeat {repeat + 1}: {name}: {rates[name][-1]:.0f} texts/s", file=sys.stderr)

    st_reference = ST_FP32
    if ST_COMPILED in rates and statistics.median(rates[ST_COMPILED]) > statistics.median(rates[ST_FP32]):
        st_reference = ST_COMPILED
    reference = vectors[ST_FP32]  # ST's own fp32 vectors

    def cosine(name: str) -> float:
        return round(min_cosine(vectors[name], reference[: len(vectors[name])]), 6)

    def ratios(ours_name: str, theirs: str) -> list[float]:
        return [a / b for a, b in zip(rates[ours_name], rates[theirs])]

    rows = {
        name: {
            **settings[name],
            "texts_per_second": [round(r, 1) for r in rates[name]],
            **{f"texts_per_second_{k}": v for k, v in spread(rates[name]).items()},
            "texts": len(vectors[name]),
            "min_cosine_vs_st_fp32": cosine(name),
        }
        for name in names
    }
    comparisons = {
        "fp32": (ADAPTLAB_FP32, st_reference),
        "bf16": (ADAPTLAB_BF16, ST_BF16),
        "fp32_vs_st_defaults": (ADAPTLAB_FP32, ST_DEFAULTS),
    }
    ratio_rows = {key: {"adaptlab": a, "sentence_transformers": b, "per_repeat": [round(r, 3) for r in ratios(a, b)],
                        **spread(ratios(a, b), 3)} for key, (a, b) in comparisons.items()}
    payload = {
        "benchmark": NAME,
        "model": "all-MiniLM-L6-v2 (minilm)",
        "dataset": "rotten_tomatoes (first sentences in file order)",
        "texts": len(texts),
        "bf16_texts": bf16_count,
        "repeats": args.repeats,
        "batch_size": batch_size,
        "max_length": max_length,
        "ratio_fp32_vs_st_fp32": ratio_rows["fp32"]["median"],
        "ratio_bf16_vs_st_bf16": ratio_rows["bf16"]["median"],
        "ratio_fp32_vs_st_defaults": ratio_rows["fp32_vs_st_defaults"]["median"],
        "cosine_fp32_vs_st_fp32": cosine(ADAPTLAB_FP32),
        "cosine_bf16_vs_st_fp32": cosine(ADAPTLAB_BF16),
        "st_fp32_reference": st_reference,
        "ratios": ratio_rows,
        "rows": rows,
        "method": {
            "timed": "only the embed/encode call (tokenisation + forward + pooling + normalisation); model "
                     f"construction and one warm-up call per arm ({WARMUP_TEXTS} texts) are outside every timer, for both sides",
            "order": "all arms once per repeat, order reversed on every other repeat (A B ... B A ...)",
            "ratio": "adaptlab texts/s / sentence-transformers texts/s within each repeat; median and spread of those",
            "cosine": "minimum over texts of the cosine to the 'sentence-transformers fp32' vectors",
            "adaptlab_cache": "off (cache=False): every repeat recomputes",
        },
        "st_compile_seconds": compile_seconds,
        "anchor_settings_not_run": not_run,
        "cpu_native_bf16": native,
        "adaptlab_auto_precision": Runtime("cpu", "auto").resolved_precision(),
    }
    if args.out is not None:  # save() writes <RESULTS>/<name>.json
        _common.RESULTS = args.out.resolve().parent
        _common.save(args.out.stem, payload)
    else:
        _common.save(NAME, payload)


if __name__ == "__main__":
    main()
