"""Training re-runs you can trust: the output directory's identity (config minus logging and
saving cadence, data, base model, chat template), a finished run that does nothing, a run
that died writing its outputs that does not train past max_steps, --restart."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from distillery.cli import main
from distillery.training.runinfo import model_identity

from tests.test_training import conversations, run_cli, train_args, write_data
from tests.tiny_models import build_tiny_lm

# 16 short conversations pack into more than 3 rows of 256 tokens at batch 1: max_steps=3
# ends mid-epoch, where the Trainer, resumed from the last step, trains one step more
STEPS = ("mode=full", "batch_size=1", "grad_accum=1", "max_steps=3", "save_steps=2")


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("lm") / "chatml")


def _steps(out: Path) -> int:
    return int(json.loads((out / "metrics.json").read_text())["steps"])


def test_a_finished_run_rerun_with_the_same_command_does_nothing(
    lm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_data(tmp_path / "d.jsonl", conversations(16))
    out = tmp_path / "run"
    assert run_cli(lm, data, out, *STEPS) == 0
    assert _steps(out) == 3
    weights = out / "model" / "model.safetensors"
    before = (weights.stat().st_mtime_ns, (out / "metrics.json").read_text())
    capsys.readouterr()
    for _ in range(2):  # used to train one more step each time: 3 -> 4 -> 5
        assert run_cli(lm, data, out, *STEPS) == 0
        said = capsys.readouterr().out
        assert f"{out}: already finished (3 steps, same settings and inputs); nothing to do" in said
    assert (weights.stat().st_mtime_ns, (out / "metrics.json").read_text()) == before
    assert not (out / "checkpoint-4").exists()
    # logging and checkpoint cadence are not part of what the run is
    assert run_cli(lm, data, out, *STEPS, "logging_steps=7", "save_steps=9") == 0
    assert "nothing to do" in capsys.readouterr().out
    lines = [json.loads(x) for x in (out / "invocations.jsonl").read_text().splitlines()]
    assert [x["exit_code"] for x in lines] == [0, 0, 0, 0]
    assert [bool(x["counters"].get("already_finished")) for x in lines] == [False, True, True, True]


def test_a_run_that_died_writing_its_outputs_does_not_train_past_max_steps(
    lm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_data(tmp_path / "d.jsonl", conversations(16))
    out = tmp_path / "run"
    assert run_cli(lm, data, out, *STEPS) == 0
    straight = json.loads((out / "metrics.json").read_text())
    for name in ("finished.json", "metrics.json"):  # as if killed while merging / writing
        (out / name).unlink()
    capsys.readouterr()
    assert run_cli(lm, data, out, *STEPS) == 0
    said = capsys.readouterr().out
    assert f"not resuming from {out / 'checkpoint-3'}" in said
    assert f"resuming from {out / 'checkpoint-2'}" in said
    again = json.loads((out / "metrics.json").read_text())
    assert again["steps"] == 3 and not (out / "checkpoint-4").exists()
    assert again["tokens"] == straight["tokens"]
    assert again["train_loss"] == pytest.approx(straight["train_loss"], abs=1e-4)


def test_a_run_that_died_writing_its_outputs_at_an_epoch_end_resumes_there(
    lm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_data(tmp_path / "d.jsonl", conversations(16))
    out = tmp_path / "run"
    epoch = ("mode=full", "batch_size=2", "grad_accum=1", "epochs=1", "save_steps=1000")
    assert run_cli(lm, data, out, *epoch) == 0
    straight = json.loads((out / "metrics.json").read_text())
    (final,) = out.glob("checkpoint-*")  # only the end-of-training checkpoint
    for name in ("finished.json", "metrics.json"):
        (out / name).unlink()
    capsys.readouterr()
    assert run_cli(lm, data, out, *epoch) == 0
    assert f"resuming from {final}" in capsys.readouterr().out  # nothing left to retrain
    again = json.loads((out / "metrics.json").read_text())
    assert again["steps"] == straight["steps"] == int(final.name.split("-")[1])
    assert again["invocations"][-1]["tokens"] == 0  # no step trained again
    assert again["tokens"] == straight["tokens"]
    assert again["train_loss"] == pytest.approx(straight["train_loss"], abs=1e-6)


def test_other_settings_or_inputs_stop_with_one_line_and_restart_moves_them_aside(
    lm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_data(tmp_path / "d.jsonl", conversations(16))
    out = tmp_path / "run"
    assert run_cli(lm, data, out, *STEPS, "learning_rate=1e-3") == 0

    def files() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name[0] != "."}

    kept = files()
    capsys.readouterr()

    assert run_cli(lm, data, out, *STEPS, "learning_rate=2e-3") == 2
    err = capsys.readouterr().err.strip()
    assert "learning_rate: 0.001 -> 0.002" in err and "--restart" in err
    assert len(err.splitlines()) == 1

    other = write_data(tmp_path / "other.jsonl", conversations(16, seed=9))
    assert run_cli(lm, other, out, *STEPS, "learning_rate=1e-3") == 2
    err = capsys.readouterr().err
    assert "(data:" in err and "inputs.data: sha256:" in err
    # nothing was touched: no new config, eval split or metrics beside the old model
    assert files() == kept

    args = ["--restart", "eval_fraction=0", *STEPS, "learning_rate=2e-3"]
    assert main(train_args(lm, other, out, 256, *args)) == 0
    said = capsys.readouterr().out
    moved = Path(said.split("moved the previous outputs of ")[1].split(" to ")[1].split()[0])
    assert (moved / "metrics.json").read_bytes() == kept["metrics.json"]
    assert "learning_rate: 0.002" in (out / "config.yaml").read_text()
    identity = json.loads((out / "identity.json").read_text())
    assert identity["config"]["learning_rate"] == 0.002 and _steps(out) == 3


def test_a_different_base_model_or_template_is_a_different_run(
    lm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_data(tmp_path / "d.jsonl", conversations(16))
    out = tmp_path / "run"
    assert run_cli(lm, data, out, *STEPS) == 0
    other_lm = build_tiny_lm(tmp_path / "other-lm", seed=1)  # same files, other weights
    capsys.readouterr()
    assert run_cli(other_lm, data, out, *STEPS) == 2
    err = capsys.readouterr().err
    assert "inputs.model: sha256:" in err
    template = tmp_path / "t.jinja"
    template.write_text((lm / "chat_template.jinja").read_text() + "\n")
    assert run_cli(lm, data, out, *STEPS, f"chat_template={template}") == 2
    assert "inputs.chat_template: sha256:" in capsys.readouterr().err


def test_model_identity_reads_small_files_whole_and_large_ones_by_stat(
    lm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from distillery import model_identity as identity

    copy = tmp_path / "copy"
    shutil.copytree(lm, copy)
    assert model_identity(str(copy)) == model_identity(str(lm))  # content, not paths or mtimes
    cfg = json.loads((copy / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-5
    (copy / "config.json").write_text(json.dumps(cfg))
    assert model_identity(str(copy)) != model_identity(str(lm))

    monkeypatch.setattr(identity, "FULL_DIGEST_BYTES", 1024)  # every weight file is "large"
    weights = copy / "model.safetensors"
    first = model_identity(str(copy))
    assert model_identity(str(copy)) == first
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # rewritten in place
    assert model_identity(str(copy)) != first
    blobs = tmp_path / "hub" / "blobs"  # a Hugging Face cache snapshot: links to blobs
    blobs.mkdir(parents=True)
    shutil.move(str(weights), blobs / "0123abcd")
    weights.symlink_to(blobs / "0123abcd")
    linked = model_identity(str(copy))
    os.utime(blobs / "0123abcd", ns=(stat.st_atime_ns, stat.st_mtime_ns + 5 * 10**9))
    assert model_identity(str(copy)) == linked  # the blob's name is its content hash
    assert model_identity("org/not-cached-model") == "org/not-cached-model"


def test_prepare_only_and_train_share_the_run_directory(lm: Path, tmp_path: Path) -> None:
    data = write_data(tmp_path / "d.jsonl", conversations(16))
    out = tmp_path / "run"
    assert main(train_args(lm, data, out, 256, "--prepare-only", "eval_fraction=0", *STEPS)) == 0
    assert run_cli(lm, data, out, *STEPS) == 0  # the same identity: prepared rows are its own
    assert _steps(out) == 3


def test_a_crashed_invocation_is_listed_with_how_far_it_got(
    lm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distillery.training.trainer import trainer_class

    cls = trainer_class()
    inner = cls.training_step

    def crash_at_step_3(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.state.global_step == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return inner(self, *args, **kwargs)

    data = write_data(tmp_path / "d.jsonl", conversations(16))
    out = tmp_path / "run"
    monkeypatch.setattr(cls, "training_step", crash_at_step_3)
    with pytest.raises(RuntimeError, match="simulated"):
        run_cli(lm, data, out, *STEPS)
    monkeypatch.setattr(cls, "training_step", inner)
    assert run_cli(lm, data, out, *STEPS) == 0  # resumes from checkpoint-2
    crashed, done = json.loads((out / "metrics.json").read_text())["invocations"]
    assert crashed["exit_code"] is None and crashed["last_step"] == 2
    assert done["resumed_from"] == "checkpoint-2" and done["last_step"] == 3


def test_named_chat_templates_have_a_stable_identity() -> None:
    from distillery.training.runinfo import _template_text

    named = {"default": "{{ x }}", "tool_use": "{{ y }}"}
    assert _template_text(named) == _template_text(dict(reversed(named.items())))
    assert _template_text(None) == "" and _template_text("{{ x }}") == "{{ x }}"
