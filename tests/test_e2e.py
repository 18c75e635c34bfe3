"""The whole chain through the real entry points, on a tiny random Llama with SmolLM2's tokenizer."""

from __future__ import annotations

import json

import pytest

from pipeline.lib import scoring
from pipeline.stages import s1_validate as validate
from pipeline.stages import s2_count as count
from pipeline.stages import s3_load as load
from pipeline.stages import s4_sft as sft
from pipeline.stages import s5_export as export
from pipeline.stages import s6_evaluate as evaluate
from chain import run_stage


def tiny_args(model_dir) -> list[str]:
    return [f"model={model_dir}", "cpu_bf16=false", "data.max_train=12", "data.eval_max=3", "train.max_steps=2",
            "train.batch_size=4", "train.save_steps=1", "train.logging_steps=1", "eval.max_turns=4",
            "eval.batch_size=4", "eval.max_new_tokens=8", "export.check_new_tokens=8", "export.check_prompts=3",
            "export.dtype=float16", "eval.forgetting=2", "eval.bfcl_max_new_tokens=8"]


def stage(module, argv):
    run_stage(module, "smollm2-135m-tools", "e2e", argv)


def test_chain_end_to_end(tiny_model_dir, runs_dir, capsys):
    args = tiny_args(tiny_model_dir)
    for module in (validate, count, load, sft, export, evaluate):
        stage(module, args)
    run = runs_dir / "e2e"
    for path in ("validate/report.json", "validate/train.jsonl", "validate/eval.jsonl", "validate/rejects.jsonl",
                 "count/report.json", "count/report.md", "count/train.tokens.jsonl", "load/model.json",
                 "sft/adapter/adapter_config.json", "sft/adapter/adapter_model.safetensors", "sft/log.jsonl",
                 "export/model.safetensors", "export/tokenizer.json", "export/chat_template.jinja",
                 "export/generation_config.json", "export/README.md", "export/adapter/adapter_config.json",
                 "evaluate/report.json", "evaluate/report.md"):
        assert (run / path).is_file(), path
    for folder in ("validate", "count", "load", "sft", "export", "evaluate"):
        side = json.loads((run / folder / "stage.json").read_text())
        assert side["inputs"] is not None and side["wall_time_s"] >= 0 and "transformers" in side["versions"] or folder == "validate"

    v = json.loads((run / "validate/report.json").read_text())
    assert v["train"] == 12 and v["eval"] == 3 and v["balanced"]
    m = json.loads((run / "load/model.json").read_text())
    assert m["backend"] == "cpu" and 0 < m["parameters"]["trainable"] < m["parameters"]["total"]
    checkpoints = sorted(p.name for p in (run / "sft/checkpoints").glob("checkpoint-*"))
    assert checkpoints, "a resumable checkpoint is written"
    log = [json.loads(x) for x in (run / "sft/log.jsonl").read_text().splitlines()]
    assert any("loss" in e for e in log)
    e = json.loads((run / "evaluate/report.json").read_text())
    for row in ("base", "tuned"):
        for k in ("tool_selection", "arguments", "refusal", "schema_valid", "parse_failures"):
            assert k in e[row]
    assert e["tuned"]["turns"] == 4
    assert e["reply_budget"]["max_new_tokens"] == 8 and e["reply_budget"]["configured"] == 8
    assert e["reply_budget"]["references_longer_than_budget"] >= 1  # 8 tokens cut every call short: it says so
    for row in ("base", "tuned"):  # the forgetting check: BFCL questions with their own tools, base and tuned
        cats = e["forgetting"][row]["categories"]
        assert {c: v["total"] for c, v in cats.items()} == {"irrelevance": 2, "simple_python": 2, "multiple": 2}
        assert all(v["accuracy"] <= v["selection"] for v in cats.values())  # a right call selected its function
    sample = [json.loads(x) for x in (run / "evaluate/bfcl_sample.jsonl").read_text().splitlines()]
    assert len(sample) == 12 and {x["model"] for x in sample} == {"base", "tuned"}
    assert "## Forgetting check: a BFCL sample" in (run / "evaluate/report.md").read_text()
    side = json.loads((run / "export/stage.json").read_text())
    check = side["figures"]["merge_check"]
    assert check["prompts"] == 3 and not check["mismatches"]
    # The exported template is byte-identical to the one training rendered with.
    from pipeline.lib.template import TEMPLATES

    assert (run / "export/chat_template.jinja").read_bytes() == (TEMPLATES / "hermes.jinja").read_bytes()

    # A second pass with nothing changed redoes nothing.
    capsys.readouterr()
    for module in (validate, count, load, sft, export, evaluate):
        stage(module, args)
    assert capsys.readouterr().out.count("nothing to do") == 6


