"""Stage 2, count: tokenize exactly what training will see, and say what the run will cost.

    python -m pipeline.stages.s2_count --recipe smollm2-135m-tools
    make count RECIPE=llama31-8b-tools ARGS="tokenizer=/path/to/its/tokenizer"

Every validated conversation is rendered with the run's chat template and tools and tokenized with
the model's real tokenizer; the loss mask (assistant turns + their end-of-turn token) is derived
from the template and audited. Writes runs/<RUN>/count/:
  train.tokens.jsonl   ids + loss mask per conversation (the train stage reuses it: no second tokenization)
  report.json, report.md   totals, percentiles, histogram, trained vs context tokens, tool-schema share,
                       over-length examples, steps and time estimate, and the len/4 "estimation trap" table
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import defaultdict
from pathlib import Path

from rich.progress import Progress
from rich.table import Table

from pipeline.lib.artifacts import load_split
from pipeline.lib.common import (StageError, console, fingerprint, rel, stage_main, up_to_date, write_json_atomic, write_jsonl_atomic, write_sidecar,
                                 write_text_atomic)
from pipeline.lib.conversations import toolset_key
from pipeline.lib import windows
from pipeline.lib.encode import encode_many, where
from pipeline.lib.models import load_tokenizer
from pipeline.lib.parse import vllm_parser
from pipeline.lib.planner import tokens_per_second
from pipeline.lib.recipe import Recipe
from pipeline.lib.template import Chat

STAGE = "count"
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
CODE_HINT = re.compile(r"(```|\bdef |\bclass |\bimport |\breturn\b|;\s*$|\{\s*$|=>|\bfunction\b)", re.M)


def content_type(text: str) -> str:
    """Classify a piece of text for the len/4 table: cjk, json, code or prose."""
    if len(CJK.findall(text)) > 0.2 * max(1, len(text)):
        return "cjk"
    s = text.strip()
    if s[:1] in "{[":
        try:
            json.loads(s)
            return "json"
        except ValueError:
            pass
    if CODE_HINT.search(text):
        return "code"
    return "prose"


def pieces(messages: list[dict], tools: list[dict]):
    """The texts of a conversation by content type (what the len/4 rule is usually applied to)."""
    for m in messages:
        if isinstance(m.get("content"), str) and m["content"]:
            yield m["content"]
        for c in m.get("tool_calls") or []:
            yield json.dumps(c["function"]["arguments"], ensure_ascii=False)
    if tools:
        yield json.dumps(tools, ensure_ascii=False)


# Where an added token can hide in text: anything in angle or square brackets without spaces (<|eot_id|>,
# <tool_call>, </s>, [INST]), looked for at every position so one candidate cannot swallow the next.
SHAPE = r"<[^<>\s]{1,64}>|\[[^\[\]\s]{1,64}\]"
BRACKETED = re.compile(f"(?=({SHAPE}))")


def added_token_hits(tokenizer, records: list[dict], limit: int = 5) -> tuple[int, list[str]]:
    """Conversations whose text holds one of this tokenizer's added tokens (its control tokens, and any text it
    matches as one token before splitting). Tokenized with the rest, it would become that control token, so a
    user's text could end a turn or forge one. Returns (how many, the first `limit` as `file:line: 'token'`)."""
    added = {t.content for t in tokenizer.added_tokens_decoder.values() if t.content.strip()}
    shaped = {t for t in added if re.fullmatch(SHAPE, t)}
    other = added - shaped
    n, shown = 0, []
    for r in records:
        text = json.dumps([r["messages"], r["tools"]], ensure_ascii=False)
        hit = next((m.group(1) for m in BRACKETED.finditer(text) if m.group(1) in shaped), None)
        if hit is None:
            hit = next((t for t in other if t in text), None)
        if hit is not None:
            n += 1
            if len(shown) < limit:
                shown.append(f"{where(r)}: {hit!r}")
    return n, shown


def prefix_group(r: dict) -> str:
    """Conversations with the same system prompt and tool list (the validator's toolset key): their prompts share
    a prefix, and training batches them together (pipeline.lib.packing)."""
    m0 = r["messages"][0] if r["messages"] else {}
    system = m0.get("content") if m0.get("role") == "system" else None
    return toolset_key([system, r["toolset"]])


