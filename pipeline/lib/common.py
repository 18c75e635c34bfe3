"""What every stage shares: the console, atomic writes, sidecars, and the thin entry point."""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from rich.console import Console

from pipeline.lib import recipe as recipe_mod
from pipeline.lib import stages
from pipeline.lib.recipe import ROOT, Recipe, RecipeError, scrub

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class StageError(RuntimeError):
    """A problem the user can fix: printed as one clear message, no traceback."""


# --- atomic files -------------------------------------------------------------------------

def _check_space(path: Path, need: int) -> None:
    free = shutil.disk_usage(path).free
    if free < need:
        raise StageError(f"not enough disk space in {path}: {need / 1e6:.1f} MB needed, {free / 1e6:.1f} MB free.")


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _check_space(path.parent, len(data) + (1 << 20))
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600: follow the umask, as open() would
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except PermissionError:
        raise StageError(f"cannot write {path}: permission denied. Choose another RUN= or fix the folder's permissions.") from None
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise StageError(f"disk full while writing {path} ({len(data) / 1e6:.1f} MB). Free space and run again.") from None
        raise
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, obj) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl_atomic(path: Path, rows) -> Path:
    return write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


@contextlib.contextmanager
def atomic_dir(path: Path, leftovers: bool = True):
    """Build a directory under a temporary name of its own; it appears under `path` only when complete.
    `leftovers`: first remove the temporary folders that killed builds of the same directory left behind
    (safe inside a run folder, which one process at a time holds: `run_lock`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if leftovers:
        for stale in [*path.parent.glob(f".{path.name}.*.tmp"), *path.parent.glob(f".{path.name}.*.old"),
                      path.parent / f".{path.name}.tmp", path.parent / f".{path.name}.old"]:
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700: a server running as another user must read it
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = tmp.with_name(tmp.name[: -len(".tmp")] + ".old")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def run_lock(run_dir: Path, stage: str):
    """One process at a time per run folder: a second stage on the same RUN stops at once with a message
    naming the process that holds it, instead of both writing and the last one winning."""
    import fcntl

    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / ".lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            raise StageError(f"{rel(run_dir)} is in use by {holder}: wait for it to finish, or use another RUN=.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} (stage {stage}, since {time.strftime('%H:%M:%S')})".encode(), 0)
        yield
    finally:
        os.close(fd)


def read_jsonl(path: Path, tolerant: bool = False) -> list[dict]:
    """The objects of a JSONL file written by a stage. `tolerant`: a missing file is empty and a line cut off by a
    kill is skipped (the report shows what is there); otherwise either is an error for the caller."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        if tolerant:
            return []
        raise
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            if not tolerant:
                raise
    return out


# --- sidecars -----------------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    return recipe_mod.sha256_file(Path(path))


LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "tokenizers", "safetensors",
             "unsloth", "unsloth_zoo", "bitsandbytes", "xformers", "triton", "torchao")


def versions() -> dict:
    """Python, the machine and the installed version of each library that can change a result (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict = {"python": platform.python_version(), "machine": platform.machine()}
    for pkg in LIBRARIES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def fingerprint(recipe: Recipe, stage: str, inputs: list[Path], keys: tuple[str, ...] | None = None) -> str:
    """Hash of everything a stage's output depends on: its source, the recipe keys it reads, its inputs.

    `keys` (dotted, e.g. "train.lr") limits the recipe part to what the stage reads, so that
    `make evaluate ARGS="data.eval=other.jsonl"` re-runs validate and evaluate, not training.
    """
    config = recipe.to_dict()
    if keys is not None:
        picked = {}
        for key in keys:
            node = config
            for part in key.split("."):
                node = node[part]
            picked[key] = node
        config = picked
    h = hashlib.sha256()
    h.update(json.dumps(config, sort_keys=True).encode())
    for src in stage_sources(stage):
        h.update(str(src.relative_to(PACKAGE.parent)).encode())
        h.update(src.read_bytes())
    for p in inputs:
        h.update(str(rel(p)).encode())
        h.update(sha256_file(p).encode() if Path(p).is_file() else b"missing")
    return h.hexdigest()


PACKAGE = ROOT / "pipeline"


def _imports(path: Path) -> set[str]:
    """Project modules a source file imports anywhere (top level or inside a function)."""
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("pipeline."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "pipeline" or node.module.startswith("pipeline."):
                names.add(node.module)
                # `from pipeline.lib import mask`: mask may be a module (a name that is not is skipped later)
                names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def stage_sources(stage: str) -> list[Path]:
    """Every file whose text can change a stage's output: the stage's module, each project module it
    imports (transitively, lazy imports included), and the bundled templates. Over-approximates by
    design: a stage that re-runs for nothing costs time, one that does not re-run costs a wrong result."""
    seen: dict[str, Path] = {}
    todo = [stages.stage(stage).import_name]
    while todo:
        name = todo.pop()
        if name in seen or name == "pipeline":
            continue
        rel_parts = name.split(".")[1:]
        path = PACKAGE.joinpath(*rel_parts).with_suffix(".py")
        if not path.is_file():
            path = PACKAGE.joinpath(*rel_parts, "__init__.py")
            if not path.is_file():
                continue  # `from pipeline import some_function`: not a module
        seen[name] = path
        todo += sorted(_imports(path))
    return sorted(seen.values()) + sorted((PACKAGE / "templates").glob("*.jinja"))


# Files a stage folder holds that its sidecar does not vouch for: the sidecar itself, count's step and
# time estimate (rewritten on every run, as train.* changes), the export's model card (rewritten by the run
# report after each later stage, eval table included), sft's resumable checkpoints and TensorBoard records.
NOT_OUTPUTS = {"stage.json", "schedule.json", "README.md"}
NOT_OUTPUT_DIRS = {"checkpoints", "tensorboard"}
WHOLE_HASH_LIMIT = 256 << 20  # larger files (merged weights) are identified by size and modification time


def output_digests(stage_dir: Path) -> dict[str, str]:
    """What the sidecar records of a stage's outputs: every file under the stage folder, by its path in it."""
    out = {}
    for p in sorted(Path(stage_dir).rglob("*")):
        r = p.relative_to(stage_dir)
        if not p.is_file() or r.name in NOT_OUTPUTS and len(r.parts) == 1 or r.parts[0] in NOT_OUTPUT_DIRS:
            continue
        st = p.stat()
        out[str(r)] = sha256_file(p) if st.st_size <= WHOLE_HASH_LIMIT else f"size={st.st_size} mtime_ns={st.st_mtime_ns}"
    return out


