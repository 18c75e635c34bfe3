"""vLLM's own tool parsers on given model outputs: the reference tooltune's parser is checked against.

Runs in the serving environment (.venv-serve/bin/python), which has vLLM:

    echo '[{"parser": "hermes", "tokenizer": DIR, "texts": ["<tool_call>...", ...]}, ...]' | .venv-serve/bin/python scripts/vllm_parse.py

Prints one JSON list per job, one entry per text: {"called": bool, "calls": [{"name", "arguments"}], "content": str | null}
(arguments parsed from vLLM's JSON string; "arguments_text" keeps the string where it is not JSON).
"""

from __future__ import annotations

import json
import logging
import sys


def parse_all(job: dict) -> list[dict]:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.tokenizers import get_tokenizer
    from vllm.tool_parsers import ToolParserManager

    tokenizer = get_tokenizer(job["tokenizer"], tokenizer_mode=job.get("tokenizer_mode", "auto"))
    parser_cls = ToolParserManager.get_tool_parser(job["parser"])
    tools = job.get("tools") or [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    request = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "x"}], tools=tools)
    out = []
    for text in job["texts"]:
        parser = parser_cls(tokenizer, request.tools)  # a fresh one per output: parsers keep state
        info = parser.extract_tool_calls(text, request)
        calls = []
        for c in info.tool_calls:
            try:
                calls.append({"name": c.function.name, "arguments": json.loads(c.function.arguments)})
            except ValueError:
                calls.append({"name": c.function.name, "arguments_text": c.function.arguments})
        out.append({"called": bool(info.tools_called), "calls": calls, "content": info.content})
    return out


def main() -> None:
    jobs = json.load(sys.stdin)
    logging.disable(logging.CRITICAL)  # the parsers log every malformed call with a traceback
    json.dump([parse_all(job) for job in jobs], sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
