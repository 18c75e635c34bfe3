"""Stage 5, export: a merged 16-bit model that vLLM serves as is, plus the adapter alone.

    python -m pipeline.stages.s5_export --recipe smollm2-135m-tools

Merges by applying the adapter to a 16-bit base (never into 4-bit weights), then proves the merge:
the reloaded merged model must choose, greedily, what the adapter model generates on
`export.check_prompts` eval prompts (its replies teacher-forced, which parts where a second generation
would), or the export fails. Writes runs/<RUN>/:
  export/    model.safetensors, config, tokenizer, chat_template.jinja (byte-identical to the one
             training rendered with), generation_config.json (eos = end of turn), README.md model card
  export/adapter/   the LoRA adapter alone (vLLM --enable-lora, LoRAX)
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from pipeline.lib.backends import cuda_available, resolve_backend
from pipeline.lib.common import StageError, atomic_dir, console, fingerprint, rel, sha256_file, stage_main, up_to_date, write_sidecar
from pipeline.lib.generation import decoding_note, forced_greedy, greedy, prompt_ids
from pipeline.lib.models import base_16bit, check_16bit, load_for_inference, load_tokenizer, resolve
from pipeline.lib.parse import vllm_parser
from pipeline.lib.recipe import Recipe
from pipeline.lib.template import Chat

STAGE = "export"
# Two greedy runs may part ways where the adapter model's best two logits are nearly tied: rounding
# the merged weights to 16 bits (bf16 keeps 8 significant bits) moves logits. If no logit moves by
# more than e, a token can only flip where the adapter model's top-2 gap was under 2e. So a
# difference is a failure unless that gap was under max(NEAR_TIE, 2e), e measured on one prompt
# (teacher-forced, adapter vs merged). The check computes in fp32 where that fits (`check_dtype`),
# where e is a few hundredths to 0.2; in bf16 compute it was 0.35-0.4 on a random model (H200).
NEAR_TIE = 0.25


def eval_prompts(run_dir: Path, chat: Chat, n: int) -> list[str]:
    from pipeline.lib.artifacts import load_split

    prompts = []
    for r in load_split(run_dir, "eval"):
        for i, m in enumerate(r["messages"]):
            if m["role"] == "assistant":
                prompts.append(chat.prompt(r["messages"][:i], r["tools"]))
                if len(prompts) >= n:
                    return prompts
    return prompts


def compare(reference: list[list[int]], produced: list[list[int]], gaps: list[list[float]], noise: float = 0.0) -> dict:
    """Identical generations, near-ties (first difference where the adapter's top-2 gap was under
    max(NEAR_TIE, 2 * noise), `noise` the largest logit difference measured between the two models), mismatches."""
    threshold = max(NEAR_TIE, 2 * noise)
    identical, ties, mismatches = 0, [], []
    for i, (a, b) in enumerate(zip(reference, produced)):
        if a == b:
            identical += 1
            continue
        j = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        gap = gaps[i][j] if j < len(gaps[i]) else float("inf")
        (ties if gap < threshold else mismatches).append(i)
    return {"prompts": len(reference), "identical": identical, "near_ties": ties, "mismatches": mismatches,
            "near_tie_threshold": threshold}


def probe_logits(model, ids: list[int], start: int):
    """Teacher-forced logits (fp32, on the CPU) that predict ids[start:]. Only those positions go
    through the LM head: a 2,000-token Llama prompt would otherwise add 1 GB of logits."""
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids], device=model.device), logits_to_keep=len(ids) - start + 1)
    return out.logits[0, :-1].float().cpu()


def check_dtype(model, export_dtype, on_gpu: bool):
    """The merge check's compute dtype: fp32 on weights rounded to the 16-bit export dtype, so both
    sides see the served precision and only the merge differs. In bf16 compute the two models part
    by up to 2.4 logits even on a correct merge (a random 140M Llama, measured), too loud to judge
    a merge by; so fp32 is used on a GPU too wherever the upcast fits in its free memory (2 GiB
    spare for generation), and the export dtype only where it does not (an 8B model on 24 GB)."""
    import torch

    if not on_gpu:
        return torch.float32
    n = sum(p.numel() for p in model.parameters())
    extra = n * (4 - torch.finfo(export_dtype).bits // 8)
    return torch.float32 if torch.cuda.mem_get_info()[0] > extra + 2 * 2**30 else export_dtype


def set_stop_tokens(model, eot_id: int, pad_id: int | None) -> None:
    """Stop at the end of turn the model was trained to write, first, then at the base's own stop
    tokens (Llama 3.1: <|eom_id|>, <|end_of_text|>). The base's sampling defaults are kept: they are
    valid only with do_sample (transformers refuses to save temperature 0.6 without it), and they are
    what vLLM reads from this file for requests that set nothing."""
    gen = model.generation_config
    old = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    gen.eos_token_id = [eot_id] + [t for t in old if t is not None and t != eot_id]
    if pad_id is not None:
        gen.pad_token_id = pad_id
    model.config.eos_token_id = eot_id
    gen.validate(strict=True)


def merge_checked(base_path: str, adapter_dir: Path, save_to: Path, tok, prompts: list[str], eot_id: int,
                  export_dtype, max_new_tokens: int, batch_size: int, trust_remote_code: bool = False):
    """Apply the adapter to the 16-bit base, generate the greedy reference, merge, save the merged
    model to `save_to`, reload it and check its greedy choices on the reference (teacher-forced). Returns (check, reference, produced): check is
    `compare`'s verdict plus the logit error the merge made and the adapter's own effect (one prompt
    and its reference continuation, teacher-forced), the compute dtype, and `problem`, a sentence
    when the merge is not faithful (else None)."""
    import torch
    from peft import PeftModel

    on_gpu = cuda_available()
    device_map = {"": 0} if on_gpu else None
    base = load_for_inference(base_path, export_dtype, device_map, trust_remote_code)
    work_dtype = check_dtype(base, export_dtype, on_gpu)
    model = PeftModel.from_pretrained(base.to(work_dtype), adapter_dir)
    model.eval()
    gaps: list[list[float]] = []
    reference = greedy(model, tok, prompts, eot_id, max_new_tokens, batch_size, label="adapter", margins=gaps)
    first = tok(prompts[0], add_special_tokens=False)["input_ids"] if prompts else []
    start = len(first)
    probe = first + reference[0] if prompts and reference[0] else []
    if probe:
        adapter_logits = probe_logits(model, probe, start)
        with model.disable_adapter():
            base_logits = probe_logits(model, probe, start)
    merged = model.merge_and_unload().to(export_dtype)
    set_stop_tokens(merged, eot_id, tok.pad_token_id)
    merged.save_pretrained(save_to, safe_serialization=True, max_shard_size="5GB")
    del merged, model, base
    reloaded = load_for_inference(str(save_to), work_dtype, device_map, trust_remote_code)
    # The reloaded model is checked on the adapter's replies teacher-forced, one pass per prompt: the same verdict
    # as generating again (the first token where greedy choices part), at the cost of a prefill.
    produced = forced_greedy(reloaded, prompt_ids(tok, prompts), reference)
    noise = effect = 0.0
    if probe:
        noise = (probe_logits(reloaded, probe, start) - adapter_logits).abs().max().item()
        effect = (adapter_logits - base_logits).abs().max().item()
    check = {**compare(reference, produced, gaps, noise), "merge_logit_error": noise, "adapter_logit_effect": effect,
             "check_dtype": str(work_dtype).replace("torch.", ""), "problem": None}
    # fp32 compute leaves the merge's rounding alone (measured: 0.02-0.18 against effects of 2.9-5.4);
    # 16-bit compute adds its own noise, so there only a merge as loud as the adapter fails.
    if effect > 0 and noise >= effect * (0.5 if work_dtype == torch.float32 else 1.0):
        check["problem"] = (f"the merge moved the logits by up to {noise:.3g} where the adapter itself moves them by "
                            f"{effect:.3g} (one eval prompt, teacher-forced): the merged model does not carry the "
                            "adapter faithfully.")
    elif check["mismatches"]:
        i = check["mismatches"][0]
        check["problem"] = (f"the merged model does not generate what the adapter model does on {len(check['mismatches'])} "
                            f"of {len(prompts)} eval prompts (first: prompt {i}: adapter {tok.decode(reference[i])!r} vs "
                            f"merged {tok.decode(produced[i])!r}).")
    return check, reference, produced


def run(recipe: Recipe, run_dir: Path) -> Path:
    started = time.time()
    adapter_in = run_dir / "sft" / "adapter"
    out = run_dir / "export"
    if not (adapter_in / "adapter_config.json").is_file():
        raise StageError(f"run the sft stage first: {rel(adapter_in)} is missing (make sft).")
    inputs = [adapter_in / "adapter_model.safetensors", adapter_in / "adapter_config.json"]
    fp = fingerprint(recipe, STAGE, inputs, ("model", "tokenizer", "chat_template", "tool_format", "export.dtype",
                                               "export.check_prompts", "export.check_new_tokens", "export.base",
                                               "trust_remote_code"))  # not export.gguf: `make gguf` reads it
    if up_to_date(out, fp) and any(out.glob("*.safetensors")):
        console.print(f"[dim]{STAGE}: adapter unchanged, nothing to do[/]")
        return out

    import torch

    backend, _ = resolve_backend(recipe)
    tok = load_tokenizer(recipe)
    chat = Chat.for_recipe(recipe, tok)
    prompts = eval_prompts(run_dir, chat, recipe.export.check_prompts)
    console.print(f"export: loading the 16-bit base {base_16bit(recipe)} and applying the adapter")
    base_path = resolve(base_16bit(recipe), "model")
    check_16bit(base_path, base_16bit(recipe))
    with atomic_dir(out) as tmp:
        check, _, _ = merge_checked(base_path, adapter_in, tmp, tok, prompts,
                                    tok.convert_tokens_to_ids(chat.eot), getattr(torch, recipe.export.dtype),
                                    recipe.export.check_new_tokens, recipe.eval.batch_size, recipe.trust_remote_code)
        if check["problem"]:
            raise StageError(f"{check['problem']} The export was not written; report this with the recipe.")
        tok.chat_template = chat.template
        tok.save_pretrained(tmp)
        (tmp / "chat_template.jinja").write_text(chat.template)  # byte-identical to what training rendered
        tpl_hash = sha256_file(tmp / "chat_template.jinja")
        from transformers import GenerationConfig

        decoding = decoding_note(GenerationConfig.from_pretrained(tmp))
        info = {"recipe": recipe.name, "base_16bit": base_16bit(recipe), "tool_format": chat.fmt,
                "vllm_tool_parser": vllm_parser(chat.fmt), "decoding": decoding,
                "chat_template_sha256": tpl_hash, "merge_check": check}
        (tmp / "tooltune.json").write_text(json.dumps(info, indent=2))
        # README.md, the model card, is written by the run report once this folder is in place, and again
        # after each later stage (the eval table): see pipeline/report.py.
        # The adapter alone, beside the merged model (vLLM --enable-lora, LoRAX): a subfolder no loader reads.
        (tmp / "adapter").mkdir()
        for f in adapter_in.iterdir():
            shutil.copy2(f, tmp / "adapter" / f.name)
        (tmp / "adapter" / "chat_template.jinja").write_text(chat.template)
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