def test_llama_recipe_stops_before_loading_without_gpu(capsys):
    from pipeline.commands import preflight

    with pytest.raises(SystemExit) as exc:
        preflight.main(["--recipe", "llama31-8b-tools"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "NVIDIA GPU" in err and "Traceback" not in err


def test_lora_top_layers_adapts_only_the_top_blocks(tiny_model_dir):
    """`lora.top_layers=1` on a 2-block model: adapters on block 1 only, so no gradient reaches block 0."""
    import torch

    from pipeline.lib.backends import load_base
    from pipeline.lib.recipe import load as load_recipe

    recipe = load_recipe("smollm2-135m-tools", [f"model={tiny_model_dir}", "cpu_bf16=false", "lora.top_layers=1"])
    model, _ = load_base(recipe, "cpu")
    adapted = {n.split(".layers.")[1].split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert adapted == {"1"}
    out = model(input_ids=torch.tensor([[1, 2, 3, 4]]), labels=torch.tensor([[1, 2, 3, 4]]))
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    full, _ = load_base(load_recipe("smollm2-135m-tools", [f"model={tiny_model_dir}", "cpu_bf16=false"]), "cpu")
    assert sum(p.numel() for p in full.parameters() if p.requires_grad) == 2 * sum(
        p.numel() for p in model.parameters() if p.requires_grad)


def test_the_reply_budget_lets_every_reference_reply_be_generated_whole(smol_dir):
    """eval.max_new_tokens=0 sizes generation to the data: a call cut off at a fixed limit does not parse
    and scores as a wrong tool, whatever the model chose (the old fixed 80 cut the bundled data's
    parallel calls: up to ~150 tokens)."""
    from transformers import AutoTokenizer

    from pipeline.lib.conversations import BUNDLED, bundled_tools, read_records
    from pipeline.lib.template import TEMPLATES, Chat, detect_format

    tok = AutoTokenizer.from_pretrained(smol_dir)
    template = (TEMPLATES / "hermes.jinja").read_text()
    chat = Chat(tok, template, detect_format(template))
    items = evaluate.eval_items(read_records(BUNDLED / "eval.jsonl", bundled_tools())[:60], chat.fmt, None)
    lengths = [scoring.reference_tokens(chat, it) for it in items]
    budget, info = evaluate.reply_budget(chat, items, 0)
    assert budget == max(lengths) + evaluate.SLACK and info["references_longer_than_budget"] == 0
    assert info["longest_reference"] == max(lengths) > 80
    # The reply counted is exactly what the template appends to the prompt: the call and the end of turn.
    parallel = next(it for it in items if len(it["reference"]["calls"]) == 2)
    n = scoring.reference_tokens(chat, parallel)
    prompt = chat.render_adapted(parallel["messages"], parallel["tools"], add_generation_prompt=True)
    full = chat.render_adapted(parallel["messages"] + [parallel["reference"]["message"]], parallel["tools"])
    assert n == len(tok(full, add_special_tokens=False)["input_ids"]) - len(tok(prompt, add_special_tokens=False)["input_ids"])
    fixed, info = evaluate.reply_budget(chat, items, 80)
    assert fixed == 80 and info["references_longer_than_budget"] == sum(1 for x in lengths if x > 80) > 0


def test_a_stage_reruns_when_code_it_imports_or_the_template_changes(tiny_model_dir, runs_dir, tmp_path, monkeypatch, capsys):
    """The count stage's fingerprint covers every project module it loads (the loss mask lives in
    lib/mask.py) and the template text, but only the recipe keys that change its tokens: a new learning
    rate does not re-tokenize the data."""
    import shutil

    from pipeline.lib import common
    from pipeline.lib.recipe import ROOT

    args = tiny_args(tiny_model_dir)
    for module in (validate, count):
        stage(module, args)
    capsys.readouterr()
    stage(count, args + ["train.lr=1e-4", "train.epochs=3", "gpu=h100"])
    out = capsys.readouterr().out
    assert "nothing to do" in out
    schedule = json.loads((runs_dir / "e2e" / "count" / "schedule.json").read_text())
    assert schedule["gpu"] == "h100" and schedule["epochs"] == 3  # the estimate follows the recipe anyway

    scratch = tmp_path / "pipeline"
    shutil.copytree(ROOT / "pipeline", scratch, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(common, "PACKAGE", scratch)
    stage(count, args)
    assert "nothing to do" in capsys.readouterr().out  # a byte-identical copy: same fingerprint
    for edited in ("lib/mask.py", "templates/hermes.jinja"):
        with open(scratch / edited, "a") as f:
            f.write("\n")
        stage(count, args)
        assert "nothing to do" not in capsys.readouterr().out, f"an edit of {edited} must re-run count"
    (scratch / "lib" / "generation.py").write_text((scratch / "lib" / "generation.py").read_text() + "\n")
    stage(count, args)
    assert "nothing to do" in capsys.readouterr().out  # a module count never imports does not


def test_a_stage_whose_outputs_changed_is_run_again(tiny_model_dir, runs_dir, capsys):
    """Up to date means: the sidecar's fingerprint matches and every output it recorded is the file it
    wrote. A half-written or edited output (another run's crash, a hand edit) makes the stage run again."""
    args = tiny_args(tiny_model_dir)
    stage(validate, args)
    train = runs_dir / "e2e" / "validate" / "train.jsonl"
    whole = train.read_text()
    train.write_text("".join(whole.splitlines(keepends=True)[:5]))  # what a crash half-way would leave
    capsys.readouterr()
    stage(validate, args)
    assert "nothing to do" not in capsys.readouterr().out
    assert train.read_text() == whole
    side = json.loads((runs_dir / "e2e" / "validate" / "stage.json").read_text())
    assert set(side["outputs"]) >= {"train.jsonl", "eval.jsonl", "report.json"}
    stage(validate, args)
    assert "nothing to do" in capsys.readouterr().out


def test_one_process_at_a_time_per_run_folder(tiny_model_dir, runs_dir, tmp_path):
    """A second stage on a RUN that another process holds stops at once and names the holder."""
    import os
    import sys

    from pipeline.lib.common import run_lock

    args = tiny_args(tiny_model_dir)
    err = tmp_path / "child.err"
    with run_lock(runs_dir / "e2e", "sft"):
        child = os.fork()
        if child == 0:  # another process: its validate must refuse, not write
            try:
                sys.stderr = open(err, "w")
                stage(validate, args)
                os._exit(0)
            except SystemExit as e:
                os._exit(e.code if isinstance(e.code, int) else 1)
        _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 2
    assert f"is in use by pid {os.getpid()} (stage sft" in err.read_text()
    assert not (runs_dir / "e2e" / "validate").exists()
    stage(validate, args)  # once free, it runs
    assert (runs_dir / "e2e" / "validate" / "stage.json").is_file()


def test_temporary_folders_have_names_of_their_own(tmp_path):
    from pipeline.lib.common import atomic_dir

    target = tmp_path / "export"
    with atomic_dir(target, leftovers=False) as a, atomic_dir(target, leftovers=False) as b:
        assert a != b and a.is_dir() and b.is_dir()
        (a / "x").write_text("a")
        (b / "x").write_text("b")
    assert (target / "x").read_text() in ("a", "b") and not list(tmp_path.glob(".export.*"))


def test_artifacts_follow_the_umask(tmp_path):
    """Files and folders written atomically get the modes open() and mkdir() would give (a server running
    as another user can read the export), not the 0600/0700 of temporary files."""
    import os
    import stat

    from pipeline.lib.common import atomic_dir, write_text_atomic

    old = os.umask(0o022)
    try:
        f = write_text_atomic(tmp_path / "a.json", "{}")
        with atomic_dir(tmp_path / "d") as d:
            (d / "x").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
