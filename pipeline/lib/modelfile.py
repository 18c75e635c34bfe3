"""An Ollama Modelfile for a run's GGUF: FROM, a Go TEMPLATE that renders tools and calls as training did, the stop
token, the decoding parameters.

Ollama renders prompts with Go's text/template, not Jinja, from values it builds itself: `.System` (every system
message), `.Messages` (role, content, tool calls with `.Function.Name` and `.Function.Arguments`), `.Tools` (with
`.Function.Parameters.Properties` as a map). It finds the tool-call tag (here `<tool_call>`) as the first text
inside the template's `{{ if .ToolCalls }}`, and parses what the model writes after it. Two limits of Go templates
on those values: maps are visited in key order (a tool's parameters and a call's arguments come out sorted by
name, where training wrote them in schema order), and `json` writes compact JSON (nested argument values lose
the spaces after `:` and `,`). Where those orders agree the prompt is the same text as training's
(tests/test_gguf.py renders both and compares them with Go's own text/template).

The TEMPLATE exists for tooltune's Hermes template (`chat_template: hermes`). A model's own template (Llama 3.1,
Qwen2.5, Mistral) has no Go twin here: its Modelfile says so, and `llama-server --jinja` renders the GGUF's
embedded template exactly.
"""

from __future__ import annotations

import json

HERMES_GO = """<|im_start|>system
{{ if .System }}{{ .System }}{{ else }}You are a helpful assistant.{{ end }}
{{- if .Tools }}

# Tools
To call tools reply only with <tool_call>{"name": <tool>, "arguments": <json object>}</tool_call>, one block per call. \
Ask for a missing required argument; answer in text when no tool fits.
{{ range .Tools }}{{ $f := .Function }}- {{ $f.Name }}(
{{- $first := true }}
{{- range $name, $p := $f.Parameters.Properties }}
{{- if not $first }}, {{ end }}{{ $first = false }}{{ $name }}
{{- $req := false }}{{ range $f.Parameters.Required }}{{ if eq . $name }}{{ $req = true }}{{ end }}{{ end }}
{{- if not $req }}?{{ end }}: {{ if $p.Enum }}{{ range $i, $e := $p.Enum }}{{ if $i }}|{{ end }}{{ $e }}{{ end }}\
{{ else }}{{ or $p.Type "any" }}{{ end }}
{{- end }})
{{- if $f.Description }}: {{ $f.Description }}{{ end }}
{{ end }}
{{- end }}<|END|>
{{ $prev := "" }}
{{- range .Messages }}
{{- if and (eq $prev "tool") (ne .Role "tool") }}<|END|>
{{ end }}
{{- if eq .Role "assistant" }}<|im_start|>assistant
{{ .Content }}
{{- if .Content }}{{ with .ToolCalls }}
{{ end }}{{ end }}
{{- if .ToolCalls }}<tool_call>{"name": "{{ (index .ToolCalls 0).Function.Name }}", "arguments": {{ "{" }}
{{- $first := true }}{{ range $k, $v := (index .ToolCalls 0).Function.Arguments }}{{ if not $first }}, {{ end }}\
{{ $first = false }}{{ json $k }}: {{ json $v }}{{ end }}{{ "}" }}}</tool_call>
{{- range slice .ToolCalls 1 }}
<tool_call>{"name": "{{ .Function.Name }}", "arguments": {{ "{" }}
{{- $first := true }}{{ range $k, $v := .Function.Arguments }}{{ if not $first }}, {{ end }}\
{{ $first = false }}{{ json $k }}: {{ json $v }}{{ end }}{{ "}" }}}</tool_call>
{{- end }}
{{- end }}<|END|>
{{ else if eq .Role "tool" }}{{ if eq $prev "tool" }}
{{ else }}<|im_start|>user
{{ end }}<tool_response>{{ .Content }}</tool_response>
{{- else if ne .Role "system" }}<|im_start|>{{ .Role }}
{{ .Content }}<|END|>
{{ end }}
{{- $prev = .Role }}
{{- end }}
{{- if eq $prev "tool" }}<|END|>
{{ end }}
{{- if ne $prev "assistant" }}<|im_start|>assistant
{{ end }}"""


def hermes_end(template: str, eos_token: str | None) -> str | None:
    """The end of turn tooltune's Hermes template writes: <|im_end|>, or the tokenizer's eos token where the
    template was rewritten for a tokenizer without <|im_end|> (templates.hermes_for); None for other templates."""
    if "# Tools\\nTo call tools reply only with <tool_call>" not in template:
        return None
    return "<|im_end|>" if "'<|im_end|>\\n'" in template else eos_token


def go_template(template: str, eos_token: str | None) -> str | None:
    end = hermes_end(template, eos_token)
    return None if end is None else HERMES_GO.replace("<|END|>", end)


def modelfile(gguf_file: str, template: str, *, eos_token: str | None, decoding: dict, num_ctx: int, recipe: str) -> str:
    """The Modelfile text for `ollama create NAME -f <this file>` in the folder that holds `gguf_file`."""
    go = go_template(template, eos_token)
    stop = hermes_end(template, eos_token) or eos_token
    lines = [f"# Ollama Modelfile for {gguf_file} (tooltune recipe {recipe}).",
             f"#   ollama create {gguf_file.removesuffix('.gguf')} -f {gguf_file.removesuffix('.gguf')}.Modelfile",
             f"FROM ./{gguf_file}"]
    if go is None:
        lines += ["# This run trained with the model's own chat template, which has no Go twin in tooltune: Ollama's",
                  "# built-in template for the family would drop the tools. Serve the GGUF with `llama-server --jinja`,",
                  "# which renders the template embedded in the GGUF exactly as training did, or write a TEMPLATE here."]
    else:
        lines += ['TEMPLATE """' + go + '"""']
    if stop:
        lines.append(f"PARAMETER stop {json.dumps(stop)}")
    params = {"temperature": 0} if not decoding.get("do_sample") else {
        k: v for k, v in decoding.items() if k in ("temperature", "top_p", "top_k")}
    if "repetition_penalty" in decoding:
        params["repeat_penalty"] = decoding["repetition_penalty"]
    lines += [f"PARAMETER {k} {v}" for k, v in params.items()]
    lines.append(f"PARAMETER num_ctx {num_ctx}")
    return "\n".join(lines) + "\n"
