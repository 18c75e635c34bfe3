"""The real vLLM: its tool parsers against tooltune's, and its OpenAI server on a model tooltune exported.

Both use the serving environment (.venv-serve, installed by `make test` and `make serve` through
scripts/install_serve.sh). The server test trains a tiny Llama (head size 64, as vLLM's CPU attention
needs) to answer with one tool call, takes it through validate .. export, serves the export with
`pipeline.commands.serve`'s own command line and asks through the `openai` client.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pipeline.lib import servers
from pipeline.lib.parse import parse
from pipeline.lib.recipe import ROOT

SERVE_PY = ROOT / ".venv-serve" / "bin" / "python"
pytestmark = pytest.mark.skipif(not (ROOT / ".venv-serve" / ".installed").is_file(),
                                reason="needs the serving environment (make serve-venv; make test installs it)")

A = {"order_id": "ORD-1", "amount": 12.5}
NESTED = {"filters": {"colors": ["red", "blue"], "size": {"min": 1, "max": 3}}, "limit": 2}
UNI = {"city": "Zürich", "note": "naïve café ✓ 東京"}


def hermes(name, args):
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}, ensure_ascii=False) + "\n</tool_call>"


def llama(name, args):
    return json.dumps({"name": name, "parameters": args}, ensure_ascii=False)


def mistral(calls):
    return "[TOOL_CALLS]" + json.dumps([{"name": n, "arguments": a} for n, a in calls], ensure_ascii=False)


CASES = {
    "hermes": {
        "plain text": "Your order has shipped.",
        "one call": hermes("refund", A),
        "two calls": hermes("refund", A) + "\n" + hermes("status", {"order_id": "ORD-2"}),
        "text before a call": "Let me check that.\n" + hermes("status", {"order_id": "ORD-2"}),
        "text after a call": hermes("refund", A) + "\nDone.",
        "broken JSON": '<tool_call>\n{"name": "refund", "arguments": {"order_id": "ORD-1",}}\n</tool_call>',
        "cut off mid-JSON": '<tool_call>\n{"name": "refund", "arguments": {"order_id": "OR',
        "cut off before the closing tag": "<tool_call>\n" + json.dumps({"name": "refund", "arguments": A}),
        "unicode": hermes("weather", UNI),
        "nested arguments": hermes("search", NESTED),
        "arguments as a JSON string": '<tool_call>\n{"name": "refund", "arguments": "{\\"order_id\\": \\"ORD-1\\"}"}\n</tool_call>',
        "no arguments key": '<tool_call>\n{"name": "ping"}\n</tool_call>',
        "name missing": '<tool_call>\n{"arguments": {}}\n</tool_call>',
        "empty tag": "<tool_call></tool_call>",
    },
    "llama3_json": {
        "plain text": "Your order has shipped.",
        "one call": llama("refund", A),
        "python tag": "<|python_tag|>" + llama("refund", A),
        "two calls": llama("refund", A) + "; " + llama("status", {"order_id": "ORD-2"}),
        "text before a call": "Let me check that. " + llama("status", {"order_id": "ORD-2"}),
        "broken JSON": '{"name": "refund", "parameters": {"order_id": "ORD-1",}}',
        "cut off mid-JSON": '{"name": "refund", "parameters": {"order_id": "OR',
        "unicode": llama("weather", UNI),
        "nested arguments": llama("search", NESTED),
        "arguments key": json.dumps({"name": "refund", "arguments": A}),
        "text with braces": "Use {curly} braces like this.",
        "name missing": '{"parameters": {}}',
    },
    "mistral": {
        "plain text": "Your order has shipped.",
        "one call": mistral([("refund", A)]),
        "two calls": mistral([("refund", A), ("status", {"order_id": "ORD-2"})]),
        "text before a call": "Let me check that." + mistral([("status", {"order_id": "ORD-2"})]),
        "broken JSON": '[TOOL_CALLS][{"name": "refund", "arguments": {"order_id": "ORD-1",}}]',
        "cut off mid-JSON": '[TOOL_CALLS][{"name": "refund", "arguments": {"order_id": "OR',
        "unicode": mistral([("weather", UNI)]),
        "nested arguments": mistral([("search", NESTED)]),
        "single object": "[TOOL_CALLS]" + json.dumps({"name": "refund", "arguments": A}),
        "arguments as a JSON string": '[TOOL_CALLS][{"name": "refund", "arguments": "{\\"order_id\\": \\"ORD-1\\"}"}]',
        "name missing": '[TOOL_CALLS][{"arguments": {}}]',
    },
}


def vllm_parse(jobs: list[dict]) -> list[list[dict]]:
    out = subprocess.run([str(SERVE_PY), str(ROOT / "scripts" / "vllm_parse.py")], input=json.dumps(jobs),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_tooltune_parses_every_output_as_vllm_does(smol_dir, fixtures_dir):
    """The same outputs through tooltune's parser and vLLM's own (hermes, llama3_json, mistral): the real
    eval replies of the default run (base and tuned) and the edge cases above. Same calls (names and the
    arguments a client reads), same content where a call was made."""
    real = [json.loads(x)["produced"] for x in (ROOT / "tests" / "data" / "hermes_eval_outputs.jsonl").read_text().splitlines()]
    tokenizers = {"hermes": smol_dir, "llama3_json": fixtures_dir / "tokenizers" / "llama3_1_instruct",
                  "mistral": fixtures_dir / "tokenizers" / "mistral_7b_instruct_v0_3"}
    jobs = [{"parser": fmt, "tokenizer": str(tokenizers[fmt]),
             "texts": list(cases.values()) + (real if fmt == "hermes" else [])} for fmt, cases in CASES.items()]
    disagree = []
    for job, results in zip(jobs, vllm_parse(jobs)):
        names = list(CASES[job["parser"]]) + [f"eval reply {k}" for k in range(len(real))]
        for name, text, v in zip(names, job["texts"], results):
            ours = parse(text, job["parser"])
            theirs = v["calls"] if v["called"] else []
            if ours.calls != theirs or (theirs and ours.text != (v["content"] or "").strip()):
                disagree.append((job["parser"], name, ours, v))
            if not theirs and any(t in text for t in ("<tool_call>", "[TOOL_CALLS]")):
                assert ours.error, (job["parser"], name)  # a failed call counts as a parse failure
    assert not disagree, disagree
    assert len(real) > 100


# --- the server ------------------------------------------------------------------------------------------

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
CALL = {"name": "get_weather", "arguments": {"city": "Paris"}}
QUESTIONS = ["What's the weather like?", "Is it raining?", "How warm is it outside?", "Do I need an umbrella?",
             "Weather today?", "Will it be sunny?", "Is it cold out?", "What's the forecast?", "Is it windy?",
             "Should I wear a coat?", "Any snow today?", "How hot is it?"]


def conversations() -> list[dict]:
    call = {"id": "c1", "type": "function", "function": CALL}
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": None, "tool_calls": [call]},
                          {"role": "tool", "tool_call_id": "c1", "content": '{"temp_c": 18}'},
                          {"role": "assistant", "content": "It is 18 °C in Paris."}], "tools": TOOLS} for q in QUESTIONS]


def caller_model(smol_dir: Path, out: Path) -> Path:
    """A tiny Llama (2 layers, hidden 128, 2 heads of 64) trained in full to answer every weather question with
    the one call: small enough to train here in seconds, shaped as vLLM's CPU attention needs."""
    import torch

    from bench.miniature import vllm_llama
    from pipeline.lib.recipe import load
    from pipeline.lib.template import Chat

    model, tok = vllm_llama(smol_dir)
    chat = Chat.for_recipe(load("smollm2-135m-tools"), tok)
    rows = []
    for conv in conversations():
        for k in (2, 4):  # the call after the question, and the answer after the result
            prompt = tok(chat.prompt(conv["messages"][:k - 1], TOOLS), add_special_tokens=False)["input_ids"]
            full = tok(chat.render(conv["messages"][:k], TOOLS), add_special_tokens=False)["input_ids"]
            assert full[:len(prompt)] == prompt
            rows.append((torch.tensor([full]), torch.tensor([[-100] * len(prompt) + full[len(prompt):]])))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(300):
        ids, labels = rows[step % len(rows)]
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


