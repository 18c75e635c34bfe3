"""The model card (export/README.md): its Hub header, the eval's figures, limitations, serving and the recipe."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.lib import bfcl, scoring
from pipeline.lib.recipe import ROOT, scrub
from pipeline.lib.scoring import METRIC_NAMES, pct

ARTICLE = '"Fine-Tune a 7B Model for $1,500 (Not $50,000)"'
# The hub's id and licence of the base models the recipes use (the model card's `base_model` and `license`).
BUILTIN_HUB = {"builtin:smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
LICENSES = (("smollm2", "apache-2.0"), ("llama-3.1", "llama3.1"), ("llama-3-", "llama3"), ("llama-2", "llama2"),
            ("qwen2.5-7b", "apache-2.0"), ("qwen2.5-3b", "other"), ("mistral-7b", "apache-2.0"), ("phi-3.5", "mit"))


def reproduces(recipe_name: str) -> str:
    """The recipe file's own "Reproduces:" paragraph (its header comment), as one line."""
    path = ROOT / "recipes" / f"{recipe_name}.yaml"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    out, inside = [], False
    for line in lines:
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("Reproduces:"):
            inside, text = True, text[len("Reproduces:"):].strip()
        elif inside and (not text or re.match(r"^[A-Z][a-z]+( [a-z]+)?:", text)):
            break
        if inside:
            out.append(text)
    text = " ".join(out)
    return text + (f" (The article: {ARTICLE}.)" if "the article" in text else "")


def base_model_id(recipe: dict) -> str | None:
    """The hub id of the 16-bit model the adapter was merged into, or None for a local folder."""
    from pipeline.lib.models import sixteen_bit_id

    name = (recipe.get("export") or {}).get("base") or sixteen_bit_id(recipe["model"])
    name = BUILTIN_HUB.get(name, name)
    if name.startswith(("/", ".", "~")) or name.count("/") != 1 or Path(name).exists():
        return None
    return name


def license_of(model: str | None) -> str:
    low = (model or "").lower()
    return next((lic for key, lic in LICENSES if key in low), "other")


def md_eval_table(ev: dict) -> list[str]:
    return scoring.markdown_table(scoring.EVAL_HEADER, scoring.eval_rows(ev))


