"""Stage 5, export: a merged 16-bit model that vLLM serves as is, plus the adapter alone.

    python -m pipeline.export --recipe smollm2-135m-tools

Merges by applying the adapter to a 16-bit base (never into 4-bit weights), then proves the merge:
the reloaded merged model must generate, greedily, what the adapter model generates on
`export.check_prompts` eval prompts, or the export fails. Writes runs/<RUN>/:
  merged/    model.safetensors, config, tokenizer, chat_template.jinja (byte-identical to the one
             training rendered with), generation_config.json (eos = end of turn), README.md model card
  adapter/   the LoRA adapter alone (vLLM --enable-lora, LoRAX)
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from pipeline.backends import cuda_available, resolve_backend
from pipeline.chat import Chat, vllm_parser
from pipeline.common import (StageError, atomic_dir, console, fingerprint, rel, scrub, sha256_file, stage_main,
                             up_to_date, write_sidecar)
from pipeline.generation import greedy
from pipeline.models import load_tokenizer, resolve
from pipeline.recipe import Recipe, data_hashes

STAGE = "export"
# Two greedy runs may part ways where the adapter model's best two logits are nearly tied: rounding
# the merged weights to 16 bits (bf16 keeps 8 significant bits) moves logits by a few hundredths.
# A difference is a failure unless the adapter model's top-2 gap at that token was under this.
NEAR_TIE = 0.25


def base_16bit(recipe: Recipe) -> str:
    """The 16-bit checkpoint to merge into: pre-quantized '-bnb-4bit' ids name their 16-bit twin."""
    name = recipe.model
    for suffix in ("-bnb-4bit", "-unsloth-bnb-4bit"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def eval_prompts(run_dir: Path, chat: Chat, n: int) -> list[str]:
    from pipeline.validate import load_split

    prompts = []
    for r in load_split(run_dir, "eval"):
        for i, m in enumerate(r["messages"]):
            if m["role"] == "assistant":
                prompts.append(chat.prompt(r["messages"][:i], r["tools"]))
                if len(prompts) >= n:
                    return prompts
    return prompts


def model_card(recipe: Recipe, chat: Chat, run_dir: Path, check: dict) -> str:
    report = run_dir / "eval" / "report.md"
    table = "Run `make eval` to add the evaluation table."
    if report.is_file():
        table = report.read_text().split("## Failures")[0]
    hashes = "\n".join(f"- `{k}`: `{v}`" for k, v in data_hashes(recipe).items())
    return f"""# {recipe.name} (merged 16-bit)