ASK = """
import json, sys
from openai import OpenAI
port, model = sys.argv[1], sys.argv[2]
tools = json.loads(sys.argv[3])
c = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "Is it sunny in Paris today?"}],
                              tools=tools, temperature=0, max_tokens=40)
m = r.choices[0].message
print(json.dumps({"content": m.content, "calls": [{"name": t.function.name, "arguments": json.loads(t.function.arguments)}
                                                   for t in m.tool_calls or []]}))
"""


def weather_run(smol_dir: Path, tmp_path: Path, monkeypatch, stages: tuple, extra: tuple[str, ...] = ()):
    """The tiny caller model trained on the weather conversations and taken through `stages` as the run `weather`
    (in tmp_path/runs): its recipe, run folder and the overrides every later stage must be given."""
    from pipeline.lib.recipe import load as load_recipe

    base = caller_model(smol_dir, tmp_path / "caller")
    data = tmp_path / "weather.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in conversations()))
    monkeypatch.setenv("TOOLTUNE_RUNS", str(tmp_path / "runs"))
    args = [f"model={base}", f"data.train={data}", "data.tools=null", "data.eval=null", "data.eval_fraction=0.2",
            "train.max_steps=4", "train.lr=1e-3", "train.batch_size=2", "export.check_prompts=2",
            "export.check_new_tokens=24", "export.dtype=bfloat16", "max_seq_length=1024", *extra]
    for module in stages:
        module.main(["--recipe", "smollm2-135m-tools", "--run", "weather", *args])
    return load_recipe("smollm2-135m-tools", args, run="weather"), tmp_path / "runs" / "weather", args


