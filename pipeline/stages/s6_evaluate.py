"""Stage 6, evaluate: base model vs tuned (merged) model on the held-out eval split.

    python -m pipeline.stages.s6_evaluate --recipe smollm2-135m-tools
    make evaluate ARGS="data.eval=OTHER.jsonl"      # score any canonical file without retraining

For every assistant turn of the eval conversations, prompt with the conversation before it (the
run's template, batched greedy generation), parse the reply with the run's tool-call parser, and
score: tool selection (right tool names), arguments (equal after JSON canonicalization, or one of the
acceptable forms a reference call lists in `acceptable`, as BFCL's possible answers do),
schema-valid calls, refusals (no call where the reference answers the user in text: no tool fits, or
a required argument is missing), answers after a tool result (text, not another call, where the
reference summarizes the result), parallel calls (exact set), parse failures. The tuned model is the
merged export, as served. Writes runs/<RUN>/evaluate/report.json, report.md (table, the article's
targets as pass/fail, failure examples) and predictions.jsonl (every turn, base and tuned).

Replies of a model that did not change (the base, when only training settings changed) are taken from the
replies cache (.cache/replies/, inference.replies_key) and the report says so; any change to the weights,
the eval turns, the template, the tools, the decoding, the generation code, the libraries or the decode path
generates them again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.table import Table

from pipeline.lib import bfcl
from pipeline.lib.artifacts import gguf_files
from pipeline.lib.common import (StageError, console, fingerprint, read_jsonl, rel, stage_main, up_to_date, write_json_atomic, write_jsonl_atomic,
                                 write_sidecar, write_text_atomic)
from pipeline.lib.inference import cached_replies, free_gpu_memory, generate, load_model, replies_key, scored_models, store_replies
from pipeline.lib.models import load_tokenizer
from pipeline.lib.parse import Parsed
from pipeline.lib.recipe import Recipe
from pipeline.lib.scoring import (EVAL_HEADER, METRICS, SLACK, TARGETS, by_turn, compare_engines, compare_turns, eval_items, eval_rows,
                                  fit_windows, from_message, markdown_table, pct, reply_budget, score, wire)
from pipeline.lib.template import Chat

STAGE = "evaluate"
FORGETTING = ("irrelevance", "simple_python", "multiple")  # BFCL categories of the forgetting check


# --- the vllm engine: vLLM's OpenAI server, its own parser ----------------------------------------------

def server_replies(url: str, model: str, items: list[dict], budget: int, parallel: int, label: str,
                   extra: dict | None = None) -> tuple[list[dict], float]:
    """Every turn with its tools through an OpenAI-compatible server (`parallel` requests at a time, so that it
    batches them), greedy; the reply messages in turn order and the seconds they took."""
    from concurrent.futures import ThreadPoolExecutor

    from rich.progress import Progress

    from pipeline.lib.servers import chat as post

    bodies = [{"model": model, "messages": wire(it["messages"]), "tools": it["tools"], "temperature": 0,
               "max_tokens": budget, **(extra or {})} for it in items]
    t0 = time.time()
    replies: list = [None] * len(items)
    with Progress(console=console, transient=True) as progress, ThreadPoolExecutor(parallel) as pool:
        task = progress.add_task(label, total=len(items))
        futures = {pool.submit(post, url, b): k for k, b in enumerate(bodies)}
        for f in futures:
            replies[futures[f]] = f.result()
            progress.advance(task)
    return replies, time.time() - t0


def vllm_replies(recipe: Recipe, run_dir: Path, chat: Chat, label: str, items: list[dict], budget: int,
                 log: Path) -> tuple[list[str], list[Parsed], dict]:
    """Start vLLM on the base (label `base`) or the merged export (`tuned`), send every turn, and stop it."""
    from pipeline.lib.servers import SERVE_PY, Server, free_port, server_args

    if not SERVE_PY.is_file():
        raise StageError("eval.engine=vllm needs the serving environment: run `make serve-venv` (or set eval.engine=hf).")
    port = free_port()
    cmd, names = server_args(recipe, run_dir, mode="base" if label == "base" else "merged", port=port, eager=True)
    model = names["base"] if label == "base" else names["tuned"]
    with Server(cmd, port, log) as server:
        console.print(f"evaluate: starting vLLM on the {label} model (log: {rel(log)})")
        started = server.wait_ready()
        parity = prompt_parity(server.url, model, chat, items[:20])
        replies, took = server_replies(server.url, model, items, budget, recipe.eval.batch_size, f"{label} via vLLM",
                                       {"skip_special_tokens": False})
    return served(replies, chat, took, started, parity)


def llamacpp_replies(recipe: Recipe, chat: Chat, gguf: Path, items: list[dict], budget: int,
                     log: Path) -> tuple[list[str], list[Parsed], dict]:
    """Start `llama-server --jinja` on one GGUF (its embedded chat template, its own tool-call parser), check the
    prompts it renders (/apply-template) against tooltune's, send every turn, and stop it."""
    from pipeline.lib.servers import Server, free_port, llama_server_command, post

    port = free_port()
    cmd = llama_server_command(gguf, port=port, ctx=recipe.max_seq_length, parallel=recipe.eval.batch_size)
    with Server(cmd, port, log, name="llama-server") as server:
        console.print(f"evaluate: starting llama-server on {gguf.name} (log: {rel(log)})")
        started = server.wait_ready()
        same = sum(post(server.url.removesuffix("/v1") + "/apply-template",
                        {"messages": wire(it["messages"]), "tools": it["tools"]}, timeout=120)["prompt"]
                   == chat.prompt(it["messages"], it["tools"]) for it in items[:20])
        replies, took = server_replies(server.url, gguf.stem, items, budget, recipe.eval.batch_size,
                                       f"{gguf.name} via llama-server")
    return served(replies, chat, took, started, {"checked": len(items[:20]), "identical": same})


