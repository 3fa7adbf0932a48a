"""The pipeline: loading a run (the v1 fixture gives exactly its recorded images), option resolution against the
checkpoint's defaults, streaming events in order with previews, cancellation that stops the network calls, and
`generate` as the stream run to its end."""
from __future__ import annotations

import itertools
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from noisecraft.config import preset
from noisecraft.diffusion import Denoiser
from noisecraft.errors import UserError
from noisecraft.models import build_model
from noisecraft.pipeline import Pipeline, SamplingOptions, load_pipeline
from noisecraft.precision import use_bf16

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline(FIXTURES / "v1_run", device="cpu")


def count_calls(pipe: Pipeline) -> list:
    """Record the batch size of every network call the pipeline's denoiser makes."""
    calls = []
    pipe.denoiser.net.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    return calls


def tiny_pipeline(num_classes: int) -> Pipeline:
    cfg = preset("digits")
    cfg.model.in_channels, cfg.model.image_size, cfg.model.num_classes = 1, 28, num_classes
    cfg.model.unet.base_channels, cfg.model.unet.channel_mult, cfg.model.head_channels = 8, (1, 2), 8
    den = Denoiser(build_model(cfg.model), cfg.diffusion).eval()
    names = [str(i) for i in range(num_classes)]
    return Pipeline(denoiser=den, config=cfg, class_names=names, device="cpu")


def test_generate_on_the_v1_fixture_gives_its_recorded_images(pipe):
    assert pipe.sample_shape == (1, 28, 28) and pipe.num_classes == 10 and pipe.step == 2
    assert pipe.class_names == [str(i) for i in range(10)] and pipe.path.endswith("best.safetensors")
    images = pipe.generate(n=4, class_index=3, sampler="ddim", steps=5, guidance=1.0, guidance_interval=(), seed=0,
                           precision="fp32")
    expected = np.load(FIXTURES / "v1_run_ddim5_class3_seed0.npy")
    assert images.dtype == torch.uint8 and tuple(images.shape) == expected.shape
    assert np.abs(images.numpy().astype(int) - expected.astype(int)).max() <= 1


def test_the_sampling_pages_python_snippet_runs_and_streams_what_generate_draws(capsys):
    """docs/concepts/sampling.md's "From Python" block, run as printed on a real run (the v1 fixture for
    "runs/digits"): it prints one line per step, 1..10 of 10, then the images; what it streamed is what `generate`
    draws for the same request."""
    page = (Path(__file__).parents[1] / "docs" / "concepts" / "sampling.md").read_text()
    code = re.search(r"## From Python\s+```python\n(.*?)```", page, re.DOTALL).group(1)
    assert 'load_pipeline("runs/digits")' in code
    ns = {}
    exec(code.replace('"runs/digits"', repr(str(FIXTURES / "v1_run"))), ns)  # noqa: S102 - the page's own code
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [(kind, step, total) for kind, step, total, _ in lines] == [("step", str(k), "10") for k in range(1, 11)] \
        + [("images", "10", "10")]
    assert ns["images"].shape == (16, 1, 28, 28) and ns["images"].dtype == torch.uint8
    pipe, req = ns["pipe"], ns["req"]
    events = list(pipe.stream(request=req, preview_every=1))
    assert all(ev.preview.shape == (4, 1, 28, 28) for ev in events if ev.kind == "step")
    assert torch.equal(pipe.generate(request=req), events[-1].images)


def test_resolve_fills_the_checkpoints_defaults_and_checks_choices(pipe):
    s = pipe.config.sample  # the fixture's: ddim, 2 steps, w = 1 above sigma 2, clipped, auto precision
    opts = pipe.resolve()
    assert (opts.sampler, opts.steps, opts.guidance, opts.guidance_interval, opts.seed, opts.clip_x0) == (
        s.sampler, s.steps, s.guidance, tuple(s.guidance_interval), 0, s.clip_x0)
    assert opts.batch_size == 32  # guided, on a CPU
    assert opts.precision == ("bf16" if use_bf16("cpu", "auto") else "fp32")  # auto, resolved for this machine
    assert pipe.resolve(precision="fp32").precision == "fp32"
    mine = pipe.resolve(SamplingOptions(sampler="heun", guidance=0.0), steps=7)
    assert (mine.sampler, mine.steps, mine.guidance, mine.batch_size) == ("heun", 7, 0.0, 64)  # unguided: 64
    assert pipe.resolve(guidance_interval=()).guidance_interval == ()  # () = guide at every step
    assert pipe.resolve(mine) == mine  # resolving twice changes nothing
    with pytest.raises(UserError, match="sampler must be one of ddpm, ddim"):
        pipe.resolve(sampler="plms")
    for bad, needle in ((dict(steps=0), "steps must be > 0"), (dict(guidance=float("nan")), "finite"),
                        (dict(batch_size=0), "batch_size must be > 0"), (dict(precision="fp16"), "precision")):
        with pytest.raises(UserError, match=needle):
            pipe.resolve(**bad)


