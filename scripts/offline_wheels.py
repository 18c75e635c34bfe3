#!/usr/bin/env python
"""Gather slimmed wheels for a GPU machine that cannot reach PyPI (for `make gpu-check` there).

    python scripts/offline_wheels.py [--dest .whl] [--python 3.12] [--cuda 130]

Downloads, for the target Python, the GPU extras and the libraries tooltune needs beyond what a
stock CUDA + PyTorch + transformers image holds (trl, datasets, unsloth, unsloth_zoo, bitsandbytes,
peft and their small pure-Python needs), then slims the two big ones so that all of it travels in
under 64 MiB: bitsandbytes keeps only the `libbitsandbytes_cuda<CUDA>` library of the target's CUDA
(it ships one per CUDA and ROCm release), and unsloth drops its `studio/` web UI, which training
never imports. RECORD is rewritten to match, so pip installs the slimmed wheel as usual. On the
target:

    python3 -m pip install --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Pinned where requirements/*.txt pins them; the rest are needs a stock CUDA image lacks.
FROM_REQUIREMENTS = ["unsloth", "unsloth_zoo", "trl", "datasets", "bitsandbytes", "peft", "torchao", "jsonschema"]
PINNED = ["jsonschema-specifications==2025.9.1", "dill==0.4.1", "multiprocess==0.70.19", "pydantic==2.14.4",
          "pydantic-core==2.50.5"]
NEEDS = ["tyro", "docstring-parser", "typeguard", "shtab", "json5", "nest-asyncio", "structlog", "annotated-types",
         "typing-inspection", "msgspec", "cut_cross_entropy", "hf_transfer", "rpds-py", "referencing"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64", "any"]


def slim(wheel: Path, drop) -> tuple[int, int]:
    """Rewrite `wheel` in place without the members for which drop(name) is true; RECORD follows."""
    before = wheel.stat().st_size
    tmp = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if drop(info.filename):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                kept = [line for line in data.decode().splitlines() if line and not drop(line.split(",", 1)[0])]
                data = ("\n".join(kept) + "\n").encode()
            dst.writestr(info, data)
    tmp.replace(wheel)
    return before, wheel.stat().st_size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", default=str(ROOT / ".whl"))
    ap.add_argument("--python", default="3.12", help="the target machine's Python version")
    ap.add_argument("--cuda", default="130", help="the target torch's CUDA version, as bitsandbytes names it")
    args = ap.parse_args(argv)
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", args.python, "--implementation", "cp", "-d", str(dest)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    pins = {}
    for req in ("base.txt", "gpu.txt"):
        for line in (ROOT / "requirements" / req).read_text().splitlines():
            name = re.split(r"[=<>~! ]", line.strip(), maxsplit=1)[0]
            if name and not line.startswith("#"):
                pins[name.lower()] = line.strip()
    subprocess.run(cmd + [pins[n] for n in FROM_REQUIREMENTS] + PINNED + NEEDS, check=True)
    keep_lib = f"libbitsandbytes_cuda{args.cuda}.so"
    rules = {
        "bitsandbytes-": lambda n: re.search(r"libbitsandbytes_\w+\.so$", n) is not None and not n.endswith(keep_lib),
        "unsloth-": lambda n: n.startswith("studio/"),
    }
    for wheel in sorted(dest.glob("*.whl")):
        for prefix, drop in rules.items():
            if wheel.name.startswith(prefix):
                before, after = slim(wheel, drop)
                print(f"slimmed {wheel.name}: {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB")
    total = sum(w.stat().st_size for w in dest.glob("*.whl"))
    print(f"{len(list(dest.glob('*.whl')))} wheels, {total / 2**20:.1f} MiB in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
