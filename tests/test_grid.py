"""X/Y/Z comparison grids: A1111's value forms, the order of cells and of their drawing, batching across cells
(the same pixels as each cell drawn alone, one network call per step), bad input refused before sampling, and the
CLI end to end on a tiny run."""
from __future__ import annotations

import json

import pytest
import torch

from noisecraft.config import preset
from noisecraft.diffusion import Denoiser
from noisecraft.errors import UserError
from noisecraft.grid import GridSpec, parse_axis, plan_grid, stream_grid
from noisecraft.models import build_model
from noisecraft.pipeline import Pipeline, SamplingOptions


def tiny_pipeline(seed: int = 0) -> Pipeline:
    """An untrained tiny class-conditional (10 classes) pipeline on 28x28 digits."""
    torch.manual_seed(seed)
    cfg = preset("digits")
    cfg.model.in_channels, cfg.model.image_size, cfg.model.num_classes = 1, 28, 10
    cfg.model.unet.base_channels, cfg.model.unet.channel_mult, cfg.model.head_channels = 8, (1, 2), 8
    den = Denoiser(build_model(cfg.model), cfg.diffusion).eval()
    return Pipeline(denoiser=den, config=cfg, class_names=[str(i) for i in range(10)], device="cpu")


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def values(spec: str):
    return list(parse_axis(spec).values)


@pytest.mark.parametrize("spec, expected", [
    ("steps=5,10,20", [5, 10, 20]),
    ("steps=1-5", [1, 2, 3, 4, 5]),
    ("steps=1-10 (+3)", [1, 4, 7, 10]),
    ("steps=1-10(+2)", [1, 3, 5, 7, 9]),
    ("steps=10-1 (-4)", [10, 6, 2]),
    ("steps=5-2", [5, 4, 3, 2]),
    ("steps=1-10 [4]", [1, 4, 7, 10]),
    ("steps=2-3, 8, 12-16 (+4)", [2, 3, 8, 12, 16]),
    ("guidance=1-4[4]", [1.0, 2.0, 3.0, 4.0]),
    ("guidance=0-1 [5]", [0.0, 0.25, 0.5, 0.75, 1.0]),
    ("guidance=0.5-2 (+0.5)", [0.5, 1.0, 1.5, 2.0]),
    ("guidance=0-0.3 (+0.1)", [0.0, 0.1, 0.2, 0.3]),
    ("guidance=-1.5, 2.5", [-1.5, 2.5]),
    ("seed=0-2", [0, 1, 2]),
    ("sampler=ddim, dpmpp-2m", ["ddim", "dpmpp-2m"]),
    ("guidance_interval=0.3:5, all", [(0.3, 5.0), ()]),
    ('prompt_sr=bold, "thin, light"', ["bold", "thin, light"]),
])
def test_axis_values_take_a1111s_list_range_step_and_count_forms(spec, expected):
    assert values(spec) == expected


@pytest.mark.parametrize("spec, needle", [
    ("stepz=1,2", "grid axis must be one of sampler, steps"),
    ("sampler=ddim,plms", "grid axis sampler must be one of ddpm"),
    ("steps=0,5", "grid axis steps: value 0 (from '0') must be in [1,"),
    ("steps=1.5-3", "grid axis steps: '1.5-3' must range over whole numbers"),
    ("steps=ten", "grid axis steps: 'ten' is not a whole number or a range"),
    ("steps=1-5 (-1)", "grid axis steps: the step of '1-5 (-1)' never reaches 5 from 1"),
    ("steps=1-100000", "grid axis steps: '1-100000' gives 100000 values, at most 1024"),
    ("guidance=nan", "grid axis guidance: value nan (from 'nan') must be in"),
    ("strength=0,0.5", "grid axis strength: value 0 (from '0') must be in (0, 1]"),
    ("guidance_interval=5:1", "grid axis guidance_interval: '5:1' must be LO:HI"),
    ("steps=5,5", "grid axis steps: a value is repeated"),
    ("steps", "grid axis 'steps' must be NAME=VALUES"),
])
def test_a_bad_axis_names_the_axis_and_value(spec, needle):
    with pytest.raises(UserError, match=None) as e:
        parse_axis(spec)
    assert needle in str(e.value)