def ask(port: int, model: str) -> dict:
    """One chat request with `tools`, through the `openai` client (it lives in the serving environment)."""
    out = subprocess.run([str(SERVE_PY), "-c", ASK, str(port), model, json.dumps(TOOLS)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_vllm_serves_the_export_and_the_adapter_with_parsed_tool_calls(smol_dir, tmp_path, monkeypatch, capsys):
    from pipeline.commands import serve
    from pipeline.stages import s1_validate as validate
    from pipeline.stages import s2_count as count
    from pipeline.stages import s3_load as load
    from pipeline.stages import s4_sft as sft
    from pipeline.stages import s5_export as export
    recipe, run_dir, args = weather_run(smol_dir, tmp_path, monkeypatch, (validate, count, load, sft, export))

    for lora in (False, True):
        port = servers.free_port()
        cmd, names = serve.server_args(recipe, run_dir, mode="lora" if lora else "merged", port=port, eager=True)
        with servers.Server(cmd, port, tmp_path / f"vllm-{lora}.log") as server:
            took = server.wait_ready()
            reply = ask(port, names["tuned"])
            print(f"\nvLLM ({'base + LoRA adapter' if lora else 'merged export'}) ready in {took:.0f} s; reply {reply}")
            assert reply["calls"] == [CALL], reply  # parsed by vLLM's hermes parser, read by the openai client
            if lora:
                assert names["base"] == "base"
        assert server.proc.returncode is not None  # Ctrl-C stopped it

    # The evaluate stage both ways on the same turns: transformers here, then vLLM's server and its parser.
    from pipeline.stages import s6_evaluate as evaluate

    for engine in ("hf", "vllm"):
        evaluate.main(["--recipe", "smollm2-135m-tools", "--run", "weather", *args, "eval.base=false", f"eval.engine={engine}"])
    report = json.loads((run_dir / "evaluate" / "report.json").read_text())
    assert report["engine"] == "vllm" and report["tuned"]["tool_selection"] == 1.0, report["tuned"]
    parity = report["timing"]["tuned"]["prompt_parity"]
    assert parity["checked"] > 0 and parity["identical"] == parity["checked"], parity  # the same prompt tokens
    turns = report["engines"]["turns"]["tuned"]
    assert turns["turns"] == report["turns"] and turns["same_verdict"] == turns["turns"], turns
    assert "vllm against hf, turn by turn" in (run_dir / "evaluate" / "report.md").read_text()