def served(replies: list[dict], chat: Chat, took: float, started: float, parity: dict) -> tuple[list[str], list[Parsed], dict]:
    """A server's replies as the produced texts and parsed calls `score` takes, and the timing the report shows."""
    produced, parsed = zip(*(from_message(m, chat.fmt) for m in replies))
    return list(produced), list(parsed), {"seconds": round(took, 1), "turns_per_s": round(len(replies) / took, 3),
                                          "server_start_s": round(started, 1), "prompt_parity": parity}


def prompt_parity(url: str, model: str, chat: Chat, items: list[dict]) -> dict:
    """The prompt token ids vLLM renders for these turns (its /tokenize endpoint) against tooltune's own."""
    from pipeline.lib.servers import post

    same = 0
    for it in items:
        body = {"model": model, "messages": wire(it["messages"]), "tools": it["tools"], "add_generation_prompt": True,
                "add_special_tokens": False}
        theirs = post(url.removesuffix("/v1") + "/tokenize", body, timeout=120)["tokens"]
        ours = chat.tokenizer(chat.prompt(it["messages"], it["tools"]), add_special_tokens=False)["input_ids"]
        same += theirs == ours
    return {"checked": len(items), "identical": same}


def reused_outputs(preds: list[dict], label: str, items: list[dict]) -> list[str] | None:
    """The replies an earlier run generated for every one of these turns (same conversation, same reference), or None."""
    mine = by_turn(preds, label)
    found = [mine.get((it["id"], it["turn"])) for it in items]
    if any(p is None or p["expected"] != (it["reference"]["calls"] or it["reference"]["text"]) for p, it in zip(found, items)):
        return None
    return [p["produced"] for p in found]