Fine-tuned with [tooltune](https://github.com/) recipe `{recipe.name}`: {recipe.description}

- Base model: `{recipe.model}` (merged into 16-bit `{base_16bit(recipe)}`)
- LoRA: r={recipe.lora_r}, alpha={recipe.lora_alpha}, rsLoRA={recipe.lora.use_rslora}, targets {', '.join(recipe.lora.target_modules)}{f" (top {recipe.lora.top_layers} blocks)" if recipe.lora.top_layers else ""}
- Chat template: `chat_template.jinja` (exactly the one used in training); tool-call format `{chat.fmt}`
- Merge check: {check['identical']}/{check['prompts']} greedy generations identical to the adapter model ({len(check['near_ties'])} part at a near-tie, {len(check['mismatches'])} mismatches)

## Serve

```
vllm serve <this folder> --enable-auto-tool-choice --tool-call-parser {vllm_parser(chat.fmt)} --chat-template <this folder>/chat_template.jinja
```

## Training data (sha256)

{hashes}

## Evaluation

{table}
"""


def compare(reference: list[list[int]], produced: list[list[int]], gaps: list[list[float]]) -> dict:
    """Identical generations, near-ties (first difference where the adapter's top-2 gap < NEAR_TIE), mismatches."""
    identical, ties, mismatches = 0, [], []
    for i, (a, b) in enumerate(zip(reference, produced)):
        if a == b:
            identical += 1
            continue
        j = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        gap = gaps[i][j] if j < len(gaps[i]) else float("inf")
        (ties if gap < NEAR_TIE else mismatches).append(i)
    return {"prompts": len(reference), "identical": identical, "near_ties": ties, "mismatches": mismatches,
            "near_tie_threshold": NEAR_TIE}


def run(recipe: Recipe, run_dir: Path) -> Path:
    started = time.time()
    adapter_in = run_dir / "train" / "adapter"
    out = run_dir / "merged"
    if not (adapter_in / "adapter_config.json").is_file():
        raise StageError(f"run the train stage first: {rel(adapter_in)} is missing (make train-stage).")
    inputs = [adapter_in / "adapter_model.safetensors", adapter_in / "adapter_config.json"]
    fp = fingerprint(recipe, STAGE, inputs, ("model", "tokenizer", "chat_template", "tool_format", "export",
                                               "trust_remote_code", "eval.max_new_tokens"))
    if up_to_date(out, fp) and any(out.glob("*.safetensors")):
        console.print(f"[dim]{STAGE}: adapter unchanged, nothing to do[/]")
        return out

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    backend, _ = resolve_backend(recipe)
    export_dtype = getattr(torch, recipe.export.dtype)
    tok = load_tokenizer(recipe)
    chat = Chat.for_recipe(recipe, tok)
    eot_id = tok.convert_tokens_to_ids(chat.eot)
    prompts = eval_prompts(run_dir, chat, recipe.export.check_prompts)
    on_gpu = cuda_available()
    # On a GPU everything runs in the 16-bit export dtype. On CPU the check runs in fp32 on weights
    # rounded to 16 bits, so both sides see the served precision and greedy decoding compares fairly.
    work_dtype = export_dtype if on_gpu else torch.float32
    device_map = {"": 0} if on_gpu else None

    console.print(f"export: loading the 16-bit base {base_16bit(recipe)} and applying the adapter")
    base = AutoModelForCausalLM.from_pretrained(resolve(base_16bit(recipe), "model"), dtype=export_dtype,
                                                use_safetensors=True, trust_remote_code=recipe.trust_remote_code,
                                                device_map=device_map)
    base = base.to(work_dtype)
    model = PeftModel.from_pretrained(base, adapter_in)
    model.eval()
    gaps: list[list[float]] = []
    reference = greedy(model, tok, prompts, eot_id, recipe.eval.max_new_tokens, recipe.eval.batch_size,
                       label="adapter", margins=gaps)
    merged = model.merge_and_unload()
    merged = merged.to(export_dtype)
    merged.generation_config.eos_token_id = eot_id
    merged.generation_config.pad_token_id = tok.pad_token_id
    merged.generation_config.do_sample = False
    merged.config.eos_token_id = eot_id

    with atomic_dir(out) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True, max_shard_size="5GB")
        tok.chat_template = chat.template
        tok.save_pretrained(tmp)
        (tmp / "chat_template.jinja").write_text(chat.template)  # byte-identical to what training rendered
        del merged, model, base
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=work_dtype, use_safetensors=True,
                                                        device_map=device_map)
        reloaded.eval()
        produced = greedy(reloaded, tok, prompts, eot_id, recipe.eval.max_new_tokens, recipe.eval.batch_size, label="merged")
        check = compare(reference, produced, gaps)
        if check["mismatches"]:
            i = check["mismatches"][0]
            raise StageError(
                f"the merged model does not generate what the adapter model does on {len(check['mismatches'])} of "
                f"{len(prompts)} eval prompts (first: prompt {i}: adapter {tok.decode(reference[i])!r} vs merged "
                f"{tok.decode(produced[i])!r}). The export was not written; report this with the recipe."
            )
        (tmp / "README.md").write_text(scrub(model_card(recipe, chat, run_dir, check)))
        (tmp / "tooltune.json").write_text(json.dumps(
            {"recipe": recipe.name, "tool_format": chat.fmt, "vllm_tool_parser": vllm_parser(chat.fmt),
             "chat_template_sha256": None, "merge_check": check}, indent=2))
    tpl_hash = sha256_file(out / "chat_template.jinja")
    meta = json.loads((out / "tooltune.json").read_text())
    meta["chat_template_sha256"] = tpl_hash
    (out / "tooltune.json").write_text(json.dumps(meta, indent=2))

    with atomic_dir(run_dir / "adapter") as tmp:
        for f in adapter_in.iterdir():
            shutil.copy2(f, tmp / f.name)
        (tmp / "chat_template.jinja").write_text(chat.template)
    console.print(f"export: merged {recipe.export.dtype} model in {rel(out)}; merge check "
                  f"{check['identical']}/{check['prompts']} identical, {len(check['near_ties'])} near-ties; serve with "
                  f"`vllm serve {rel(out)} --enable-auto-tool-choice --tool-call-parser {vllm_parser(chat.fmt)}`")
    write_sidecar(out, STAGE, recipe, inputs, fp, started,
                  {"merge_check": check, "chat_template_sha256": tpl_hash, "dtype": recipe.export.dtype,
                   "backend_trained": backend})
    return out


def main(argv=None):
    stage_main(STAGE, run, argv)


if __name__ == "__main__":
    main()
