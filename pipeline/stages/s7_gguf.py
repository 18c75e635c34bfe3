"""GGUF for llama.cpp, LM Studio and Ollama: the merged export converted and quantized by llama.cpp's own tools.

    make gguf RUN=my-run                             # export.gguf: [q8_0, q4_k_m] by default
    make gguf RUN=my-run ARGS="export.gguf=[f16,q4_k_m,q6_k]"

Converts runs/<RUN>/export with llama.cpp's `convert_hf_to_gguf.py` (f16, bf16 and q8_0 directly; any other
type from the f16 file with `llama-quantize`) into runs/<RUN>/gguf/, built under a temporary name and moved
into place only when every file is written and checked. The chat template embedded in each GGUF must be the
exact text training rendered with (chat_template.jinja), or nothing is written: `llama-server --jinja` then
renders tools and calls as training did, and parses the calls back. Each GGUF gets an Ollama Modelfile beside
it. The llama.cpp tools are built once from the `llama-cpp-python` source package (scripts/install_llamacpp.sh).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from pipeline.lib.artifacts import gguf_name
from pipeline.lib.common import StageError, atomic_dir, console, fingerprint, rel, sha256_file, stage_main, up_to_date, write_sidecar
from pipeline.lib.recipe import GGUF_CONVERTER_TYPES, ROOT, Recipe
from pipeline.lib.servers import llamacpp_dir

STAGE = "gguf"
def embedded_template(path: Path, tools: Path) -> str | None:
    """The chat template a GGUF carries (`tokenizer.chat_template`), read with llama.cpp's own gguf-py."""
    code = ("import sys; from gguf import GGUFReader; f = GGUFReader(sys.argv[1]).fields.get('tokenizer.chat_template');"
            "sys.stdout.write('' if f is None else f.contents())")
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", code, str(path)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tools / "gguf-py")})
    if out.returncode != 0:
        raise StageError(f"{path.name} does not read as GGUF: {out.stderr.strip()[-500:]}")
    return out.stdout or None


def run_tool(cmd: list[str], what: str, env: dict | None = None) -> float:
    """Run one llama.cpp tool; its output is kept only to explain a failure. Seconds it took."""
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise StageError(f"{what} failed (exit {out.returncode}); its output ends:\n{(out.stdout + out.stderr)[-3000:]}")
    return time.time() - t0


def convert(export: Path, dest: Path, qtype: str, tools: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tools / "gguf-py")}
    return run_tool([str(ROOT / ".venv" / "bin" / "python"), str(tools / "convert_hf_to_gguf.py"), str(export),
                     "--outtype", qtype, "--outfile", str(dest)], f"convert_hf_to_gguf.py --outtype {qtype}", env)


def quantize(src: Path, dest: Path, qtype: str, tools: Path) -> float:
    return run_tool([str(tools / "bin" / "llama-quantize"), str(src), str(dest), qtype.upper(), str(os.cpu_count() or 1)],
                    f"llama-quantize {qtype.upper()}")


def run(recipe: Recipe, run_dir: Path) -> Path:
    from pipeline.lib.artifacts import export_info
    from pipeline.lib.generation import decoding_defaults
    from pipeline.lib.modelfile import modelfile

    started = time.time()
    export = run_dir / "export"
    out = run_dir / STAGE
    info = export_info(run_dir)
    inputs = [export / "stage.json"]
    fp = fingerprint(recipe, STAGE, inputs, ("export.gguf", "max_seq_length"))  # the Modelfiles carry num_ctx
    if up_to_date(out, fp):
        console.print(f"[dim]{STAGE}: export unchanged, nothing to do[/]")
        return out
    tools = llamacpp_dir()
    template = (export / "chat_template.jinja").read_text(encoding="utf-8")
    eos = json.loads((export / "tokenizer_config.json").read_text()).get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    from transformers import GenerationConfig

    gen = GenerationConfig.from_pretrained(export)
    files = {}
    with atomic_dir(out) as tmp:
        f16 = tmp / gguf_name(run_dir.name, "f16")
        for qtype in recipe.export.gguf:
            dest = tmp / gguf_name(run_dir.name, qtype)
            if qtype in GGUF_CONVERTER_TYPES:
                console.print(f"gguf: converting {rel(export)} to {qtype} with llama.cpp's convert_hf_to_gguf.py")
                took = convert(export, dest, qtype, tools)
            else:
                if not f16.is_file():
                    console.print(f"gguf: converting {rel(export)} to f16 (the source of the quantized files)")
                    convert(export, f16, "f16", tools)
                console.print(f"gguf: quantizing to {qtype} with llama-quantize")
                took = quantize(f16, dest, qtype, tools)
            embedded = embedded_template(dest, tools)
            if embedded != template:
                raise StageError(f"{dest.name} does not carry the run's chat template "
                                 f"({'none' if embedded is None else f'{len(embedded)} characters that differ'}): "
                                 "llama-server would render tools differently from training. Nothing was written.")
            (tmp / f"{dest.stem}.Modelfile").write_text(modelfile(
                dest.name, template, eos_token=eos, decoding=decoding_defaults(gen), num_ctx=recipe.max_seq_length,
                recipe=recipe.name))
            files[qtype] = {"file": dest.name, "bytes": dest.stat().st_size, "seconds": round(took, 1)}
        if "f16" not in recipe.export.gguf:
            f16.unlink(missing_ok=True)
        (tmp / "tooltune.json").write_text(json.dumps(
            {"recipe": recipe.name, "tool_format": info["tool_format"], "files": files,
             "chat_template_sha256": sha256_file(export / "chat_template.jinja"),
             "llama_cpp": (tools / "version.txt").read_text().strip().splitlines()[0]}, indent=2))
    for qtype, f in files.items():
        console.print(f"gguf: {rel(out / f['file'])} ({f['bytes'] / 1e6:.0f} MB) with the run's chat template; "
                      f"Ollama: `ollama create {run_dir.name}-{qtype} -f {rel(out / f['file']).with_suffix('.Modelfile')}`")
    write_sidecar(out, STAGE, recipe, inputs, fp, started, {"files": files})
    return out


def main(argv=None):
    stage_main(STAGE, run, argv)


if __name__ == "__main__":
    main()