def hf_replies(recipe: Recipe, tok, chat: Chat, label: str, path: str, name: str, prompts: list[str], budget: int,
               fitems: list[dict]) -> tuple[list[str], list[str], dict, dict]:
    """One model's replies to the eval turns and to the BFCL sample, by transformers: reused where the replies cache
    holds them under the same key (inference.replies_key), else generated and stored. The model is loaded only if
    something is to be generated. Returns the replies, the sample's replies, what was loaded, the timing."""
    fprompts = [chat.prompt(it["messages"], it["tools"]) for it in fitems]
    jobs = [("eval", prompts, budget)] + ([("BFCL sample", fprompts, recipe.eval.bfcl_max_new_tokens)] if fitems else [])
    keys = [replies_key(path, tok, chat, ps, recipe, n) for _, ps, n in jobs]
    got = [cached_replies(k, len(ps)) for (k, _), (_, ps, _) in zip(keys, jobs)]
    # the eval loads in 16 bits, never quantized (inference.load_kwargs); a loaded model below says so itself
    info: dict = {"model": name, "dtype": keys[0][1]["path"]["dtype"].replace("torch.", ""), "quantized": False}
    timing: dict = {}
    model = None
    for (what, ps, n), (key, parts), have in zip(jobs, keys, got):
        if have is not None:
            info.setdefault("replies_reused", {})[what] = key[:16]
            console.print(f"evaluate: {label} replies to the {len(ps)} {what} prompts reused (replies cache {key[:12]}: same "
                          "weights, prompts, template, decoding, generation code, libraries and decode path)")
            continue
        if model is None:
            model = load_model(path, recipe, name)
            info.update(dtype=str(model.dtype).replace("torch.", ""), quantized=getattr(model, "hf_quantizer", None) is not None)
        t0 = time.time()
        got[jobs.index((what, ps, n))] = replies = generate(model, tok, chat, ps, recipe, f"{label} {what}" if what != "eval" else label, n)
        took = time.time() - t0
        store_replies(key, parts, replies, took)
        if what == "eval":
            timing = {"seconds": round(took, 1), "turns_per_s": round(len(ps) / took, 3)}
    if model is not None:
        del model
        free_gpu_memory()
    if "eval" in info.get("replies_reused", {}):
        timing = {"seconds": 0.0, "reused": True}
    return got[0], (got[1] if fitems else []), info, timing