def percentile(sorted_vals: list[int], q: float) -> int:
    if not sorted_vals:
        return 0
    k = min(len(sorted_vals) - 1, max(0, math.ceil(q / 100 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def model_params(recipe: Recipe) -> float:
    """Parameter count for the time estimate: from a local config.json when there is one, else the name."""
    try:
        from pipeline.lib.planner import params_from_config, read_config

        cfg = read_config(recipe)
        if cfg:
            return float(params_from_config(cfg)["total"])
    except (ImportError, StageError, KeyError, TypeError):
        pass
    m = re.search(r"(\d+(?:\.\d+)?)\s*([bBmM])\b|(\d+(?:\.\d+)?)([bBmM])[-_]", recipe.model)
    if m:
        num = float(m.group(1) or m.group(3))
        unit = (m.group(2) or m.group(4)).lower()
        return num * (1e9 if unit == "b" else 1e6)
    return 8e9


def run(recipe: Recipe, run_dir: Path) -> Path:
    started = time.time()
    out = run_dir / "count"
    vdir = run_dir / "validate"
    inputs = [vdir / "train.jsonl", vdir / "toolsets.json"]
    if not (vdir / "stage.json").is_file():
        raise StageError(f"run the validate stage first: {rel(vdir / 'stage.json')} is missing (make validate).")
    # Only what changes the token ids and masks: the time estimate follows train.* and gpu without re-counting.
    fp = fingerprint(recipe, STAGE, inputs, ("model", "tokenizer", "chat_template", "tool_format", "max_seq_length",
                                               "data.too_long", "trust_remote_code"))
    if up_to_date(out, fp):
        console.print(f"[dim]{STAGE}: inputs unchanged, nothing to do[/]")
        write_schedule(recipe, out)
        return out / "report.json"

    tokenizer = load_tokenizer(recipe)
    chat = Chat.for_recipe(recipe, tokenizer)
    train = load_split(run_dir, "train")
    n_forged, forged = added_token_hits(tokenizer, train)
    if n_forged:
        raise StageError(f"{n_forged} training conversation(s) hold text that this tokenizer reads as one of its control "
                         f"tokens, so the text would end or forge a turn: {'; '.join(forged)}. Remove or reword it in "
                         "the data (validate rejects the common markers with code special_token; these are this "
                         "tokenizer's own).")
    console.print(f"count: template format [bold]{chat.fmt}[/] (vLLM parser {vllm_parser(chat.fmt)}), "
                  f"end of turn {chat.eot!r}, {len(train)} training conversations")

    rows, over, long_records = [], [], []
    naive = defaultdict(lambda: [0, 0])  # type -> [chars, tokens]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("rendering and tokenizing", total=len(train))
        for r, _, _, ids, mask in encode_many(chat, train, on_rendered=lambda n: progress.advance(task, n)):
            n = len(ids)
            if n > recipe.max_seq_length:
                over.append({"id": r["id"], "where": where(r), "tokens": n, "cut_tokens": n - recipe.max_seq_length,
                             "trained_tokens": int(mask.sum()), "cut_trained_tokens": int(mask[recipe.max_seq_length:].sum())})
                long_records.append(r)
                continue
            rows.append({"id": r["id"], "group": prefix_group(r), "input_ids": ids.tolist(), "mask": mask.tolist()})
    too_long, misfits = too_long_rows(recipe, chat, long_records, over, rows)
    lengths = [len(r["input_ids"]) for r in rows]
    trained_total = sum(sum(r["mask"]) for r in rows)

    # The len/4 trap: count each kind of text on its own and compare with chars/4.
    sample = train[: min(len(train), 2000)]
    for r in sample:
        for text in pieces(r["messages"], r["tools"]):
            kind = content_type(text)
            naive[kind][0] += len(text)
            naive[kind][1] += len(tokenizer(text, add_special_tokens=False)["input_ids"])
    trap = {}
    for kind, (chars, toks) in sorted(naive.items()):
        est = chars / 4
        trap[kind] = {"chars": chars, "tokens": toks, "tokens_per_char": round(toks / max(1, chars), 4),
                      "len_div_4": round(est), "naive_error": round((est - toks) / max(1, toks), 4)}
    total_chars = sum(v[0] for v in naive.values())
    total_toks = sum(v[1] for v in naive.values())
    trap["all"] = {"chars": total_chars, "tokens": total_toks,
                   "tokens_per_char": round(total_toks / max(1, total_chars), 4),
                   "len_div_4": round(total_chars / 4), "naive_error": round((total_chars / 4 - total_toks) / max(1, total_toks), 4)}

    # Tokens spent on the tool schemas: the same system prompt rendered with and without the tools.
    schema_tokens = 0
    for r in train[:50]:
        sys_msgs = [m for m in r["messages"][:1] if m["role"] == "system"] + [{"role": "user", "content": "x"}]
        with_tools = len(tokenizer(chat.render(sys_msgs, r["tools"]), add_special_tokens=False)["input_ids"])
        without = len(tokenizer(chat.render(sys_msgs, None), add_special_tokens=False)["input_ids"])
        schema_tokens += with_tools - without
    schema_per_example = schema_tokens / max(1, min(50, len(train)))

    total = sum(lengths)
    s = sorted(lengths) or [0]
    hist_edges = [0, 256, 512, 1024, 2048, 4096, 8192, 1 << 30]
    hist = {f"{a}-{b if b < 1 << 30 else 'inf'}": sum(1 for n in lengths if a <= n < b) for a, b in zip(hist_edges, hist_edges[1:])}
    report = {
        "examples": len(rows),
        "conversations": len(train),
        "template_format": chat.fmt,
        "vllm_tool_parser": vllm_parser(chat.fmt),
        "total_tokens": total,
        "per_example": {"min": s[0], "p50": percentile(s, 50), "p90": percentile(s, 90), "p99": percentile(s, 99),
                        "max": s[-1], "mean": round(total / len(s), 1)},
        "histogram": hist,
        "trained_tokens": trained_total,
        "context_tokens": total - trained_total,
        "trained_share": round(trained_total / max(1, total), 4),
        "tool_schema_tokens_per_example": round(schema_per_example, 1),
        "tool_schema_share": round(schema_per_example * len(train) / max(1, total), 4),
        "max_seq_length": recipe.max_seq_length,
        "over_max_seq_length": over,
        "too_long": too_long,
        "tokens_per_epoch": total,
        "len_div_4": trap,
    }
    write_jsonl_atomic(out / "train.tokens.jsonl", rows)
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", markdown(recipe, report))
    show(recipe, report, schedule(recipe, report))
    # Before the sidecar: a failed count must not look done to the next run (or to Make).
    if over and recipe.data.too_long == "fail":
        raise StageError(
            f"{len(over)} conversation(s) are longer than max_seq_length={recipe.max_seq_length} (data.too_long=fail; "
            f"first: {over[0]['where']}, {over[0]['tokens']} tokens). Set data.too_long=split to train them in windows, "
            f"data.too_long=drop to leave them out, or raise max_seq_length; the list is in {rel(out / 'report.json')}."
        )
    if misfits:
        raise StageError(no_fit_message(recipe, too_long, rel(out / "report.json")))
    if not rows:
        raise StageError(f"no training conversation is left: all {len(train)} are longer than "
                         f"max_seq_length={recipe.max_seq_length} (data.too_long=drop). Raise max_seq_length or set "
                         "data.too_long=split.")
    write_sidecar(out, STAGE, recipe, inputs, fp, started,
                  {"total_tokens": total, "trained_tokens": trained_total, "examples": len(rows),
                   "conversations": len(train), "audit": "passed"})
    write_schedule(recipe, out)
    return out / "report.json"


def too_long_rows(recipe: Recipe, chat: Chat, records: list[dict], over: list[dict], rows: list[dict]) -> tuple[dict, list]:
    """What `data.too_long` does with the conversations longer than max_seq_length: `split` appends their
    windows to `rows` (pipeline.lib.windows), `drop` leaves them out, `fail` stops after the report.
    Returns the report's `too_long` section and the conversations that fit in no window."""
    policy, max_len = recipe.data.too_long, recipe.max_seq_length
    info = {"policy": policy, "conversations": len(over), "split": 0, "windows": 0, "dropped": 0,
            "dropped_tokens": 0, "dropped_trained_tokens": 0, "history_tokens_left_out": 0}
    if policy != "split":
        if policy == "drop":
            info.update(dropped=len(over), dropped_tokens=sum(o["tokens"] for o in over),
                        dropped_trained_tokens=sum(o["trained_tokens"] for o in over))
        return info, []
    tok = chat.tokenizer
    misfits, pieces_ = [], []
    for r in records:
        msgs = r["messages"]

        def length(ms: list[dict], tools=r["tools"]) -> int:
            return len(tok(chat.render(ms, tools), add_special_tokens=False)["input_ids"])

        try:
            spans = windows.split(msgs, length, max_len)
        except windows.NoFit as e:
            probe = msgs[:windows.head_len(msgs)] + [{"role": "user", "content": "x"}]
            bare = [len(tok(chat.render(m, None), add_special_tokens=False)["input_ids"]) for m in (probe, probe[-1:])]
            misfits.append({"where": where(r), "turn": e.turn, "needs": e.tokens, "system_tokens": bare[0] - bare[1],
                            "tool_tokens": length(probe) - bare[0]})
            continue
        info["split"] += 1
        head = windows.head_len(msgs)
        for k, (start, end, first) in enumerate(spans):
            part = msgs[:head] + msgs[start:end + 1]
            pieces_.append({**r, "id": f"{r['id']}#{k + 1}", "messages": part, "train_from": head + first - start,
                            "window": {"of": r["id"], "start": start, "end": end}})
            if start > head:
                info["history_tokens_left_out"] += length(msgs[:first + 1]) - length(msgs[:head] + msgs[start:first + 1])
    if misfits:
        info["no_fit"] = misfits
        info["needs_max_seq_length"] = need = max(m["needs"] for m in misfits)
        info["suggested_max_seq_length"] = 1 << (need - 1).bit_length()  # the next power of two
        return info, misfits
    for r, _, _, ids, mask in encode_many(chat, pieces_):
        if len(ids) > max_len:  # the window rule measured this very rendering: never
            raise StageError(f"{where(r)}: window {r['id']} is {len(ids)} tokens, over max_seq_length={max_len}.")
        rows.append({"id": r["id"], "group": prefix_group(r), "input_ids": ids.tolist(), "mask": mask.tolist()})
    info["windows"] = len(pieces_)
    return info, []


def no_fit_message(recipe: Recipe, too_long: dict, report: str) -> str:
    """The stop before training when a turn fits in no window: the max_seq_length the data needs, and its cost."""
    need = too_long["needs_max_seq_length"]
    first = too_long["no_fit"][0]
    suggest = too_long["suggested_max_seq_length"]
    cost = ""
    try:
        from dataclasses import replace

        from pipeline.lib.planner import plan

        p = plan(replace(recipe, max_seq_length=suggest))
        if p.get("known"):
            row = p["gpus"].get(recipe.gpu) or {}
            cost = (f" At max_seq_length={suggest} the plan estimates {p['total_gib']:.1f} GiB peak"
                    + (f" on {recipe.gpu} ({'fits' if row.get('fits') else 'does not fit'})" if row else "") + ".")
    except (StageError, KeyError, TypeError, ValueError):
        pass
    return (f"{len(too_long['no_fit'])} conversation(s) have an assistant turn that fits in no window of "
            f"max_seq_length={recipe.max_seq_length}, even with only the system prompt and the tools before it "
            f"(first: {first['where']}, the assistant turn at message {first['turn']} needs {first['needs']} tokens; its system prompt is "
            f"{first['system_tokens']} tokens, its tools {first['tool_tokens']}). The data needs "
            f"max_seq_length >= {need}: set max_seq_length={suggest}.{cost} `make plan RECIPE={recipe.name} ARGS=\"max_seq_length={suggest}\"` "
            f"shows the memory and time; the list is in {report}.")


def schedule(recipe: Recipe, report: dict) -> dict:
    """Optimizer steps and the time estimate for these counted tokens under the recipe's train.* and gpu."""
    per_step = recipe.train.batch_size * recipe.train.grad_accum
    steps_per_epoch = math.ceil(report["examples"] / per_step)
    total_steps = recipe.train.max_steps if recipe.train.max_steps > 0 else math.ceil(steps_per_epoch * recipe.train.epochs)
    n_params = model_params(recipe)
    tps = tokens_per_second(recipe.gpu, n_params, recipe.load_in_4bit)
    return {"conversations_per_step": per_step, "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
            "rows": report["examples"], "unseen_rows": max(0, report["examples"] - total_steps * per_step),
            "epochs": recipe.train.epochs, "gpu": recipe.gpu, "model_params": n_params, "tokens_per_s": round(tps),
            "hours": round(report["tokens_per_epoch"] * recipe.train.epochs / tps / 3600, 3),
            "basis": "4N FLOPs/token at 35% MFU of dense bf16 peak (pipeline/lib/planner.py); unpacked tokens"}


def write_schedule(recipe: Recipe, out: Path) -> dict:
    """count/schedule.json, rewritten on every run of the stage (counting or not): it follows train.* and gpu."""
    sched = schedule(recipe, json.loads((out / "report.json").read_text()))
    write_json_atomic(out / "schedule.json", sched)
    console.print(f"count: {sched['conversations_per_step']} conversations/step, {sched['steps_per_epoch']} steps/epoch, "
                  f"{sched['total_steps']} steps; ~{sched['hours'] * 60:.1f} min on {sched['gpu']} at "
                  f"{sched['tokens_per_s']:,} tokens/s ({sched['model_params'] / 1e9:.2f}B params)")
    if sched["unseen_rows"]:
        console.print(f"[yellow]warning:[/] train.max_steps={recipe.train.max_steps} trains on "
                      f"{sched['total_steps'] * sched['conversations_per_step']:,} rows: {sched['unseen_rows']:,} of the "
                      f"{sched['rows']:,} counted are never trained on. Raise train.max_steps (to {sched['steps_per_epoch']} "
                      "for one pass), or set train.max_steps=-1 and train.epochs.")
    return sched


def markdown(recipe: Recipe, r: dict) -> str:
    pe = r["per_example"]
    lines = [
        f"# Token budget: {recipe.name}", "",
        f"{r['examples']} training conversations, template format `{r['template_format']}`, "
        f"tokenizer of `{recipe.tokenizer or recipe.model}`.", "",
        "| figure | value |", "|---|---|",
        f"| total tokens | {r['total_tokens']:,} |",
        f"| per example min / p50 / p90 / p99 / max | {pe['min']} / {pe['p50']} / {pe['p90']} / {pe['p99']} / {pe['max']} |",
        f"| trained (assistant) tokens | {r['trained_tokens']:,} ({r['trained_share']:.1%}) |",
        f"| context tokens | {r['context_tokens']:,} |",
        f"| tool schemas | {r['tool_schema_tokens_per_example']} tokens per example ({r['tool_schema_share']:.1%} of all) |",
        f"| over max_seq_length={r['max_seq_length']} | {len(r['over_max_seq_length'])} ({windows.describe(r['too_long'])}) |",
        "", "## Length histogram", "", "| tokens | examples |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in r["histogram"].items()],
        "", "## The len/4 estimation trap", "",
        "| text | chars | tokens | tokens/char | len/4 | len/4 error |", "|---|---|---|---|---|---|",
        *[f"| {k} | {v['chars']:,} | {v['tokens']:,} | {v['tokens_per_char']} | {v['len_div_4']:,} | {v['naive_error']:+.1%} |"
          for k, v in r["len_div_4"].items()],
    ]
    if r["over_max_seq_length"]:
        lines += ["", "## Over max_seq_length", "", "| where | tokens | cut | cut trained |", "|---|---|---|---|"]
        lines += [f"| {o['where']} | {o['tokens']} | {o['cut_tokens']} | {o['cut_trained_tokens']} |" for o in r["over_max_seq_length"]]
    return "\n".join(lines) + "\n"


def show(recipe: Recipe, r: dict, sched: dict) -> None:
    pe = r["per_example"]
    t = Table(title=f"token budget ({r['examples']} conversations)", show_header=False)
    t.add_row("total tokens", f"{r['total_tokens']:,}")
    t.add_row("per example min/p50/p90/p99/max", f"{pe['min']}/{pe['p50']}/{pe['p90']}/{pe['p99']}/{pe['max']}")
    t.add_row("trained / context tokens", f"{r['trained_tokens']:,} / {r['context_tokens']:,} ({r['trained_share']:.1%} trained)")
    t.add_row("tool schemas", f"{r['tool_schema_tokens_per_example']} tokens/example ({r['tool_schema_share']:.1%})")
    t.add_row(f"over max_seq_length={r['max_seq_length']}", f"{len(r['over_max_seq_length'])} ({windows.describe(r['too_long'])})")
    console.print(t)
    t = Table(title="the len/4 trap: measured tokens per character")
    for c in ("text", "chars", "tokens", "tokens/char", "len/4", "len/4 error"):
        t.add_column(c, justify="right" if c != "text" else "left")
    for k, v in r["len_div_4"].items():
        t.add_row(k, f"{v['chars']:,}", f"{v['tokens']:,}", f"{v['tokens_per_char']:.3f}", f"{v['len_div_4']:,}", f"{v['naive_error']:+.1%}")
    console.print(t)


def main(argv=None):
    stage_main(STAGE, run, argv)


if __name__ == "__main__":
    main()
