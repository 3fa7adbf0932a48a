"""The quickstart path end to end through the CLI, on a tiny config: train -> resume -> sample -> info."""
import json
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from noisecraft.cli import main

    from conftest import TINY

    out = tmp_path_factory.mktemp("run") / "digits"
    assert main(["train", "--preset", "digits", "--out", str(out), "--steps", "4", "--no-progress", *TINY,
                 "--train.final_figures=true"]) == 0
    return out


def test_train_writes_a_complete_run_directory(run_dir):
    for name in ("config.json", "log.jsonl", "loss.png", "forward_process.png", "reverse_process.png",
                 "samples/final.png", "checkpoints/best.safetensors", "checkpoints/best.json",
                 "checkpoints/last.safetensors", "checkpoints/last.json"):
        assert (run_dir / name).is_file(), name
    from conftest import strict_json

    from noisecraft.config import Config

    # Strict JSON everywhere, though the digits preset's guidance interval is open-ended (2, inf).
    cfg = strict_json((run_dir / "config.json").read_text())
    assert cfg["sample"]["guidance_interval"] == [2.0, "inf"]
    assert Config.load(run_dir / "config.json").sample.guidance_interval == (2.0, float("inf"))
    assert cfg["model"]["num_classes"] == 10 and cfg["model"]["in_channels"] == 1 and cfg["model"]["unet"]["base_channels"] == 8
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [2, 4]
    assert any("val_loss" in r for r in records)
    meta = strict_json((run_dir / "checkpoints/last.json").read_text())
    assert meta["step"] == 4 and meta["config"] == cfg
    summary = strict_json((run_dir / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["train_seconds"] > 0 and summary["params"] > 1000


def test_resume_continues_step_count(cli, run_dir, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    code, out, err = cli("train", "--out", run, "--steps", "6", "--resume", "--no-progress")
    assert code == 0, err
    meta = json.loads((run / "checkpoints/last.json").read_text())
    assert meta["step"] == 6
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [2, 4, 6]  # continued, not restarted


def test_sample_writes_pngs_grid_and_labels(cli, run_dir, tmp_path):
    from PIL import Image

    code, out, err = cli("sample", "--checkpoint", run_dir, "--class", "7", "--n", "5", "--steps", "3",
                         "--out", tmp_path / "seven")
    assert code == 0, err
    pngs = sorted((tmp_path / "seven").glob("0*.png"))
    assert len(pngs) == 5 and (tmp_path / "seven" / "grid.png").is_file()
    assert Image.open(pngs[0]).size == (28, 28)
    assert json.loads((tmp_path / "seven" / "labels.json").read_text()) == [7] * 5
    # a checkpoint file works as well as a run directory, and the same seed gives the same images
    code, _, err = cli("sample", "--checkpoint", run_dir / "checkpoints" / "last.safetensors", "--class", "7",
                       "--n", "5", "--steps", "3", "--out", tmp_path / "again")
    assert code == 0, err
    again = sorted((tmp_path / "again").glob("0*.png"))
    assert [p.name for p in again] == [p.name for p in pngs]
    for a, b in zip(pngs, again, strict=True):  # identical pixels (the PNG's text chunk names the checkpoint path)
        assert Image.open(a).tobytes() == Image.open(b).tobytes(), a.name


def test_info_reports_parameters_and_config(cli, run_dir):
    code, out, err = cli("info", "--checkpoint", run_dir)
    assert code == 0, err
    info = json.loads(out)
    assert info["parameters"] > 1000 and info["step"] == 4 and info["config"]["data"]["dataset"] == "digits"
    assert info["task"] == "diffusion" and info["parts"] == ["net", "net_ema"]


@pytest.mark.parametrize("argv, needle", [
    (["train", "--dataset", "mnist", "--out", "{tmp}/m"], "--data-root"),
    (["train", "--dataset", "cifar10", "--data-root", "{tmp}/nothing", "--out", "{tmp}/c"], "not found"),
    (["train", "--dataset", "folder", "--data-root", "{tmp}/nothing", "--out", "{tmp}/f"], "not found"),
    (["train", "--out", "{tmp}/x", "--train.lr=fast"], "train.lr expects a number"),
    (["train", "--out", "{tmp}/x", "--train.steps=-3"], "train.steps must be > 0"),
    (["train", "--out", "{tmp}/x", "--model.width=3"], "unknown config key"),
    (["train", "--out", "{tmp}/x", "--preset", "huge"], "invalid choice"),
    (["sample", "--checkpoint", "{tmp}/missing", "--out", "{tmp}/s"], "checkpoint not found"),
    (["info", "--checkpoint", "{tmp}/missing.safetensors"], "checkpoint not found"),
])
def test_user_errors_are_one_line_with_exit_code_2(cli, tmp_path, argv, needle):
    code, out, err = cli(*[a.format(tmp=tmp_path) for a in argv])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err


def test_class_out_of_range(cli, run_dir, tmp_path):
    code, out, err = cli("sample", "--checkpoint", run_dir, "--class", "10", "--out", tmp_path / "s")
    assert code == 2 and err.startswith("error: class 10 is out of range") and len(err.strip().splitlines()) == 1


def test_console_script_error_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "noisecraft", "sample", "--checkpoint", str(tmp_path / "none"),
                           "--out", str(tmp_path / "s")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.startswith("error:")