def run(recipe: Recipe, run_dir: Path) -> Path:
    started = time.time()
    out = run_dir / "evaluate"
    merged = run_dir / "export"
    if not (merged / "stage.json").is_file():
        raise StageError(f"run the export stage first: {rel(merged)} is missing or incomplete (make export).")
    vdir = run_dir / "validate"
    inputs = [vdir / "eval.jsonl", merged / "stage.json"]
    if recipe.eval.engine == "llamacpp":
        inputs.append(run_dir / "gguf" / "stage.json")
    fp = fingerprint(recipe, STAGE, inputs, ("model", "tokenizer", "chat_template", "tool_format", "max_seq_length", "eval.max_turns",
                                               "eval.batch_size", "eval.max_new_tokens", "eval.failures_shown", "eval.base",
                                               "eval.engine", "eval.gguf", "eval.forgetting", "eval.bfcl_max_new_tokens",
                                               "trust_remote_code"))
    if up_to_date(out, fp):
        console.print(f"[dim]{STAGE}: inputs unchanged, nothing to do[/]")
        return out / "report.json"

    from pipeline.lib.artifacts import load_split

    tok = load_tokenizer(recipe)
    chat = Chat.for_recipe(recipe, tok)
    records = load_split(run_dir, "eval")
    if not records:
        raise StageError("the eval split is empty: set data.eval or a larger data.eval_fraction.")
    items = eval_items(records, chat.fmt, recipe.eval.max_turns)
    fitted = fit_windows(chat, items, recipe.max_seq_length)
    if fitted["windowed"] or fitted["no_window"]:
        console.print(f"evaluate: {fitted['windowed']} turns longer than max_seq_length={recipe.max_seq_length} are scored "
                      "in the window training uses (system prompt, tools, the most recent history that fits)"
                      + (f"; {fitted['no_window']} fit in no window and are scored whole" if fitted["no_window"] else ""))
    prompts = [chat.prompt(it["messages"], it["tools"]) for it in items]  # the same for both models
    budget, budget_info = reply_budget(chat, items, recipe.eval.max_new_tokens)
    scored = len({it["id"] for it in items})
    console.print(f"evaluate: {len(items)} assistant turns from {scored} of the {len(records)} held-out conversations, parser {chat.fmt}, "
                  f"replies up to {budget} tokens (longest reference {budget_info['longest_reference']})")
    if budget_info["references_longer_than_budget"]:
        console.print(f"[yellow]evaluate: {budget_info['references_longer_than_budget']} reference replies are longer "
                      f"than eval.max_new_tokens={budget}: those turns cannot be scored right (0 sizes it to the data)[/]")

    engine = recipe.eval.engine
    other = "vllm" if engine == "hf" else "hf"
    other_preds = read_predictions(out, other)  # the other engine's verdicts on these turns, if it scored them
    ggufs = gguf_files(run_dir, recipe.eval.gguf, "eval.gguf") if engine == "llamacpp" else {}
    rows, failures, timing, loaded, preds, forgetting, sample_preds = {}, {}, {}, {}, [], {}, []
    # The forgetting check: a fixed BFCL sample (irrelevance, simple, multiple), other domains' tools, base vs tuned
    fitems = bfcl.items(FORGETTING, recipe.eval.forgetting) if recipe.eval.forgetting and engine == "hf" else []
    models = scored_models(recipe, run_dir, recipe.eval.base)
    models += [(f"gguf-{q}", str(path), rel(path)) for q, path in ggufs.items()]
    for label, path, name in models:
        by = engine
        if label.startswith("gguf-"):
            outputs, parsed, timing[label] = llamacpp_replies(recipe, chat, Path(path), items, budget,
                                                              run_dir / f".llamacpp-{label}.log")
            loaded[label] = {"model": str(name), "served_by": "llama-server"}
        elif engine == "llamacpp" and (outputs := reused_outputs(other_preds, label, items)) is not None:
            by, parsed = "hf", None  # the merged (and base) model's replies from the hf run on the same turns
            loaded[label] = {"model": str(name), "reused": f"predictions.{other}.jsonl"}
        elif engine == "llamacpp" and label == "base":
            continue  # no GGUF of the base: its row comes only from an earlier hf run
        elif engine == "vllm":
            outputs, parsed, timing[label] = vllm_replies(recipe, run_dir, chat, label, items, budget,
                                                          run_dir / f".vllm-{label}.log")
            loaded[label] = {"model": str(name), "served_by": "vLLM"}
        else:
            by = "hf"
            outputs, fpreds_replies, loaded[label], timing[label] = hf_replies(
                recipe, tok, chat, label, path, str(name), prompts, budget, fitems)
            parsed = None
            if fitems:
                forgetting[label], fpreds = bfcl.score(fitems, fpreds_replies, chat.fmt)
                forgetting[label]["failures"] = [x for x in fpreds if not x["ok"]][:3]
                sample_preds += [dict(model=label, **x) for x in fpreds]
        rows[label], failures[label], p = score(items, outputs, chat.fmt, parsed)
        preds += [dict(model=label, engine=by, **x) for x in p]

    report = {"turns": len(items), "conversations": scored, "held_out_conversations": len(records), "tool_format": chat.fmt, "engine": engine,
              "windows": {"max_seq_length": recipe.max_seq_length, **fitted},
              "reply_budget": budget_info,
              "models": loaded,
              "targets": TARGETS,
              "base": rows.get("base"), "tuned": rows["tuned"], "timing": timing,
              "pass": {k: (rows["tuned"][k] is not None and rows["tuned"][k] >= v) for k, v in TARGETS.items()},
              "failures": failures["tuned"][: recipe.eval.failures_shown]}
    if forgetting:
        report["forgetting"] = forgetting
    if ggufs:
        merged_turns = by_turn(preds, "tuned")
        report["gguf"] = {q: {"file": ggufs[q].name, "bytes": ggufs[q].stat().st_size, "metrics": rows[f"gguf-{q}"], "timing": timing[f"gguf-{q}"],
                              "against_merged": compare_turns([p for p in preds if p["model"] == f"gguf-{q}"], merged_turns),
                              "failures": failures[f"gguf-{q}"][: recipe.eval.failures_shown]} for q in ggufs}
    elif other_preds:
        report["engines"] = {"this": engine, "other": other, "turns": compare_engines(preds, other_preds)}
    if other_preds:
        write_jsonl_atomic(out / f"predictions.{other}.jsonl", other_preds)
    write_jsonl_atomic(out / f"predictions.{engine}.jsonl", preds)
    write_jsonl_atomic(out / "predictions.jsonl", preds)
    if sample_preds:
        write_jsonl_atomic(out / "bfcl_sample.jsonl", sample_preds)
    else:
        (out / "bfcl_sample.jsonl").unlink(missing_ok=True)  # an earlier run's sample is not this one's
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", markdown(recipe, report))
    show(report)
    write_sidecar(out, STAGE, recipe, inputs, fp, started, {k: rows["tuned"][k] for k in METRICS})
    return out / "report.json"


