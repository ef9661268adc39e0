# videomar-harness: reproducible install and entry points. `make help` lists the targets.
#
# Knobs (make VAR=value):
#   PYTHON       interpreter that creates the venv (>= 3.11)             default: python3
#   FIND_LINKS   local wheel dirs/URLs for uv (space-separated)          default: $PIP_FIND_LINKS,
#                else `pip config get global.find-links`, else none (plain PyPI)
#   TORCH_INDEX  PyTorch wheel index used for torch only, as a URL or a short variant name:
#                cu128 -> https://download.pytorch.org/whl/cu128; also cu126, cpu, ...
#                default: none (torch comes from FIND_LINKS or PyPI like everything else)
#   EXTRAS       extras installed by `make venv`                         default: sweeps,tables,dev
# uv ignores pip.conf, which is why find-links is passed explicitly. Changing TORCH_INDEX or
# FIND_LINKS for an existing venv: `make distclean venv TORCH_INDEX=...`.

SHELL       := /bin/bash
PYTHON      ?= python3
VENV        ?= .venv
EXTRAS      ?= sweeps,tables,dev
FIND_LINKS  ?=
TORCH_INDEX ?=
UV_VERSION  := 0.13.9

PY    := $(VENV)/bin/python
UV    := $(VENV)/bin/uv
comma := ,
# One stamp per extras set: a second `make venv` is a no-op until pyproject.toml or the lock changes.
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
TORCH_REQ := $(shell sed -n 's/^ *"\(torch==[^"]*\)".*/\1/p' pyproject.toml)
TORCH_INDEX_URL := $(if $(findstring ://,$(TORCH_INDEX)),$(TORCH_INDEX),https://download.pytorch.org/whl/$(TORCH_INDEX))
# requirements.lock pins every transitive version; it is applied as constraints when present.
LOCK        := $(wildcard requirements.lock)
LOCK_EXTRAS := sweeps tables metrics encoders dev notebooks profile

.DEFAULT_GOAL := venv
.PHONY: help venv demo test test-fast test-notebooks tables bench gpu-check profile sun notebooks lab lock clean distclean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

venv: $(STAMP)  ## create .venv and install core + sweeps,tables,dev (idempotent)

$(UV):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "error: $(PYTHON) is older than 3.11; run e.g. make venv PYTHON=python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv==$(UV_VERSION)

# The find-links list is computed here, at make time, so nothing machine-specific is committed.
$(STAMP): pyproject.toml $(LOCK) | $(UV)
	@fl='$(FIND_LINKS)'; \
	[ -n "$$fl" ] || fl="$${PIP_FIND_LINKS:-$$($(PYTHON) -m pip config get global.find-links 2>/dev/null || true)}"; \
	args=""; for d in $$fl; do \
	  case "$$d" in *://*) args="$$args --find-links $$d";; \
	  *) if [ -d "$$d" ]; then args="$$args --find-links $$d"; else echo "note: skipping missing find-links dir $$d"; fi;; \
	  esac; done; \
	set -ex; \
	if [ -n "$(TORCH_INDEX)" ]; then \
	  $(UV) pip install -p $(PY) --compile-bytecode --index-url $(TORCH_INDEX_URL) '$(TORCH_REQ)'; fi; \
	$(UV) pip install -p $(PY) $$args --compile-bytecode $(addprefix -c ,$(LOCK)) -e '.[$(EXTRAS)]'
	@$(PY) -c 'import torch; print("torch", torch.__version__, "| cuda available:", torch.cuda.is_available())'
	@touch $@

# The two arms run side by side (submitit's local launcher, one process and one thread each).
demo: venv  ## train causal vs full attention (seed 0 of the attn table), then make tables
	$(PY) ablations/run.py -m ablation=attn seed=0 threads=1 hydra/launcher=submitit_local
	$(MAKE) tables

test: venv  ## run the whole test suite
	$(PY) -m pytest -q

test-fast: venv  ## tests without the `slow` marker
	$(PY) -m pytest -q -m 'not slow'

test-notebooks: venv  ## execute notebooks/results.ipynb headless
	$(PY) -m pytest -q --nbmake -p no:cacheprovider notebooks/results.ipynb

tables: venv  ## regenerate paper_tables/<table>.{md,tex,png} from paper_tables/runs.jsonl
	$(PY) bench/make_tables.py

bench: venv  ## KV-cache throughput, FLOPs/MFU, GPU-hour cost, profiler trace; rows -> results table
	$(PY) bench/kv_cache.py
	$(PY) bench/flops.py
	$(PY) bench/cost.py
	$(PY) bench/profiler.py

gpu-check: venv  ## on a CUDA machine: bf16 MFU, KV cache on GPU, DDP memory, head syncs (one JSON line; skips without CUDA)
	$(PY) bench/gpu_check.py

profile: venv  ## torch.profiler traces in runs/profile (open: .venv/bin/tensorboard --logdir runs/profile)
	$(MAKE) venv EXTRAS=$(EXTRAS),profile
	$(PY) bench/profiler.py --out runs/profile

sun: venv  ## SpeedUpNet CPU testbed: train + evaluate (35-75 min on 2 cores), writes paper_tables/sun.{md,tex}
	$(PY) bench/sun.py

notebooks: ## install jupyterlab into .venv (starts nothing; `make lab` starts it)
	$(MAKE) venv EXTRAS=$(EXTRAS),notebooks

lab: notebooks  ## start jupyter lab in notebooks/
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

lock: | $(UV)  ## re-resolve requirements.lock (all platforms, Python >= 3.11; no vbench)
	$(UV) pip compile -q pyproject.toml $(addprefix --extra ,$(LOCK_EXTRAS)) --universal \
	  --python-version 3.11 --no-annotate -o requirements.lock

clean:  ## remove caches and build debris (keeps .venv, runs and tables)
	find . -path ./$(VENV) -prune -o -type d \( -name __pycache__ -o -name .pytest_cache \
	  -o -name .ipynb_checkpoints \) -print -exec rm -rf {} +
	rm -rf *.egg-info build dist

distclean: clean  ## also remove .venv
	rm -rf $(VENV)
