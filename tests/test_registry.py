"""One registry per concept: config validation, the CLI's choices and its --help all come from noisecraft.registry
(and config.PRESETS), unknown names fail with one line that lists the valid ones, and every target imports."""
from __future__ import annotations

import re
import subprocess
import sys
import types

import pytest

from noisecraft import registry
from noisecraft.config import PRESETS, Config, apply_overrides, preset
from noisecraft.errors import UserError
from noisecraft.registry import (BEST_METRICS, DATASETS, LOSS_WEIGHTINGS, PRECISIONS, PREDICTIONS, SAMPLERS,
                                 SCHEDULES, TASKS)

# config field -> the registry whose names it takes
FIELDS = {
    "data.dataset": DATASETS,
    "diffusion.schedule": SCHEDULES,
    "diffusion.prediction": PREDICTIONS,
    "diffusion.loss_weighting": LOSS_WEIGHTINGS,
    "sample.sampler": SAMPLERS,
    "sample.precision": PRECISIONS,
    "train.precision": PRECISIONS,
    "train.best_metric": BEST_METRICS,
    "train.task": TASKS,
}
# (subcommand, flag) -> the registry whose names the flag takes
FLAGS = {
    ("sample", "--sampler"): SAMPLERS,
    ("sample", "--precision"): PRECISIONS,
    ("evaluate", "--sampler"): SAMPLERS,
    ("evaluate", "--precision"): PRECISIONS,
    ("train", "--preset"): PRESETS,
    ("train", "--dataset"): DATASETS,
    ("train-classifier", "--dataset"): DATASETS,
}