def read_predictions(out: Path, engine: str) -> list[dict]:
    """An earlier run's predictions by `engine` in this stage folder (an HF run before eval.engine had a choice
    wrote only predictions.jsonl, without an engine field)."""
    for name in (f"predictions.{engine}.jsonl", "predictions.jsonl"):
        path = out / name
        if path.is_file():
            rows = read_jsonl(path)
            if rows and rows[0].get("engine", "hf") == engine:
                return rows
    return []


def markdown(recipe: Recipe, r: dict) -> str:
    lines = [f"# Evaluation: {recipe.name}", "",
             f"{r['turns']} assistant turns from {r['conversations']} held-out conversations; parser `{r['tool_format']}`; "
             "tuned = the merged 16-bit export" + (f"; base = `{r['models']['base']['model']}` in 16 bits" if r.get("models", {}).get("base") else "")
             + ", both decoded greedily"
             + (" by vLLM's OpenAI server, calls parsed by its own parser." if r.get("engine") == "vllm"
                else " by transformers, calls parsed by tooltune's parser (vLLM's rules).")
             + (f" GGUF files scored by llama.cpp: {', '.join(r['gguf'])} (below)." if r.get("gguf") else ""), "",
             *markdown_table(EVAL_HEADER, eval_rows(r))]
    again = {label: m["replies_reused"] for label, m in r.get("models", {}).items() if m.get("replies_reused")}
    if again:
        lines += ["", "Replies reused, not generated again (the replies cache: same weights, prompts, template, decoding, "
                  "generation code, libraries and decode path): " + "; ".join(
                      f"{label} ({', '.join(what)})" for label, what in again.items()) + "."]
    lines += ["", "Each figure's 95% interval (Wilson) is in brackets: two figures whose intervals overlap may differ by "
              "chance alone."]
    t = r["tuned"]
    lines += ["", f"Turns with a reference call: {t['call_turns']} ({t['parallel_turns']} parallel); with a text "
              f"reply to the user (refusal or a question for a missing argument): {t['text_turns']}; with a text "
              f"answer after a tool result: {t.get('result_turns', 0)}. Every turn: predictions.jsonl.", ""]
    b = r.get("reply_budget")
    if b:
        lines += [f"Replies generated up to {b['max_new_tokens']} tokens ("
                  + ("set by eval.max_new_tokens" if b["configured"] else f"the longest reference reply plus {SLACK}")
                  + f"; longest reference reply {b['longest_reference']}; reference replies longer than the limit, "
                  f"which cannot be scored right: {b['references_longer_than_budget']}).", ""]
    e = r.get("engines")
    if e and e["turns"]:
        lines += [f"## {e['this']} against {e['other']}, turn by turn", "",
                  "| model | turns | same verdict | right here | right there |", "|---|---|---|---|---|"]
        for label, t in e["turns"].items():
            lines.append(f"| {label} | {t['turns']} | {t['same_verdict']} | {t['this_ok']} | {t['other_ok']} |")
        for label, t in e["turns"].items():
            for d in t["differ"]:
                lines.append(f"- {label} `{d['id']}` turn {d['turn']}: {e['this']} {'right' if d['this'] else 'wrong'} "
                             f"`{d['produced'][:150]}`; {e['other']} {'right' if d['other'] else 'wrong'} `{d['other_produced'][:150]}`")
        lines.append("")
    g = r.get("gguf")
    if g:
        lines += ["## GGUF through llama.cpp against the merged model, on the same turns", "",
                  "`llama-server --jinja` rendered each prompt with the chat template embedded in the GGUF and parsed the "
                  "calls with its own parser; the merged 16-bit model's replies are transformers' (the hf engine).", "",
                  "| metric | merged 16-bit | " + " | ".join(g) + " |", "|---|---|" + "---|" * len(g)]
        for k in METRICS:
            lines.append(f"| {k} | {pct(r['tuned'][k])} | " + " | ".join(pct(x["metrics"][k]) for x in g.values()) + " |")
        lines += ["", "| GGUF | size | same verdict as merged | right | right for merged | prompts identical | turns/s |",
                  "|---|---|---|---|---|---|---|"]
        for x in g.values():
            a, t = x["against_merged"], x["timing"]
            lines.append(f"| {x['file']} | {x['bytes'] / 1e6:.0f} MB | {a['same_verdict']}/{a['turns']} | {a['this_ok']} | "
                         f"{a['other_ok']} | {t['prompt_parity']['identical']}/{t['prompt_parity']['checked']} | "
                         f"{t['turns_per_s']} |")
        for q, x in g.items():
            for d in x["against_merged"]["differ"][: recipe.eval.failures_shown]:
                lines.append(f"- {q} `{d['id']}` turn {d['turn']}: {'right' if d['this'] else 'wrong'} `{d['produced'][:150]}`; "
                             f"merged {'right' if d['other'] else 'wrong'} `{d['other_produced'][:150]}`")
        lines.append("")
    f = r.get("forgetting")
    if f:
        lines += ["## Forgetting check: a BFCL sample", "",
                  "Questions of the Berkeley Function Calling Leaderboard with their own functions (not this agent's), "
                  "scored twice: tool selection (the expected functions are called, whatever the arguments; irrelevance: "
                  "no call) and BFCL's AST checker (every argument at an acceptable value). A tuned model below its base "
                  "here has learned to call tools it should not, or stopped reading the tool list it is given. "
                  "`make bfcl` runs every category.", "",
                  *bfcl.sample_table(f)]
        lines += [f"- tuned `{x['id']}` ({x['category']}): {x['why']}; produced `{x['produced'].strip()[:150]}`"
                  for x in f["tuned"]["failures"]]
        lines.append("")
    lines += ["## Failures (tuned)", ""]
    for f in r["failures"]:
        lines += [f"- `{f['id']}` turn {f['turn']} ({f['kind']}): expected `{json.dumps(f['expected'], ensure_ascii=False)}`",
                  f"  produced `{f['produced'][:300]}`" + (f" ({f['parse_error']})" if f["parse_error"] else "")]
    return "\n".join(lines) + "\n"


def show(r: dict) -> None:
    t = Table(title=f"tool-calling accuracy on {r['turns']} held-out turns")
    for c in EVAL_HEADER:
        t.add_column(c, justify="left" if c == "metric" else "right")
    for row in eval_rows(r):
        t.add_row(*row[:4], {"PASS": "[green]pass[/]", "FAIL": "[red]fail[/]"}.get(row[4], ""))
    console.print(t)


def main(argv=None):
    stage_main(STAGE, run, argv)


if __name__ == "__main__":
    main()