def test_requests_of_classes_and_labels(pipe):
    assert pipe.request(4, 3)[1].tolist() == [3] * 4
    assert pipe.request(5, [1, 2])[1].tolist() == [1, 2, 1, 2, 1]
    assert pipe.request(12)[1].tolist() == [i % 10 for i in range(12)]  # balanced
    assert pipe.request(labels=torch.tensor([4, 5]))[0] == 2
    for kwargs, needle in ((dict(n=2, class_index=10), "out of range"), (dict(n=0), "n must be > 0"),
                           (dict(n=3, labels=torch.tensor([1, 2])), "labels must be 3 classes"),
                           (dict(n=1, class_index=1, labels=torch.tensor([1])), "not both")):
        with pytest.raises(UserError, match=needle):
            pipe.request(**kwargs)


def test_stream_events_in_order_and_generate_is_the_stream(pipe):
    kw = dict(n=5, class_index=[1, 7], sampler="dpmpp-2m", steps=3, seed=4, batch_size=2, precision="fp32")
    events = list(pipe.stream(**kw))
    per_batch = [("step", 1), ("step", 2), ("step", 3), ("images", 3)]
    assert [(ev.batch, ev.kind, ev.step) for ev in events] == [(b, *e) for b in range(3) for e in per_batch]
    assert all(ev.batches == 3 and ev.total == 3 for ev in events)
    assert [ev.indices for ev in events if ev.kind == "images"] == [[0, 1], [2, 3], [4]]
    first = [ev for ev in events if ev.batch == 0]
    assert [ev.sigma_next for ev in first[:-1]] == [ev.sigma for ev in first[1:-1]] + [0.0]
    assert first[0].sigma > first[1].sigma > first[2].sigma > 0
    for a, b in zip(first, first[1:-1]):  # each step starts where the last one ended (the same tensor)
        assert b.x_t is a.x
    assert all(ev.preview is None and ev.x.dtype == torch.float32 and ev.x0.shape == (len(ev.indices), 1, 28, 28)
               for ev in events if ev.kind == "step")
    images = torch.cat([ev.images for ev in events if ev.kind == "images"])
    assert images.dtype == torch.uint8 and torch.equal(images, pipe.generate(**kw))
    assert torch.equal(images, pipe.generate(**{**kw, "batch_size": 5}))  # image i uses seed + i


def test_previews_every_k_steps(pipe):
    events = list(pipe.stream(n=3, class_index=2, steps=5, preview_every=2, batch_size=2, precision="fp32"))
    steps = [ev for ev in events if ev.kind == "step"]
    assert [ev.step for ev in steps if ev.preview is not None] == [2, 4, 2, 4]
    for ev in steps:
        if ev.preview is not None:
            assert ev.preview.dtype == torch.uint8 and ev.preview.shape == (len(ev.indices), 1, 28, 28)
            assert torch.equal(ev.preview, pipe.decode(ev.x0))


@pytest.mark.parametrize("how", ["flag", "close"])
def test_cancelling_stops_the_network_calls(how):
    pipe = tiny_pipeline(3)
    calls = count_calls(pipe)
    cancel = threading.Event()
    stream = pipe.stream(n=4, class_index=1, steps=6, guidance=1.0, guidance_interval=(), batch_size=2,
                         cancel=cancel)
    k = 3
    seen = list(itertools.islice(stream, k))
    assert [ev.step for ev in seen] == [1, 2, 3] and calls == [4, 4, 4]  # one guided call (2 x 2 rows) a step
    if how == "flag":
        cancel.set()
        assert list(stream) == []  # it ends at once ...
    else:
        stream.close()
    assert len(calls) == k  # ... and no network call was made after the k-th event
    cancel.set()
    assert list(pipe.stream(n=2, class_index=0, steps=6, cancel=cancel)) == [] and len(calls) == k


