"""The house's layout: three wings with one direction of imports, one list of stages, one home per job.

The imports are read from the sources (AST, imports inside functions included, and `importlib.import_module`
of a literal name), never by importing anything, so a rule holds however a module is reached.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

from pipeline.lib import stages

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pipeline"
TEST_MODULES = {p.stem for p in (ROOT / "tests").glob("*.py")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, str]:
    """Every source file the rules cover, by its path in the repository."""
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "bench").rglob("*.py"), *(ROOT / "scripts").rglob("*.py")]
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in sorted(files)}


def imported(text: str, known: set[str]) -> set[str]:
    """The project modules (or packages) a source imports anywhere: `from pipeline.lib import x` counts as
    pipeline.lib.x when that is a module, else as pipeline.lib."""
    out: set[str] = set()

    def add(name: str) -> None:
        out.add(name if name in known else name.rsplit(".", 1)[0] if name.rsplit(".", 1)[0] in known else name)

    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                out.add(full if full in known else node.module)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            add(node.args[0].value)
    return out


def wing(module: str) -> str | None:
    for name in ("lib", "stages", "commands"):
        if module == f"pipeline.{name}" or module.startswith(f"pipeline.{name}."):
            return name
    return "root" if module == "pipeline" else None


def problems(files: dict[str, str]) -> list[str]:
    """Every broken rule of the layout in these sources (path -> text), one line each."""
    mods = {module_name(ROOT / path): path for path in files}
    known = set(mods)
    graph: dict[str, set[str]] = {}
    found = []
    for mod, path in mods.items():
        deps = imported(files[path], known)
        graph[mod] = {d for d in deps if d in known and d != mod}
        top = path.split("/")[0]
        if top in ("bench", "scripts"):
            for d in deps:
                if d == "tests" or d.startswith("tests.") or d.split(".")[0] in TEST_MODULES:
                    found.append(f"{path} imports {d} from tests/: test helpers stay under tests/")
            continue
        mine = wing(mod)
        for d in sorted(graph[mod]):
            theirs = wing(d)
            if mine == "lib" and theirs in ("stages", "commands"):
                found.append(f"{path} (lib) imports {d}: lib/ imports neither a stage nor a command")
            elif mine == "stages" and theirs == "stages" and d != "pipeline.stages":
                found.append(f"{path} imports the stage {d}: a stage imports only lib/")
            elif mine in ("stages", "commands") and theirs == "commands" and d != "pipeline.commands":
                found.append(f"{path} imports the command {d}: a {mine[:-1]} imports only lib/")
            elif mine == "commands" and theirs == "stages" and d != "pipeline.stages":
                found.append(f"{path} imports the stage {d}: a command reaches a stage's work through lib/")
    # circles (Tarjan's strongly connected components) among the package's modules
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append("import circle: " + " -> ".join(sorted(comp)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_imports_run_one_way_and_in_no_circle():
    assert problems(sources()) == []


@pytest.mark.parametrize("path, line, says", [
    ("pipeline/lib/common.py", "from pipeline.commands import report", "lib/ imports neither"),
    ("pipeline/lib/recipe.py", "    import importlib; importlib.import_module('pipeline.stages.s4_sft')", "lib/ imports neither"),
    ("pipeline/stages/s6_evaluate.py", "from pipeline.stages.s5_export import merge_checked", "a stage imports only lib/"),
    ("pipeline/commands/report.py", "from pipeline.stages import s6_evaluate", "a command reaches a stage's work"),
    ("pipeline/stages/s2_count.py", "from pipeline.commands.plan import main", "imports only lib/"),
    ("bench/gpu_rehearsal.py", "from conftest import SHARED", "test helpers stay under tests/"),
    ("pipeline/lib/encode.py", "from pipeline.lib import planner", "import circle"),
])
def test_a_deliberate_back_import_fails(path, line, says):
    files = sources()
    if path == "pipeline/lib/encode.py":  # a circle needs the way back too
        files["pipeline/lib/planner.py"] += "\n\ndef _loop():\n    from pipeline.lib import encode\n"
    if line.startswith("    "):
        files[path] += "\n\ndef _back():\n" + line + "\n"
    else:
        files[path] += "\n" + line + "\n"
    assert any(says in p for p in problems(files)), problems(files)


def test_the_stage_folder_lists_the_chain_in_order():
    listed = sorted(p.stem for p in (PACKAGE / "stages").glob("s*_*.py"))
    assert listed == [s.module for s in stages.STAGES]
    assert [s.name for s in stages.STAGES[:6]] == ["validate", "count", "load", "sft", "export", "evaluate"] == list(stages.CHAIN)
    for s in stages.STAGES:  # each stage's needs come before it
        assert all(stages.NAMES.index(n) < stages.NAMES.index(s.name) for n in s.needs)


def test_make_builds_its_stage_targets_and_help_from_the_one_list():
    help_text = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for line in stages.help_lines():
        assert line in help_text
    dry = subprocess.run(["make", "--no-print-directory", "-n", "-W", "runs/layout-dry/recipe.yaml", "RUN=layout-dry",
                          "runs/layout-dry/count/stage.json"], cwd=ROOT, capture_output=True, text=True)
    # count needs validate: the dry run names both modules from the list, and refreshes the report after each
    assert "-m pipeline.stages.s1_validate" in dry.stdout and "-m pipeline.stages.s2_count" in dry.stdout, dry.stdout + dry.stderr
    assert dry.stdout.count("-m pipeline.commands.report --run layout-dry --after-stage") == 2


def test_the_stage_list_is_written_once():
    """No other source spells the chain out: Make, status, the report and the sidecars read pipeline/lib/stages.py."""
    chain = re.compile(r'"validate",\s*"count",\s*"load"')
    spelled = [path for path, text in sources().items() if chain.search(text) and path != "pipeline/lib/stages.py"]
    assert spelled == []
    makefile = (ROOT / "Makefile").read_text()
    assert "python3 -m pipeline.lib.stages make" in makefile and "pipeline.stages.s1_validate" not in makefile


def test_one_home_per_job():
    files = sources()
    # the sft stage's SFTConfig, and the plain TRL + PEFT script every benchmark compares it with: once each
    sft_configs = [p for p, t in files.items() if re.search(r"\bSFTConfig\(", t)]
    assert sft_configs == ["bench/plain_trl.py", "pipeline/lib/trainer.py"]
    plain_lora = [p for p, t in files.items() if re.search(r"\bLoraConfig\(r=", t)]
    assert plain_lora == ["bench/plain_trl.py"]
    # a benchmark's part in a child process: one runner
    children = [p for p, t in files.items() if p.startswith("bench/") and re.search(r"\bsubprocess\.(run|Popen)\(", t)]
    assert children == ["bench/child.py"]
    checkers = [p for p, t in files.items() if re.search(r"^def check_line\(", t, re.M)]
    assert checkers == ["pipeline/lib/conversations.py"]


def test_every_stage_and_command_runs_as_a_module():
    """Make runs each stage and command as `python -m <module>`: a module with a main() and no `__main__` guard
    does nothing there, and exits 0."""
    silent = []
    for path, text in sources().items():
        if path.startswith(("pipeline/stages/", "pipeline/commands/")) and re.search(r"^def main\(", text, re.M):
            if not re.search(r'^if __name__ == "__main__":\n\s+\S*main\(', text, re.M):
                silent.append(path)
    assert not silent, f"main() never runs under python -m: {silent}"