def up_to_date(stage_dir: Path, fp: str) -> bool:
    """True when the sidecar says the stage succeeded with this fingerprint and every output it recorded is
    still the file it wrote. Otherwise the stale sidecar is removed before the stage does any work, so a stage
    that then fails (or is killed) leaves nothing that a later run, or Make, could take as done."""
    side = stage_dir / "stage.json"
    try:
        doc = json.loads(side.read_text())
        recorded = doc.get("outputs")
        fresh = doc.get("fingerprint") == fp and isinstance(recorded, dict) and all(
            output_digests(stage_dir).get(name) == digest for name, digest in recorded.items())
    except (OSError, ValueError):
        fresh = False
    if fresh:
        with contextlib.suppress(OSError):
            os.utime(side)  # tell Make this stage is current, so it is not asked again next time
    else:
        side.unlink(missing_ok=True)
    return fresh


def write_sidecar(stage_dir: Path, stage: str, recipe: Recipe, inputs: list[Path], fp: str, started: float,
                  figures: dict | None = None) -> Path:
    """stage.json: written last, only on success, so its presence means the stage's outputs are complete; it
    records their digests, and `up_to_date` trusts the stage only while they still match."""
    stages.stage(stage)  # only a stage of the one list has a sidecar
    doc = {
        "stage": stage,
        "fingerprint": fp,
        "inputs": {str(rel(p)): sha256_file(p) for p in inputs if Path(p).is_file()},
        "outputs": output_digests(stage_dir),
        "recipe": recipe.public_dict(),
        "versions": versions(),
        "wall_time_s": round(time.time() - started, 2),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "figures": figures or {},
    }
    return write_json_atomic(stage_dir / "stage.json", doc)


def rel(p: Path) -> Path:
    p = Path(p).resolve()
    return p.relative_to(ROOT) if p.is_relative_to(ROOT) else p


# --- entry point --------------------------------------------------------------------------

def env_args() -> list[str]:
    """`make ... ARGS="k=v ..."` passes ARGS in the environment (TOOLTUNE_ARGS), never through a shell line:
    split here as a shell splits words (quotes group), with nothing expanded or run."""
    import shlex

    text = os.environ.get("TOOLTUNE_ARGS", "")
    try:
        return shlex.split(text)
    except ValueError as e:
        raise RecipeError([f"ARGS={text!r} does not split into words ({e}): close the quote."], "ARGS") from None


def command(name: str, doc: str | None, argv: list[str] | None, body: Callable[[Recipe, Path, argparse.Namespace], Path | None],
            options: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """Every command's entry point: `python -m pipeline.<stages|commands>.<module> --recipe R [--run RUN] [key=value ...]`.
    Resolves the recipe and the run folder, runs `body`, and turns the problems a user can fix (a bad
    recipe, a StageError, Ctrl-C) into one clear line instead of a traceback."""
    module = stages.stage(name).import_name if name in stages.NAMES else f"pipeline.commands.{name}"
    ap = argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="smollm2-135m-tools", help="a recipe name in recipes/ (without .yaml)")
    ap.add_argument("--run", default=None, help="run folder under runs/ (default: the recipe name)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. lora.r=32 data.train=my.jsonl")
    if options:
        options(ap)
    a = ap.parse_args(argv)
    try:
        recipe = recipe_mod.load(a.recipe, a.overrides + env_args())
        run_dir = recipe_mod.run_dir_for(a.run or a.recipe)
        out = body(recipe, run_dir, a)
    except RecipeError as e:
        recipe_mod.fail(str(e))
    except StageError as e:
        recipe_mod.fail(f"[{name}] {scrub(str(e))}")
    except KeyboardInterrupt:
        recipe_mod.fail(f"[{name}] interrupted; run the same command again to resume.", code=130)
    if out is not None:
        console.print(f"[green]{name}[/] -> {rel(out)}")


def run_or_fail(name: str, fn: Callable[[], object], interrupted: str) -> None:
    """A command that takes no recipe (make tools, make synth): a problem the user can fix is one line, exit 2;
    Ctrl-C says what was kept (`interrupted`), exit 130."""
    try:
        fn()
    except StageError as e:
        recipe_mod.fail(f"[{name}] {scrub(str(e))}")
    except KeyboardInterrupt:
        recipe_mod.fail(f"[{name}] interrupted; {interrupted}", code=130)


def stage_main(stage: str, run: Callable[[Recipe, Path], Path], argv: list[str] | None = None) -> None:
    """A stage's `main()`: `run(recipe, run_dir)` inside `command`, the run folder made first."""
    def body(recipe: Recipe, run_dir: Path, _args) -> Path:
        if "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ:
            return run(recipe, run_dir)  # one of several training processes: the stage that launched them holds the lock
        with run_lock(run_dir, stage):
            return run(recipe, run_dir)

    command(stage, sys.modules[run.__module__].__doc__, argv, body)