def card_header(d: dict) -> str:
    import yaml

    r = d["recipe"] or {}
    base = base_model_id(r)
    tags = ["tooltune", "tool-calling", "function-calling", "lora", "sft", "trl"]
    if (d.get("load") or {}).get("backend") == "unsloth":
        tags.append("unsloth")
    if r.get("load_in_4bit"):
        tags.append("qlora")
    meta: dict = {}
    if base:
        meta["base_model"] = base
    meta.update({"license": license_of(base or r.get("model")), "library_name": "transformers",
                 "pipeline_tag": "text-generation", "tags": tags})
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def model_card(d: dict) -> str:
    """The export's README.md from what the run holds now: before the eval it says how to add the eval table."""
    from pipeline.lib.models import base_16bit_of

    r = d["recipe"] or {}
    info = d.get("export") or {}
    ev = d.get("evaluate")
    lora, train = r.get("lora") or {}, r.get("train") or {}
    check = info.get("merge_check") or {}
    parser = info.get("vllm_tool_parser", "hermes")
    targets = ", ".join(lora.get("target_modules") or []) + (f" (top {lora['top_layers']} blocks)" if lora.get("top_layers") else "")
    lines = [card_header(d), f"# {r.get('name', d['run'])} (merged 16-bit)", "",
             f"A tool-calling fine-tune made with tooltune's recipe `{r.get('name')}`: {r.get('description', '')}", ""]
    rep = reproduces(r.get("name", ""))
    if rep:
        lines += [f"Reproduces: {rep}", ""]
    lines += ["## Evaluation", ""]
    if ev:
        lines += [f"{ev['turns']} assistant turns from {ev['conversations']} held-out conversations of the training data's "
                  f"own tools, base vs this model, decoded greedily (engine: {ev.get('engine', 'hf')}). The targets are those "
                  f"of the article {ARTICLE}.", ""]
        lines += md_eval_table(ev) + [""]
        f = ev.get("forgetting")
        if f:
            lines += ["A fixed sample of the Berkeley Function Calling Leaderboard (other domains' functions): tool selection "
                      "(the expected functions called, or none for irrelevance) and BFCL's AST checker (arguments too):", "",
                      *bfcl.sample_table(f)]
            lines.append("")
    else:
        lines += ["Not evaluated yet: `make evaluate` adds the table here.", ""]
    b = d.get("bfcl")
    if b:
        lines += ["BFCL single-turn categories (`make bfcl`):", "", "| model | non-live AST | live | irrelevance |", "|---|---|---|---|"]
        for who in ("base", "tuned"):
            if b.get(who):
                lines.append(f"| {who} | " + " | ".join(pct(b[who]["summary"].get(k)) for k in ("non_live_ast", "live", "irrelevance")) + " |")
        lines.append("")
    lines += ["## Limitations seen in the evaluation", ""]
    lines += limitations(d) or ["- None recorded yet (no evaluation)."]
    lines += ["", "## Serve", "",
              "vLLM's OpenAI-compatible server, with the parser this model's calls are written for:", "", "```",
              f"vllm serve <this folder> --enable-auto-tool-choice --tool-call-parser {parser} "
              "--chat-template <this folder>/chat_template.jinja", "```", ""]
    if d.get("gguf"):
        q = next((g for g in d["gguf"] if "q4_k_m" in g), d["gguf"][0])
        lines += ["llama.cpp and Ollama, with the GGUF files made from this folder (`make gguf`): "
                  + ", ".join(f"`{g}`" for g in d["gguf"]), "", "```",
                  f"llama-server -m runs/{d['run']}/gguf/{q} --jinja --port 8000",
                  *(f"ollama create {d['run']} -f runs/{d['run']}/gguf/{m}" for m in d.get("modelfiles", [])
                    if m.startswith(q.removesuffix(".gguf"))), "```", ""]
    else:
        lines += ["llama.cpp and Ollama: `make gguf` writes GGUF files and Ollama Modelfiles from this folder.", ""]
    if info.get("decoding"):
        lines += [f"Decoding: {info['decoding']}", ""]
    lines += ["## Recipe", "",
              f"- Base model: `{r.get('model')}` (merged into 16-bit `{base_16bit_of(r)}`)",
              f"- LoRA: r={lora.get('r')}, alpha={lora.get('alpha')}, dropout={lora.get('dropout')}, "
              f"rsLoRA={lora.get('use_rslora')}, targets {targets}",
              f"- Training: {train.get('epochs')} epoch(s), max steps {train.get('max_steps')}, batch {train.get('batch_size')} "
              f"x {train.get('grad_accum')}, lr {train.get('lr')} {train.get('scheduler')}, max_seq_length {r.get('max_seq_length')}, "
              f"4-bit base {r.get('load_in_4bit')}",
              f"- Chat template: `chat_template.jinja` (exactly the one used in training); tool-call format "
              f"`{info.get('tool_format', '?')}`"]
    if check:
        lines.append(f"- Merge check: {check.get('identical')}/{check.get('prompts')} greedy generations identical to the "
                     f"adapter model ({len(check.get('near_ties', []))} parted at a near-tie, "
                     f"{len(check.get('mismatches', []))} mismatches)")
    sft = d.get("sft")
    if sft:
        lines.append(f"- Trained: {sft.get('steps')} steps on {sft.get('backend')}, final loss {sft.get('final_loss', 0):.4f}, "
                     f"{sft.get('train_seconds')} s")
    lines += ["", "## Training data", ""]
    v = d.get("validate")
    if v:
        lines.append(f"- {v.get('accepted')} conversations accepted, {v.get('rejected')} rejected; {v.get('train')} trained on, "
                     f"{v.get('eval')} held out, {v.get('eval_source', 'data.eval')}")
        if v.get("unused_valid"):
            lines.append(f"- {v['unused_valid']} valid conversations not used: the recipe's caps (data.max_train, data.eval_max)")
    c = d.get("count")
    if c:
        lines.append(f"- {c.get('tokens_per_epoch', 0):,} tokens per epoch ({pct(c.get('trained_share'))} of them assistant "
                     "tokens, the only ones trained)")
    for k, h in ((d["sidecars"].get("validate") or {}).get("inputs") or {}).items():
        lines.append(f"- `{Path(k).name}`: sha256 `{h}`")
    return scrub("\n".join(lines) + "\n")


def limitations(d: dict) -> list[str]:
    ev = d.get("evaluate")
    if not ev:
        return []
    out = []
    for k, target in ev["targets"].items():
        v = ev["tuned"].get(k)
        if v is not None and v < target:
            out.append(f"- {METRIC_NAMES[k]} {pct(v)} is below the target {target:.0%}.")
    for k, what, n, tot in d["failure_groups"][:5]:
        out.append(f"- {k} turns: {n} of {tot} wrong: {what}.")
    f = ev.get("forgetting")
    if f and f.get("base"):
        for c, v in f["tuned"]["categories"].items():
            base = f["base"]["categories"].get(c, {})
            for key, what in (("selection", "tool selection"), ("accuracy", "AST accuracy")):
                if base.get(key) is not None and v.get(key) is not None and v[key] < base[key]:
                    out.append(f"- BFCL {c} {what}: {pct(v[key])}, below the base's {pct(base[key])}: it forgot some of "
                               "what the base did on other domains' tools.")
    if ev["tuned"].get("parse_failures"):
        out.append(f"- {pct(ev['tuned']['parse_failures'])} of replies held a call that could not be parsed.")
    return out