def _lists_all(message: str, reg) -> bool:
    return all(f"'{n}'" in message or re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", message) for n in reg)


@pytest.mark.parametrize("field", FIELDS)
def test_config_accepts_exactly_the_registry_names(field):
    reg = FIELDS[field]
    for name in reg:
        cfg = apply_overrides(Config(), {field: name, "train.eval_every": 1})  # eval_every: for the eval metrics
        section, key = field.split(".")
        assert getattr(getattr(cfg, section), key) == name
    with pytest.raises(UserError) as e:
        apply_overrides(Config(), {field: "nope"})
    assert str(e.value) == f"{field} must be one of {', '.join(reg.names())}; got 'nope'"


def test_config_defaults_and_presets_use_registered_names():
    for cfg in [Config()] + [preset(name) for name in PRESETS]:
        for field, reg in FIELDS.items():
            section, key = field.split(".")
            assert getattr(getattr(cfg, section), key) in reg, field


def test_config_file_with_an_unknown_sampler_names_the_field():
    d = Config().to_dict()
    d["sample"]["sampler"] = "plms"
    with pytest.raises(UserError, match=r"sample.sampler must be one of ddpm, ddim, dpmpp-2m, consistency, euler, heun; got 'plms'"):
        Config.from_dict(d)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(UserError) as e:
        preset("imagenet")
    assert str(e.value) == f"preset must be one of {', '.join(PRESETS.names())}; got 'imagenet'"


def _help(subcommand: str, capsys) -> str:
    from noisecraft.cli import make_parser

    with pytest.raises(SystemExit):
        make_parser().parse_args([subcommand, "--help"])
    return capsys.readouterr().out


@pytest.mark.parametrize("subcommand, flag", FLAGS)
def test_cli_choices_and_help_come_from_the_registry(subcommand, flag, capsys):
    reg = FLAGS[subcommand, flag]
    text = _help(subcommand, capsys)
    choices = re.search(rf"{flag} \{{([^}}]*)\}}", text)
    assert choices is not None, text
    assert tuple(choices.group(1).split(",")) == reg.names()
    flat = re.sub(r"-\s+", "-", " ".join(text.split()))  # argparse wraps lines, also after hyphens
    for name in reg:
        assert f"{name}: " in flat, (flag, name)


@pytest.mark.parametrize("argv, reg", [
    (["sample", "--checkpoint", "run", "--out", "o", "--sampler", "plms"], SAMPLERS),
    (["evaluate", "--checkpoint", "run", "--sampler", "plms"], SAMPLERS),
    (["sample", "--checkpoint", "run", "--out", "o", "--precision", "fp16"], PRECISIONS),
    (["train", "--out", "o", "--preset", "imagenet"], PRESETS),
    (["train", "--out", "o", "--dataset", "imagenet"], DATASETS),
    (["train-classifier", "--dataset", "imagenet"], DATASETS),
])
def test_cli_unknown_name_is_one_error_line_listing_the_choices(cli, argv, reg):
    code, out, err = cli(*argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and _lists_all(err, reg), err


@pytest.mark.parametrize("override, reg", [
    ("--sample.sampler=plms", SAMPLERS),
    ("--data.dataset=imagenet", DATASETS),
    ("--train.precision=fp16", PRECISIONS),
    ("--sample.precision=fp16", PRECISIONS),
    ("--train.best_metric=fid", BEST_METRICS),
])
def test_cli_config_override_with_an_unknown_name_fails_before_training(cli, monkeypatch, tmp_path, override, reg):
    def train(*args, **kwargs):
        raise AssertionError("an invalid config must stop before training starts")

    # The trainer is never reached: a stand-in keeps this test about the config, whatever state train is in.
    monkeypatch.setitem(sys.modules, "noisecraft.train", types.SimpleNamespace(train=train))
    code, out, err = cli("train", "--out", tmp_path / "run", override)
    field = override[2:].split("=")[0]
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"error: {field} must be one of ") and _lists_all(err, reg), err


REGISTRIES = {name: reg for name, reg in vars(registry).items() if isinstance(reg, registry.Registry)}
REGISTRIES["config.PRESETS"] = PRESETS


@pytest.mark.parametrize("name", REGISTRIES)
def test_every_target_imports_and_every_name_has_help(name):
    reg = REGISTRIES[name]
    for entry in (reg.get(n) for n in reg):
        if entry.target is not None:
            assert callable(entry.load()), (name, entry.name)
        assert entry.help, (name, entry.name)


def test_presets_build_a_fresh_valid_config_each_time():
    for name in PRESETS:
        a, b = preset(name), preset(name)
        assert a is not b and a.to_dict() == b.to_dict()
        if a.autoencoder.latent:  # a latent preset names no autoencoder: the user gives one (--autoencoder)
            with pytest.raises(UserError, match="--autoencoder PATH"):
                a.validate()
            a.autoencoder.path = "runs/ae"
        a.validate()


def test_the_quickstart_is_flow_and_the_other_digits_presets_keep_their_recipe():
    # Issue 26 made `digits` rectified flow on batches of 32; the presets derived from the earlier quickstart (now
    # `digits-v`) must not change with it: their measured figures were taken on those configs.
    v, q = preset("digits-v").to_dict(), preset("digits").to_dict()
    assert (v["diffusion"]["prediction"], v["train"]["steps"], v["train"]["batch_size"]) == ("v", 700, 64)
    assert (q["diffusion"]["prediction"], q["train"]["batch_size"]) == ("flow", 32)
    assert {k: q[k] for k in ("data", "model", "sample")} == {k: v[k] for k in ("data", "model", "sample")}
    flow = preset("digits-flow").to_dict()
    assert {k: flow[k] for k in flow if k != "diffusion"} == {k: v[k] for k in v if k != "diffusion"}
    assert flow["diffusion"] == q["diffusion"]
    for name in ("digits-edm", "digits64", "digits64-latent"):
        assert preset(name).train.batch_size == 64 and preset(name).train.warmup_steps == 100, name
    assert preset("digits-edm").train.steps == 700 and preset("digits64-latent").diffusion.prediction == "v"


def test_sampler_facts_count_the_network_calls():
    import torch

    sigmas = torch.tensor([80.0, 10.0, 2.0, 0.5, 0.0])  # 4 steps ending at sigma = 0
    calls = []

    def counting(x, sigma, cond=None):
        calls.append(1)
        return torch.zeros_like(x)

    for name in SAMPLERS:
        entry = SAMPLERS.get(name)
        assert entry.grid in ("timesteps", "karras", "consistency")
        calls.clear()
        out = entry.load()(counting, torch.zeros(1, 1, 2, 2), sigmas)
        for _ in out if hasattr(out, "__next__") else ():  # a sampler that yields its steps runs when iterated
            pass
        assert len(calls) == entry.calls_per_step * (len(sigmas) - 2) + entry.final_step_calls, name


def test_best_metric_facts():
    assert [m for m in BEST_METRICS if BEST_METRICS.get(m).higher_is_better] == ["class_accuracy", "precision",
                                                                                  "recall"]
    assert [m for m in BEST_METRICS if not BEST_METRICS.get(m).needs_eval] == ["val_loss"]


def test_registry_and_config_do_not_import_torch():
    code = "import sys, noisecraft.config, noisecraft.registry; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