def test_cancel_between_batches():
    pipe = tiny_pipeline(3)
    calls = count_calls(pipe)
    cancel = threading.Event()
    events = []
    for ev in pipe.stream(n=4, class_index=1, steps=2, guidance=0.0, batch_size=2, cancel=cancel):
        events.append(ev)
        if ev.kind == "images":
            cancel.set()
    assert [(ev.batch, ev.kind) for ev in events] == [(0, "step"), (0, "step"), (0, "images")] and len(calls) == 2


def test_in_memory_and_unconditional_pipelines():
    cond = tiny_pipeline(3)
    out = cond.generate(n=3, labels=torch.tensor([0, 2, 1]), steps=2)
    assert out.dtype == torch.uint8 and out.shape == (3, 1, 28, 28)
    uncond = tiny_pipeline(0)
    assert cond.kind == "class" and uncond.kind == "unconditional"
    assert uncond.request(3)[1] is None and uncond.generate(n=2, steps=2, guidance=1.0).shape == (2, 1, 28, 28)
    with pytest.raises(UserError, match="unconditional"):
        uncond.generate(n=2, class_index=1)
    with pytest.raises(UserError, match="unconditional"):
        uncond.generate(labels=torch.tensor([0]))


def test_import_noisecraft_does_not_import_torch():
    code = ("import sys, noisecraft; assert 'torch' not in sys.modules; "
            "from noisecraft import load_pipeline, Pipeline; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_request_is_resolved_once_and_frozen(pipe):
    import dataclasses

    req = pipe.prepare(5, [1, 2], steps=3, seed=10)
    assert req.n == 5 and req.seeds == (10, 11, 12, 13, 14) and req.labels.tolist() == [1, 2, 1, 2, 1]
    assert req.options == pipe.resolve(steps=3, seed=10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.seeds = (0,)
    assert torch.equal(pipe.generate(request=req), pipe.generate(5, [1, 2], steps=3, seed=10))
    own = pipe.prepare(2, 1, seeds=[12, 14], steps=3, seed=10)  # image i's seed given: as images 2 and 4 above
    diff = pipe.generate(request=own).int() - pipe.generate(request=req)[[2, 4]].int()
    assert diff.abs().max() <= 1  # the same noise; only the batch's size differs (rounding)
    merged = type(req).merged([pipe.prepare(1, 4, seed=7, steps=3), pipe.prepare(2, 5, seed=1, steps=3)])
    assert merged.seeds == (7, 1, 2) and merged.labels.tolist() == [4, 5, 5] and merged.options.batch_size == 3


def test_a_guidance_interval_that_guides_no_step_is_refused(pipe):
    for bad in ((5.0, 1.0), (2.0, 2.0), (-1.0, 3.0)):
        with pytest.raises(UserError, match="lo < hi"):
            pipe.prepare(2, 3, guidance=1.0, guidance_interval=bad)
    assert pipe.prepare(2, 3, guidance_interval=(0.0, float("inf"))).options.guidance_interval == (0.0, float("inf"))


def test_the_run_root_of_any_path_inside_a_run(tmp_path):
    from noisecraft.rundir import run_root

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "checkpoints" / "best.safetensors").write_bytes(b"")
    loose = tmp_path / "downloaded"  # a folder holding a checkpoint directly is its own run
    loose.mkdir()
    (loose / "best.safetensors").write_bytes(b"")
    assert run_root(run) == run_root(run / "checkpoints") == run_root(run / "checkpoints" / "best.safetensors") == run
    assert run_root(loose / "best.safetensors") == run_root(loose) == loose


def test_kind_and_image_shape_come_from_the_config_without_a_network():
    from noisecraft.config import Config

    cfg = preset("digits64-text-latent")
    cfg.model.context_dim, cfg.autoencoder.image_channels = 384, 1
    cfg.model.in_channels, cfg.model.image_size = 4, 16
    assert cfg.model.conditioning == "text" and cfg.image_shape == (1, 64, 64)
    assert Config().model.conditioning == "unconditional" and preset("digits").image_shape == (0, 0, 0)
