# distillery: every stage is a `distillery` subcommand; these targets are shortcuts.
# Override the config or add key=value overrides:  make generate CONFIG=configs/x.yaml ARGS="teacher.concurrency=64"

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
CONFIG_generate ?= configs/generate.yaml
CONFIG_filter   ?= configs/filter.yaml
CONFIG_train    ?= configs/train.yaml
ARGS   ?=

.PHONY: install test test-slow lint format bench docs generate filter train eval demo clean

# Creates .venv and installs everything but the vllm extra. Torch is installed first and
# pinned so that pip resolves the local CPU wheel here and the CUDA build on a GPU machine,
# instead of pulling the newest release with several GB of CUDA packages.
# `make install EXTRAS=ray` (or EXTRAS=ray,harness) adds optional extras on top.
EXTRAS ?=
install: $(BIN)/distillery
ifneq ($(EXTRAS),)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
endif
$(BIN)/distillery: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[train,filter,dev]"
	touch $@

# `make test` leaves out the tests marked slow (subprocess, torchrun, kill -9, demo);
# `make test-slow` runs those; CI runs both.
test: install
	$(BIN)/python -m pytest -q -m "not slow"
test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@# mypy cannot follow the editable install's import hook: it reads a link tree laid out
	@# as the installed package (distillery/ = pipeline/ + training/ + eval/)
	rm -rf build/typecheck && mkdir -p build/typecheck/distillery
	ln -s $(CURDIR)/pipeline/* $(CURDIR)/training $(CURDIR)/eval build/typecheck/distillery/
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	@for f in bench/teacher_engine.py bench/similarity_filter.py bench/dedup.py bench/train_throughput.py bench/startup.py; do \
		echo "== $$f"; $(BIN)/python -u $$f || exit 1; done

# docs/config.md, the config reference of every stage, generated from the config models
docs: install
	$(BIN)/python -c "from distillery.config import write_config_reference; write_config_reference('docs/config.md')"

generate: install
	$(BIN)/distillery generate --config $(CONFIG_generate) $(ARGS)
filter: install
	$(BIN)/distillery filter --config $(CONFIG_filter) $(ARGS)
train: install
	$(BIN)/distillery train --config $(CONFIG_train) $(ARGS)
# make eval EVAL_MODEL=runs/main/train-lora/merged [IFEVAL=path/to/input_data.jsonl]  (default: hf:google/IFEval, downloaded once)
EVAL_MODEL ?= runs/main/train-lora/merged
EVAL_DATA  ?= runs/main/train-lora/eval_split.jsonl
EVAL_DIR   ?= runs/main/eval
IFEVAL     ?= hf:google/IFEval
eval: install
	$(BIN)/distillery eval loss --model $(EVAL_MODEL) --data $(EVAL_DATA) --output-dir $(EVAL_DIR)
	$(BIN)/distillery eval ifeval --inputs $(IFEVAL) --model hf:$(EVAL_MODEL) --output-dir $(EVAL_DIR)/ifeval
	$(BIN)/distillery eval report $(EVAL_DIR)
demo: install
	$(BIN)/distillery demo $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache runs/ build/ dist/ *.egg-info