def test_cells_run_x_fastest_and_draw_in_groups_with_the_slow_axis_outermost(pipe):
    other = tiny_pipeline(seed=1)
    spec = GridSpec("a", x=parse_axis("guidance=0,2"), y=parse_axis("steps=2,3"), z=parse_axis("checkpoint=a,b"),
                    n=2, class_index=1)
    plan = plan_grid(spec, {"a": pipe, "b": other}.__getitem__)
    assert [c.position for c in plan.cells] == [(z, y, x) for z in range(2) for y in range(2) for x in range(2)]
    assert [c.index for c in plan.cells] == list(range(8))
    assert [(c.values["checkpoint"], c.values["steps"], c.values["guidance"]) for c in plan.cells[:3]] == [
        ("a", 2, 0.0), ("a", 2, 2.0), ("a", 3, 0.0)]
    # cells differing only in guidance share a group; checkpoint a's groups all come before b's
    assert plan.groups == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert plan.total_steps == 2 * (2 + 3)
    # the run on the innermost axis is still drawn outermost: each run's cells together
    inner = plan_grid(GridSpec("a", x=parse_axis("checkpoint=a,b"), y=parse_axis("steps=2,3"), n=1, class_index=1),
                      {"a": pipe, "b": other}.__getitem__)
    assert inner.groups == [[0], [2], [1], [3]]


def test_every_cell_draws_the_same_seeds_unless_seed_is_an_axis(pipe):
    plan = plan_grid(GridSpec("a", x=parse_axis("steps=2,3"), y=parse_axis("seed=0,100"), n=3, class_index=2),
                     lambda _: pipe)
    assert {c.request.seeds for c in plan.cells if c.values["seed"] == 0} == {(0, 1, 2)}
    assert {c.request.seeds for c in plan.cells if c.values["seed"] == 100} == {(100, 101, 102)}


def test_batched_cells_give_the_pixels_each_cell_gives_alone_in_one_network_call_per_step(pipe):
    spec = GridSpec("a", x=parse_axis("guidance=0,1.5,3"), y=parse_axis("class=2,7"),
                    z=parse_axis("guidance_interval=all,0.5:5"), n=4,
                    options=SamplingOptions(sampler="dpmpp-2m", steps=3, precision="fp32"))
    plan = plan_grid(spec, lambda _: pipe)
    assert len(plan.groups) == 1  # guidance, class and interval all share the network's calls
    calls = []
    hook = pipe.denoiser.net.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    try:
        cells = [ev.cell for ev in stream_grid(plan) if ev.kind == "cell"]
    finally:
        hook.remove()
    assert len(calls) == 3 * 2  # 12 cells x 4 images = 48 images: two batches of 32 guided (64-image calls)
    assert sorted(c.index for c in cells) == list(range(12))
    for cell in cells:
        alone = pipe.generate(request=cell.request)
        assert torch.equal(cell.images, alone), cell.values


def test_cells_that_differ_in_sampler_or_steps_are_drawn_apart_and_match_their_own_draw(pipe):
    spec = GridSpec("a", x=parse_axis("steps=2,4"), y=parse_axis("sampler=ddim,euler"), n=2, class_index=5,
                    options=SamplingOptions(guidance=1.0, precision="fp32"))
    plan = plan_grid(spec, lambda _: pipe)
    assert len(plan.groups) == 4
    events = list(stream_grid(plan))
    assert [ev.done for ev in events if ev.kind == "step"] == list(range(1, plan.total_steps + 1))
    for ev in events:
        if ev.kind == "cell":
            assert torch.equal(ev.cell.images, pipe.generate(request=ev.cell.request))


def test_a_cancelled_grid_stops_after_the_current_step(pipe):
    import threading

    flag = threading.Event()
    plan = plan_grid(GridSpec("a", x=parse_axis("steps=3,4"), n=2, class_index=1), lambda _: pipe)
    seen = []
    for ev in stream_grid(plan, cancel=flag):
        seen.append(ev.kind)
        flag.set()
    assert seen == ["step"]


@pytest.mark.parametrize("spec, needle", [
    ({"x": "class=3,12"}, "grid axis class=12: class 12 is out of range"),
    ({"x": "strength=0.5,1"}, "grid axis strength=0.5: a strength axis needs an image to edit"),
    ({"x": "prompt_sr=bold,thin"}, "grid axis prompt_sr=bold: 'bold' (the first value) is not in the prompt"),
    ({"x": "steps=1-32", "y": "seed=1-33"}, "the grid has 1056 cells (32 x 33 x 1); at most 1024"),
    ({"x": "steps=1-30", "y": "seed=1-30", "n": 100}, "(86.3 megapixels); at most 64"),
])
def test_bad_grids_are_refused_before_any_sampling(pipe, spec, needle):
    calls = []
    hook = pipe.denoiser.net.register_forward_hook(lambda *a: calls.append(1))
    axes = {k: parse_axis(v) for k, v in spec.items() if k in "xyz"}
    try:
        with pytest.raises(UserError) as e:
            plan_grid(GridSpec("a", n=spec.get("n", 2), **axes), lambda _: pipe)
    finally:
        hook.remove()
    assert needle in str(e.value) and calls == []


