"""Names and ARGS given to make never run as commands and never reach outside runs/.

Make checks RUN, RECIPE, FORMAT, IN and OUT itself, as text, before any shell line sees them, and
passes ARGS in the environment (split by Python, nothing expanded). Each case runs the real make.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from pipeline.lib.recipe import ROOT


def make(cwd, *args, env=None, timeout=120) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "TOOLTUNE_ARGS")}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def sandbox(tmp_path):
    """A copy of the Makefile (and the stage list it reads) in a scratch project, with a folder beside it that must survive."""
    project = tmp_path / "p"
    (project / "pipeline" / "lib").mkdir(parents=True)
    shutil.copy2(ROOT / "Makefile", project / "Makefile")
    for f in ("pipeline/__init__.py", "pipeline/lib/__init__.py", "pipeline/lib/stages.py"):
        shutil.copy2(ROOT / f, project / f)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    return project, victim


@pytest.mark.parametrize("target,assignment", [
    ("clean", "RUN=../victim"),
    ("clean", "RUN=../../victim"),
    ("clean", "RUN="),
    ("clean", "RUN=a b"),
    ("validate", "RUN=a b"),
    ("validate", "RUN=x$(touch p)"),
    ("validate", "RUN=x`touch p`"),
    ("validate", "RUN=x;touch p"),
    ("validate", "RECIPE=$(shell touch p)"),
    ("import", "IN=a;touch p"),
])
def test_a_bad_name_changes_nothing_and_says_why_in_one_line(sandbox, target, assignment):
    project, victim = sandbox
    out = make(project, target, assignment)
    assert out.returncode != 0
    lines = [x for x in (out.stdout + out.stderr).splitlines() if x.strip()]
    assert len(lines) == 1 and "is not allowed" in lines[0], lines
    assert (victim / "keep").read_text() == "precious"
    assert sorted(p.name for p in project.iterdir()) == ["Makefile", "pipeline"], "nothing was created or run"


def test_make_clean_deletes_only_a_run_folder(sandbox):
    project, _ = sandbox
    other = project / "runs" / "notes"
    other.mkdir(parents=True)
    (other / "mine.txt").write_text("not a run")
    out = make(project, "clean", "RUN=notes")
    assert out.returncode == 2 and "not a run folder" in out.stderr
    assert (other / "mine.txt").is_file()
    run = project / "runs" / "r1"
    run.mkdir()
    (run / "recipe.yaml").write_text("recipe: {}\n")
    assert make(project, "clean", "RUN=r1").returncode == 0 and not run.exists()


def test_args_travel_without_a_shell(tmp_path):
    """Backticks and $(...) in ARGS reach Python as text: the recipe check rejects them, nothing runs."""
    if not (ROOT / ".venv" / ".installed").is_file():
        pytest.skip("needs the project's .venv (make venv)")
    marker = tmp_path / "ran"
    env = {"TOOLTUNE_RUNS": str(tmp_path / "runs")}
    out = make(ROOT, "validate", "RUN=args-check", f"ARGS=data.max_train=`touch {marker}` x=$(touch {marker})", env=env)
    assert out.returncode == 2 and not marker.exists()
    assert "is not key=value" in out.stderr and "Traceback" not in out.stderr
    # Make's own functions are not expanded either, not even where make exports variables to a command (or
    # to the sub-make that `make train` starts)
    for target in ("validate", "train"):
        out = make(ROOT, target, "RUN=args-check", f"ARGS=$(shell touch {marker}) data.max_train=x", env=env)
        assert out.returncode == 2 and not marker.exists(), out.stderr[-2000:]
    # quotes group words as a shell would, and nothing else happens to them
    out = make(ROOT, "validate", "RUN=args-check", 'ARGS=data.max_train=12 data.eval_max="3"', env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "runs" / "args-check" / "validate" / "report.json").is_file()


def test_a_failed_validation_is_not_trusted_by_the_next_run(tmp_path):
    """data.on_invalid=fail: every run of validate fails while the data is bad, and count never goes on."""
    if not (ROOT / ".venv" / ".installed").is_file():
        pytest.skip("needs the project's .venv (make venv)")
    good = (ROOT / "data" / "customer_service" / "train.jsonl").read_text().splitlines()[:30]
    data = tmp_path / "bad.jsonl"
    data.write_text("\n".join(good[:10] + ['{"messages": "not a list"}'] + good[10:]) + "\n")
    env = {"TOOLTUNE_RUNS": str(tmp_path / "runs")}
    args = f"ARGS=data.on_invalid=fail data.train={data} data.eval=null"
    for _ in range(2):
        out = make(ROOT, "validate", "RUN=fail-check", args, env=env)
        assert out.returncode == 2 and "invalid line" in out.stderr
        assert not (tmp_path / "runs" / "fail-check" / "validate" / "stage.json").exists()
    out = make(ROOT, "count", "RUN=fail-check", args, env=env)
    assert out.returncode == 2 and not (tmp_path / "runs" / "fail-check" / "count").exists()
