"""Low-rank adapters: `data.classes`, `noisecraft finetune` (a task in the training loop, only the adapter trained,
prior preservation), the adapter in peft's layout, and adapters loaded, mixed and recorded at sampling."""
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from test_text import HAS_TEXT, tiny_encoder, train_text_run

from noisecraft.config import DataConfig
from noisecraft.data import load_dataset
from noisecraft.errors import UserError

needs_text = pytest.mark.skipif(not HAS_TEXT, reason='the text extra is not installed: pip install -e ".[text]"')


def nines_folder(root: Path, n: int = 10, caption: str = "a nine") -> Path:
    """n real nines from the digits' train split as PNGs with metadata.jsonl captions."""
    from PIL import Image

    data = load_dataset(DataConfig(), "train")
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, img in enumerate(data.images[data.labels == 9][:n]):
        Image.fromarray(img[0].numpy()).save(root / f"{i}.png")
        lines.append(json.dumps({"file_name": f"{i}.png", "text": caption}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory):
    """A tiny text base trained without nines, and a 12-step fine-tuning of it on ten captioned nines."""
    if not HAS_TEXT:
        pytest.skip('the text extra is not installed: pip install -e ".[text]"')
    from noisecraft.cli import main

    tmp = tmp_path_factory.mktemp("lora")
    enc = tiny_encoder(tmp / "encoder")
    base = tmp / "base"
    train_text_run(base, enc, "--data.classes=0,1,2,3,4,5,6,7,8")
    folder = nines_folder(tmp / "nines")
    ft = tmp / "nines-run"
    assert main(["finetune", "--checkpoint", str(base), "--data-root", str(folder), "--out", str(ft), "--steps", "12",
                 *FT_FLAGS]) == 0
    return base, ft, folder


FT_FLAGS = ["--rank", "2", "--no-progress", "--train.batch_size=4", "--train.warmup_steps=0", "--train.lr=0.01",
            "--finetune.prior_images=4", "--sample.steps=2", "--train.log_every=1", "--train.val_every=3",
            "--train.ckpt_every=3", "--finetune.licence=CC BY-SA 3.0", "--train.final_figures=false"]


def test_data_classes_keeps_only_those_classes_with_their_numbering():
    data = load_dataset(DataConfig(classes=("3", "9")), "train")
    assert set(data.labels.tolist()) == {3, 9} and len(data.class_names) == 10
    with pytest.raises(UserError, match="data.classes names x, not a class of digits"):
        load_dataset(DataConfig(classes=("x",)), "train")


@needs_text
def test_finetune_saves_an_adapter_in_peft_layout_with_its_base_recorded(lora_runs):
    from noisecraft.rundir import content_hash

    _base, ft, _ = lora_runs
    adapter = ft / "adapter"
    assert {p.name for p in adapter.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors",
                                                   "noisecraft_adapter.json"}
    record = json.loads((adapter / "noisecraft_adapter.json").read_text())
    base_file = Path(record["base"])
    assert record["base_sha256"] == content_hash([base_file]) and record["trigger"] == "a nine"
    assert record["licence"] == "CC BY-SA 3.0" and record["rank"] == 2
    assert len(record["prior_prompts"]) == 9 and "a nine" not in record["prior_prompts"]  # the base's digits, kept
    assert (adapter / "adapter_model.safetensors").stat().st_size < 0.25 * base_file.stat().st_size


def _pipe(lora_runs):
    from noisecraft.pipeline import load_pipeline

    base, _, _ = lora_runs
    return load_pipeline(base, "cpu")


@needs_text
def test_the_adapter_loads_with_peft_directly_and_matches_the_merged_network(lora_runs):
    import copy

    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    _, ft, _ = lora_runs
    pipe = _pipe(lora_runs)
    net = copy.deepcopy(pipe.denoiser.net)
    inject_adapter_in_model(LoraConfig.from_pretrained(str(ft / "adapter")), net)
    result = set_peft_model_state_dict(net, load_file(str(ft / "adapter" / "adapter_model.safetensors")))
    assert not result.unexpected_keys
    pipe.load_lora(ft)
    pipe.adapters.apply(pipe.adapters.active())
    x, sigma = torch.randn(2, 1, 28, 28), torch.tensor([0.5, 2.0])
    cond = pipe.condition(["a nine", "a handwritten two"])
    with torch.no_grad():
        merged = pipe.denoiser.net(x, sigma, **cond)
        assert torch.allclose(net(x, sigma, **cond), merged, atol=1e-5)


@needs_text
def test_finetune_trains_only_the_adapter_and_its_loss_falls(lora_runs):
    from noisecraft.checkpoint import load_checkpoint

    _, ft, _ = lora_runs
    ckpt = load_checkpoint(ft, "last")
    assert sorted(ckpt.meta["modules"]) == ["lora", "lora_ema"]
    assert all(".lora_A." in k or ".lora_B." in k for k in ckpt.tensors if not k.startswith("optimizer."))
    records = [json.loads(line) for line in (ft / "log.jsonl").read_text().splitlines()]
    val = [r["val_loss"] for r in records if r["kind"] == "val"]
    assert len([r for r in records if r["kind"] == "train"]) == 12 and val[-1] < val[0]


@needs_text
def test_a_stopped_finetune_resumes_to_the_same_adapter(lora_runs, cli, tmp_path):
    from noisecraft.checkpoint import load_checkpoint

    base, ft, folder = lora_runs
    half = tmp_path / "half"
    assert cli("finetune", "--checkpoint", base, "--data-root", folder, "--out", half, "--steps", "6", *FT_FLAGS)[0] == 0
    code, _, err = cli("finetune", "--out", half, "--resume", "--steps", "12", "--no-progress")
    assert code == 0, err
    a, b = load_checkpoint(ft, "last"), load_checkpoint(half, "last")
    assert a.step == b.step == 12 and a.tensors.keys() == b.tensors.keys()
    for k in a.tensors:
        assert torch.equal(a.tensors[k], b.tensors[k]), k


@needs_text
def test_scale_zero_and_no_adapter_draw_the_base_pixels_and_two_adapters_mix(lora_runs, tmp_path):
    _, ft, _ = lora_runs
    pipe = _pipe(lora_runs)
    kw = {'n': 2, 'prompt': "a nine", 'steps': 2, 'seed': 3}
    base = pipe.generate(**kw)
    pipe.load_lora(ft, name="nines", scale=1.0)
    shutil.copytree(ft / "adapter", tmp_path / "again")
    pipe.load_lora(tmp_path / "again", name="again", scale=0.5)
    both = pipe.generate(**kw)
    pipe.set_loras({"nines": 0.0, "again": 0.0})
    assert torch.equal(pipe.generate(**kw), base)
    pipe.set_loras({"nines": 1.5})
    mixed = pipe.generate(**kw).int()  # 1.5 x one = 1 x one + 0.5 x the same adapter, up to rounding
    assert (mixed - both.int()).abs().max() <= 1 and not torch.equal(both, base)
    assert torch.equal(pipe.generate(**{**kw, "prompt": "a nine <lora:nines:0> <lora:again:0>"}), base)
    pipe.unload_lora()
    assert torch.equal(pipe.generate(**kw), base)


@needs_text
def test_sample_with_lora_names_each_adapter_with_sha256_and_scale_in_the_png(lora_runs, cli, tmp_path):
    from noisecraft.imageinfo import parse_parameters, read_parameters
    from noisecraft.rundir import content_hash

    base, ft, _ = lora_runs
    code, _out, err = cli("sample", "--checkpoint", base, "--out", tmp_path / "s", "--n", "2", "--steps", "2",
                         "--device", "cpu", "--lora", f"{ft}:0.8", "--prompt", "a nine <lora:nines-run:0.5>")
    assert code == 0, err
    text = read_parameters(tmp_path / "s" / "00000.png")
    sha = content_hash([ft / "adapter" / "adapter_model.safetensors"])
    assert text.splitlines()[0] == "a nine" and parse_parameters(text)["lora"] == f"nines-run:{sha}:0.5"


def test_a_grid_over_the_adapters_scale_draws_the_base_at_zero_and_the_adapter_at_one(lora_runs, cli, tmp_path):
    """The lora_scale axis sets the loaded adapter's scale per cell; cells at 0 and 1 equal plain sampling without
    and with the adapter (same seeds), and each cell's PNG names its scale."""
    from PIL import Image

    from noisecraft.imageinfo import parse_parameters, read_parameters

    base, ft, _ = lora_runs
    common = ["--n", "2", "--steps", "2", "--device", "cpu", "--prompt", "a nine"]
    code, _out, err = cli("grid", "--checkpoint", base, "--x", "lora_scale=0,1", "--lora", str(ft),
                          "--out", tmp_path / "g", *common)
    assert code == 0, err
    for scale, lora in ((0, []), (1, ["--lora", str(ft)])):  # one cell each: without the adapter, and at scale 1
        code, _out, err = cli("grid", "--checkpoint", base, "--x", "seed=0", "--out", tmp_path / f"s{scale}", *lora,
                              *common)
        assert code == 0, err
    cells = sorted((tmp_path / "g" / "cells").glob("*.png"))
    assert len(cells) == 2
    for cell, scale in zip(cells, (0, 1)):
        alone = next((tmp_path / f"s{scale}" / "cells").glob("*.png"))
        assert Image.open(cell).tobytes() == Image.open(alone).tobytes()
        assert parse_parameters(read_parameters(cell))["lora"].endswith(f":{scale:g}")
    assert Image.open(cells[0]).tobytes() != Image.open(cells[1]).tobytes()
    code, _out, err = cli("grid", "--checkpoint", base, "--x", "lora_scale=0,1", "--out", tmp_path / "h", *common)
    assert code == 2 and "lora_scale" in err and "--lora" in err


@needs_text
def test_edit_takes_lora_and_records_it(lora_runs, cli, tmp_path):
    from noisecraft.imageinfo import parse_parameters, read_parameters

    base, ft, folder = lora_runs
    code, _, err = cli("edit", "--checkpoint", base, "--image", folder / "0.png", "--out", tmp_path / "e", "--n", "1",
                       "--steps", "2", "--device", "cpu", "--lora", f"{ft}:0.5", "--prompt", "a nine")
    assert code == 0, err
    assert parse_parameters(read_parameters(tmp_path / "e" / "00000.png"))["lora"].endswith(":0.5")


@needs_text
@pytest.mark.parametrize("flags, message", [
    (["--lora", "{ft}:nan"], "scale of --lora .* must be a number in \\[-2, 2\\], got nan"),
    (["--lora", "{ft}:2.5"], "must be a number in \\[-2, 2\\], got 2.5"),
    (["--lora", "{tmp}"], "is not a LoRA adapter in peft's layout"),
    (["--lora", "{ft}", "--prompt", "a nine <lora:other:1>"], "no adapter named 'other' is loaded"),
])
def test_bad_lora_input_is_one_error_line_and_nothing_drawn(lora_runs, cli, tmp_path, flags, message):
    base, ft, _ = lora_runs
    flags = [f.format(ft=ft, tmp=tmp_path) for f in flags]
    code, _out, err = cli("sample", "--checkpoint", base, "--out", tmp_path / "s", "--n", "1", "--steps", "2",
                         "--device", "cpu", *flags)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0 and len(lines) == 1 and re.search(message, lines[0]), err
    assert not (tmp_path / "s").exists()


@needs_text
def test_an_adapter_of_another_base_or_truncated_is_refused(lora_runs, tmp_path):
    _, ft, _ = lora_runs
    pipe = _pipe(lora_runs)
    other = shutil.copytree(ft / "adapter", tmp_path / "other")
    record = json.loads((other / "noisecraft_adapter.json").read_text())
    (other / "noisecraft_adapter.json").write_text(json.dumps({**record, "base_sha256": "ab" * 32}))
    with pytest.raises(UserError, match=f"sha256 {'ab' * 32}, but this checkpoint \\({record['base_sha256']}\\)"):
        pipe.load_lora(other)
    cut = shutil.copytree(ft / "adapter", tmp_path / "cut")
    data = (cut / "adapter_model.safetensors").read_bytes()
    (cut / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a readable safetensors file, perhaps truncated"):
        pipe.load_lora(cut)


@needs_text
def test_finetune_refuses_a_bad_rank_and_a_folder_without_images(lora_runs, cli, tmp_path):
    base, _, folder = lora_runs
    (tmp_path / "empty").mkdir()
    for k, (flags, message) in enumerate(((["--rank", "0"], "--rank must be > 0"),
                           (["--rank", "4096"], "rank must be between 1 and the narrowest adapted layer's width"),
                           (["--data-root", tmp_path / "empty"], "no images|holds 0 image"))):
        args = ["--data-root", folder, *flags] if flags[0] != "--data-root" else flags
        code, _, err = cli("finetune", "--checkpoint", base, "--out", tmp_path / f"ft{k}", "--steps", "1",
                           "--no-progress", *args)
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert code != 0 and len(lines) == 1 and re.search(message, lines[0]), err
    images = sorted(p.name for p in Path(folder).iterdir())
    code, _, err = cli("finetune", "--checkpoint", base, "--data-root", folder, "--out", folder, "--overwrite",
                       "--no-progress")
    assert code == 2 and "--out must be another folder than --data-root" in err
    assert sorted(p.name for p in Path(folder).iterdir()) == images  # nothing of the folder touched


@needs_text
def test_a_finetuning_draws_its_sample_grid_and_explain_draws_the_rest_with_its_adapter(lora_runs, cli, tmp_path):
    from PIL import Image

    from noisecraft.captions import class_texts
    from noisecraft.train.finetune import GRID_ROWS

    base = lora_runs[0]
    folder = nines_folder(tmp_path / "nines")  # ten nines, each in its own wording: more captions than rows
    wordings = class_texts("9", digit=True)
    lines = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    (folder / "metadata.jsonl").write_text("".join(json.dumps({**m, "text": wordings[i]}) + "\n"
                                                   for i, m in enumerate(lines)))
    ft = tmp_path / "ft"
    flags = [f for f in FT_FLAGS if f != "--train.final_figures=false"] + ["--train.final_figures=true"]  # base: off
    assert cli("finetune", "--checkpoint", base, "--data-root", folder, "--out", ft, "--steps", "2", *flags)[0] == 0
    grid = Image.open(ft / "samples" / "final.png")
    assert (ft / "loss.png").is_file() and round(grid.height / (grid.width / 8)) == GRID_ROWS  # rows of 8 samples
    assert not [p.name for p in ft.glob("*_process.png")] + [p.name for p in ft.glob("cross_attention.png")]
    code, _out, err = cli("explain", "--checkpoint", ft, "--out", tmp_path / "x", "--figures", "reverse", "--n", "1",
                          "--steps", "2", "--device", "cpu", "--prompt", "a nine")
    assert code == 0, err
    index = json.loads((tmp_path / "x" / "explain.json").read_text())
    record = json.loads((ft / "adapter" / "noisecraft_adapter.json").read_text())
    assert (tmp_path / "x" / "reverse.png").is_file()
    assert index["adapters"] == [{"name": "ft", "sha256": record["sha256"], "scale": 1.0}]


@needs_text
def test_explain_draws_the_adapter_at_scales_zero_half_and_one(lora_runs, cli, tmp_path):
    base, ft, _ = lora_runs
    code, _out, err = cli("explain", "--checkpoint", base, "--out", tmp_path / "x", "--figures", "lora", "--n", "2",
                         "--steps", "2", "--device", "cpu", "--lora", ft, "--prompt", "a nine")
    assert code == 0, err
    index = json.loads((tmp_path / "x" / "explain.json").read_text())
    entry = index["figures"][0] if isinstance(index["figures"], list) else index["figures"]["lora"]
    assert (tmp_path / "x" / "lora.png").is_file() and "nines-run" in json.dumps(entry)


@needs_text
def test_the_server_lists_a_models_adapters_and_draws_with_their_scales(lora_runs, tmp_path):
    pytest.importorskip("fastapi")
    import io

    import numpy as np
    from fastapi.testclient import TestClient
    from PIL import Image

    from noisecraft.imageinfo import parse_parameters
    from noisecraft.pipeline import load_pipeline
    from noisecraft.serve import ServeConfig, create_app

    base, ft, _ = lora_runs
    runs = tmp_path / "runs"
    shutil.copytree(base, runs / "base")  # the adapter names base's checkpoint by sha256, wherever it lies
    with TestClient(create_app(ServeConfig(runs=runs, device="cpu", loras=(str(ft),)))) as c:
        [m] = c.get("/api/models").json()["models"]
        assert [a["name"] for a in m["loras"]] == ["nines-run"] and m["loras"][0]["trigger"] == "a nine"
        body = {"model": "base", "prompt": "a nine", "n": 2, "seed": 3, "steps": 2, "loras": {"nines-run": 0.7}}
        job = c.post("/api/generate", json=body).json()
        with c.stream("GET", f"/api/jobs/{job['id']}/events") as r:
            assert "event: done" in r.read().decode()
        status = c.get(f"/api/jobs/{job['id']}").json()
        got = [np.asarray(Image.open(io.BytesIO(c.get(u).content))) for u in status["images"]]
        want = load_pipeline(base, "cpu", loras=[(ft, 0.7)]).generate(2, prompt="a nine", seed=3, steps=2)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b[0].numpy())
        params = parse_parameters(Image.open(io.BytesIO(c.get(status["images"][0]).content)).text["parameters"])
        assert params["lora"].startswith("nines-run:") and params["lora"].endswith(":0.7")
        for bad, detail in (({**body, "loras": {"nines-run": 3}}, None), ({**body, "loras": {"other": 1}},
                            "no adapter named 'other'"), ({**body, "prompt": "a nine <lora:other:1>"}, "'other'")):
            r = c.post("/api/generate", json=bad)
            assert r.status_code == 422 and (detail is None or detail in str(r.json()["detail"])), r.text


def test_prior_batch_sets_how_many_prior_images_join_each_batch(tiny_runs, cli, tmp_path, monkeypatch):
    from PIL import Image

    import noisecraft.train.finetune as finetune

    data = load_dataset(DataConfig(), "train")
    (tmp_path / "data" / "3").mkdir(parents=True)
    for i, img in enumerate(data.images[data.labels == 3][:6]):
        Image.fromarray(img[0].numpy()).save(tmp_path / "data" / "3" / f"{i}.png")
    seen, draws = [], finetune.global_batch_draws
    monkeypatch.setattr(finetune, "global_batch_draws",
                        lambda d, x, n, rank: seen.append((len(x), n)) or draws(d, x, n, rank))
    flags = ["--data-root", tmp_path / "data", "--steps", "1", "--rank", "2", "--no-progress", "--train.batch_size=4",
             "--finetune.prior_images=4", "--train.num_threads=1", "--train.final_figures=false", "--overwrite"]
    for prior_batch, rows in ((0, 8), (2, 6)):  # 4 new images and as many of the prior, or 2
        code, _, err = cli("finetune", "--checkpoint", tiny_runs / "digits", "--out", tmp_path / "ft", *flags,
                           f"--finetune.prior_batch={prior_batch}")
        assert code == 0, err
        assert seen[-1] == (rows, rows)
    code, _, err = cli("finetune", "--checkpoint", tiny_runs / "digits", "--out", tmp_path / "ft", *flags,
                       "--finetune.prior_batch=-1")
    assert code != 0 and "prior_batch" in err and "must be >= 0" in err


def test_a_class_conditional_run_adapts_from_class_sub_folders(tiny_runs, cli, tmp_path):
    from PIL import Image

    from noisecraft.pipeline import load_pipeline

    data = load_dataset(DataConfig(), "train")
    for digit in (3, 7):
        (tmp_path / "data" / str(digit)).mkdir(parents=True)
        for i, img in enumerate(data.images[data.labels == digit][:6]):
            Image.fromarray(img[0].numpy()).save(tmp_path / "data" / str(digit) / f"{i}.png")
    code, _, err = cli("finetune", "--checkpoint", tiny_runs / "digits", "--data-root", tmp_path / "data", "--out",
                       tmp_path / "ft", "--steps", "2", "--rank", "2", "--no-progress", "--train.batch_size=4",
                       "--finetune.prior_images=4", "--train.num_threads=1", "--train.final_figures=false")
    assert code == 0, err
    record = json.loads((tmp_path / "ft" / "adapter" / "noisecraft_adapter.json").read_text())
    # the base's classes by name, but for the two the folder teaches (their upright base images would pull back)
    assert record["prior_prompts"] == [str(d) for d in range(10) if d not in (3, 7)]
    pipe = load_pipeline(tiny_runs / "digits", "cpu")
    base = pipe.generate(n=2, class_index=3, steps=2)
    pipe.load_lora(tmp_path / "ft", scale=0.0)
    assert torch.equal(pipe.generate(n=2, class_index=3, steps=2), base)


def test_a_fine_tuning_takes_the_adapters_defaults_not_the_finetune_section_saved_in_the_base(tiny_runs, monkeypatch):
    import noisecraft.checkpoint
    from noisecraft.config import FinetuneConfig
    from noisecraft.train.finetune import finetune_config

    ckpt = noisecraft.checkpoint.load_checkpoint(tiny_runs / "digits", "best")
    ckpt.config.finetune.targets, ckpt.config.finetune.prior_images = "attention", 7  # an older run's saved defaults
    monkeypatch.setattr(noisecraft.checkpoint, "load_checkpoint", lambda *a, **k: ckpt)
    cfg = finetune_config(tiny_runs / "digits", tiny_runs)
    assert (cfg.finetune.targets, cfg.finetune.prior_images) == (FinetuneConfig.targets, FinetuneConfig.prior_images)
    assert cfg.train.num_threads == 0 and cfg.finetune.base == str(ckpt.path)