def test_a_checkpoint_axis_names_the_run_that_does_not_load(pipe):
    def load(path):
        if path == "missing":
            raise UserError("no run at missing")
        return pipe

    with pytest.raises(UserError, match="grid axis checkpoint=missing: no run at missing"):
        plan_grid(GridSpec("a", x=parse_axis("checkpoint=a,missing"), n=1), load)


def test_grid_cli_writes_a_labelled_sheet_cell_pngs_with_parameters_and_cells_json(tiny_runs, cli, tmp_path):
    from PIL import Image

    from noisecraft.imageinfo import parse_parameters, read_parameters

    run = tiny_runs / "digits"
    code, _out, err = cli("grid", "--checkpoint", run, "--x", "steps=1,2", "--y", "guidance=0-2 [3]",
                         "--z", "sampler=ddim,euler", "--class", 3, "--n", 4, "--seed", 7, "--device", "cpu",
                         "--out", tmp_path / "g")
    assert code == 0, err
    data = json.loads((tmp_path / "g" / "cells.json").read_text())
    assert data["shape"] == {"z": 2, "y": 3, "x": 2} and len(data["cells"]) == 12
    assert data["axes"]["y"] == {"name": "guidance", "values": [0.0, 1.0, 2.0], "labels": ["0", "1", "2"]}
    last = data["cells"][-1]
    assert last["position"] == {"z": 1, "y": 2, "x": 1}
    assert last["values"] == {"sampler": "euler", "guidance": "2", "steps": "2"}
    params = parse_parameters(read_parameters(tmp_path / "g" / last["file"]))
    assert (params["sampler"], params["steps"], params["guidance"], params["seed"], params["class"],
            params["batch_size"]) == ("euler", 2, 2.0, 7, 3, 4)
    with Image.open(tmp_path / "g" / "grid.png") as sheet:
        assert sheet.size[0] > 2 * 56 and sheet.size[1] > 2 * 3 * 56


def test_grid_cli_errors_are_one_line(tiny_runs, cli, tmp_path):
    run = tiny_runs / "digits"
    for argv, needle in ((["--x", "stepz=1,2"], "grid axis must be one of"),
                         (["--x", "sampler=ddim,plms"], "'plms'"),
                         (["--x", "class=1,99"], "grid axis class=99"),
                         ([], "a grid needs at least one axis")):
        code, _out, err = cli("grid", "--checkpoint", run, "--device", "cpu", "--out", tmp_path / "e", *argv)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "e").exists()


def test_prompt_search_and_replace_cells_share_a_batch_on_a_text_run(tmp_path_factory):
    from conftest import TINY
    from test_text import HAS_TEXT, tiny_encoder

    if not HAS_TEXT:
        pytest.skip('the text extra is not installed: pip install -e ".[text]"')
    from noisecraft.cli import main
    from noisecraft.pipeline import load_pipeline

    tmp = tmp_path_factory.mktemp("grid_text")
    enc = tiny_encoder(tmp / "encoder")
    assert main(["train", "--preset", "digits", "--out", str(tmp / "run"), "--steps", "2", "--no-progress", *TINY,
                 "--data.captions=on", f"--model.text_encoder={enc}", "--model.text_max_tokens=12",
                 "--model.unet.cross_attn_resolutions=14", "--train.final_figures=false"]) == 0
    pipe = load_pipeline(tmp / "run", device="cpu")
    spec = GridSpec("run", x=parse_axis("prompt_sr=bold,thin"), y=parse_axis("guidance=0,2"), n=2,
                    prompt="a bold seven", options=SamplingOptions(steps=2, precision="fp32"))
    plan = plan_grid(spec, lambda _: pipe)
    assert [c.request.conditions for c in plan.cells] == [("a bold seven",) * 2, ("a thin seven",) * 2] * 2
    assert len(plan.groups) == 1
    for ev in stream_grid(plan):
        if ev.kind == "cell":
            assert torch.equal(ev.cell.images, pipe.generate(request=ev.cell.request))


def test_a_strength_axis_edits_the_image_at_each_strength_drawn_apart(pipe):
    image = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    spec = GridSpec("a", x=parse_axis("strength=0.3,0.6"), y=parse_axis("guidance=0,1"), n=2, class_index=4,
                    image=image, options=SamplingOptions(steps=4, precision="fp32"))
    plan = plan_grid(spec, lambda _: pipe)
    assert [c.request.options.strength for c in plan.cells] == [0.3, 0.6, 0.3, 0.6]
    assert plan.groups == [[0, 2], [1, 3]]  # a strength is its own noise levels; guidance shares them
    for ev in stream_grid(plan):
        if ev.kind == "cell":
            assert torch.equal(ev.cell.images, pipe.generate(request=ev.cell.request))
