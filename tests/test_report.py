"""The run report (report.html, report.md + loss.png), the model card, and experiment tracking, on the tiny
chain through the real stage entry points; the page is opened in real headless Chromium."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from chain import run_stage

from pipeline.commands import report
from pipeline.lib import card, scoring
from pipeline.lib.recipe import ROOT
from pipeline.stages import s1_validate as validate
from pipeline.stages import s2_count as count
from pipeline.stages import s3_load as load
from pipeline.stages import s4_sft as sft
from pipeline.stages import s5_export as export
from pipeline.stages import s6_evaluate as evaluate

STEPS = 4


def tiny_args(model_dir) -> list[str]:
    return [f"model={model_dir}", "cpu_bf16=false", "data.max_train=8", "data.eval_max=3", f"train.max_steps={STEPS}",
            "train.batch_size=2", "train.save_steps=2", "train.logging_steps=1", "eval.max_turns=6",
            "eval.batch_size=6", "eval.max_new_tokens=8", "export.check_new_tokens=6", "export.check_prompts=2",
            "export.dtype=float16", "eval.forgetting=2", "eval.bfcl_max_new_tokens=8",
            "train.report_to=[tensorboard,trackio]"]


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory) -> Path:
    """The whole chain on the tiny model, reporting to TensorBoard and trackio."""
    runs = tmp_path_factory.mktemp("report") / "runs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TOOLTUNE_RUNS", str(runs))
        for module in (validate, count, load, sft, export, evaluate):
            run_stage(module, "smollm2-135m-tools", "rep", tiny_args(tiny_model_dir))
    return runs / "rep"


def logged_losses(run: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (run / "sft" / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_tensorboard_event_files_hold_the_logged_losses(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged = logged_losses(run)
    assert sorted(logged) == list(range(1, STEPS + 1))
    acc = EventAccumulator(str(run / "sft" / "tensorboard"))
    acc.Reload()
    assert "train/loss" in acc.Tags()["scalars"]
    board = {e.step: e.value for e in acc.Scalars("train/loss")}
    assert sorted(board) == sorted(logged)
    for step, loss in logged.items():
        assert board[step] == pytest.approx(loss, rel=1e-6), step  # event files store float32
    lr = {e.step: e.value for e in acc.Scalars("train/learning_rate")}
    assert len(lr) == STEPS


def test_trackio_database_holds_the_logged_losses(run):
    from trackio.sqlite_storage import SQLiteStorage

    figures = json.loads((run / "sft" / "figures.json").read_text())
    where = figures["tracking"]["trackio"]
    assert where["project"] == "tooltune" and where["run"].startswith("rep-")
    logs = SQLiteStorage.get_logs(where["project"], where["run"])
    tracked = {int(e["train/global_step"]): e["train/loss"] for e in logs if "train/loss" in e}
    assert tracked == pytest.approx(logged_losses(run))


def test_an_unknown_or_missing_tracker_is_refused_before_training(tiny_model_dir, runs_dir, capsys, monkeypatch):
    from pipeline.lib import backends

    with pytest.raises(SystemExit) as exc:
        validate.main(["--recipe", "smollm2-135m-tools", "--run", "x", f"model={tiny_model_dir}",
                       "train.report_to=[tensorbord]"])
    assert exc.value.code == 2 and "train.report_to" in capsys.readouterr().err
    real = backends.installed
    monkeypatch.setattr(backends, "installed", lambda m: m != "wandb" and real(m))
    with pytest.raises(SystemExit):
        sft.main(["--recipe", "smollm2-135m-tools", "--run", "x", f"model={tiny_model_dir}", "train.report_to=[wandb]"])
    err = capsys.readouterr().err
    assert "wandb" in err and "pip install wandb" in err
    from pipeline.commands import preflight

    with pytest.raises(SystemExit):
        preflight.main(["--recipe", "smollm2-135m-tools", f"model={tiny_model_dir}", "train.report_to=[wandb]"])
    assert "pip install wandb" in capsys.readouterr().err


def test_model_card_has_the_hub_header_and_the_eval_numbers(run):
    from huggingface_hub import ModelCard

    text = (run / "export" / "README.md").read_text()
    card = ModelCard(text)
    meta = card.data.to_dict()
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert meta["license"] and "tool-calling" in meta["tags"] and "tooltune" in meta["tags"]
    assert "base_model" not in meta  # a local folder is not a hub id; a hub model's id is written (next test)
    ev = json.loads((run / "evaluate" / "report.json").read_text())
    for key, name in scoring.METRIC_NAMES.items():
        row = next(x for x in text.splitlines() if x.startswith((f"| {name} |", f"| {name} (n=")))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == scoring.pct_ci(ev["base"], key) and cells[2] == scoring.pct_ci(ev["tuned"], key), row
        n = ev["tuned"][scoring.DENOMINATOR[key]]
        if ev["tuned"][key] is not None and n:  # each figure with its 95% interval, and the turns it is a share of
            lo, hi = scoring.wilson(ev["tuned"][key], n)
            assert (f"(n={n})" in cells[0]) == (key != "schema_valid") and f"[{lo * 100:.0f}-{hi * 100:.0f}]" in cells[2] and lo <= ev["tuned"][key] <= hi
    assert "Not evaluated yet" not in text and "## Limitations seen in the evaluation" in text
    assert "--tool-call-parser hermes" in text
    info = json.loads((run / "export" / "tooltune.json").read_text())
    assert info["decoding"] in text
    # the card is not an output the export vouches for: rewriting it leaves the export trusted
    side = json.loads((run / "export" / "stage.json").read_text())
    assert "README.md" not in side["outputs"] and "model.safetensors" in side["outputs"]


def test_model_card_names_a_hub_base_model_and_its_licence():
    import yaml

    d = {"recipe": {"model": "unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit", "load_in_4bit": True, "export": {}},
         "load": {"backend": "unsloth"}}
    meta = yaml.safe_load(card.card_header(d).split("---")[1])
    assert meta["base_model"] == "unsloth/Meta-Llama-3.1-8B-Instruct" and meta["license"] == "llama3.1"
    assert {"unsloth", "qlora"} <= set(meta["tags"])
    d["recipe"]["model"] = "builtin:smollm2-135m-instruct"
    meta = yaml.safe_load(card.card_header(d).split("---")[1])
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["license"] == "apache-2.0"


def test_report_page_and_markdown_hold_what_the_run_did(run, monkeypatch):
    page = (run / "report.html").read_text()
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert page.count('class="chart eval-chart"') == 1 and page.count('class="chart loss-chart"') == 1
    ev = json.loads((run / "evaluate" / "report.json").read_text())
    assert f"<td class=n>{report.pct(ev['tuned']['tool_selection'])}</td>" in page
    points = re.search(r'<polyline points="([^"]+)"[^>]*stroke="' + report.COLOURS["loss"], page).group(1).split()
    assert len(points) == STEPS  # one point per logged step
    rows = report.bfcl.sample_rows(ev["forgetting"])  # the BFCL sample: selection and AST, base and tuned
    assert [r[0] for r in rows] == ["irrelevance", "simple_python", "multiple"] and "-" not in rows[0]
    card = (run / "export" / "README.md").read_text()
    assert all("| " + " | ".join(r) + " |" in card for r in rows) and "selection tuned" in page
    md = (run / "report.md").read_text()
    assert "![loss on the assistant tokens per optimizer step](loss.png)" in md
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # `make report` rebuilds all three from the run folder alone
    for f in ("report.html", "report.md", "loss.png"):
        (run / f).unlink()
    monkeypatch.setenv("TOOLTUNE_RUNS", str(run.parent))
    report.main(["--run", "rep"])
    assert (run / "report.html").read_text() == page and (run / "loss.png").is_file()


def test_report_page_renders_its_charts_in_headless_chromium(run, tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import report_screenshot

    try:
        report_screenshot.chromium()
    except SystemExit as e:
        pytest.fail(str(e))  # make test installs it (make chromium)
    found = report_screenshot.check(run / "report.html", tmp_path / "shot.png")
    assert found["charts"] == {"eval-chart": 1, "loss-chart": 1}
    assert found["drawn"]["loss points"] == STEPS and found["drawn"]["bars"] >= 3
    assert min(found["pixels"].values()) >= report_screenshot.MIN_PIXELS
    # a page whose charts are gone fails the same check
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r"<svg\b.*?</svg>", "", (run / "report.html").read_text(), flags=re.S))
    with pytest.raises(AssertionError, match="did not render"):
        report_screenshot.check(broken, tmp_path / "broken.png")


def test_model_card_serving_commands_follow_the_run():
    d = {"run": "mine", "sidecars": {}, "log": [],
         "recipe": {"name": "llama31-8b-tools", "model": "unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit", "export": {}},
         "export": {"vllm_tool_parser": "llama3_json", "tool_format": "llama3_json"}}
    text = report.model_card(d)
    assert "--tool-call-parser llama3_json" in text and "Not evaluated yet" in text
    assert "make gguf" in text and "llama-server -m" not in text
    d.update(gguf=["mine-q4_k_m.gguf", "mine-q8_0.gguf"], modelfiles=["mine-q4_k_m.Modelfile", "mine-q8_0.Modelfile"])
    text = report.model_card(d)
    assert "llama-server -m runs/mine/gguf/mine-q4_k_m.gguf --jinja" in text
    assert "ollama create mine -f runs/mine/gguf/mine-q4_k_m.Modelfile" in text and "q8_0.Modelfile" not in text
    assert "Reproduces: the article's hyperparameters" in text  # the recipe file's own header says what it reproduces
