"""Editing (img2img / variations = SDEdit, inpainting = RePaint) as the same stream started from given images:
the grid an edit walks, what it costs, the known pixels kept exactly (pixel runs) or pasted back (latent runs),
reproducibility, the PNG settings, the CLI, and bad input refused with one clear line."""
from __future__ import annotations

import io
import struct
import zlib

import pytest
import torch

from noisecraft.config import Config
from noisecraft.diffusion import Denoiser
from noisecraft.editing import describe_mask, half_mask, rect_mask, strength_grid
from noisecraft.errors import UserError
from noisecraft.models import build_model
from noisecraft.pipeline import Pipeline, load_pipeline
from noisecraft.samplers import get_sigmas


@pytest.fixture(scope="module")
def pipe(tiny_runs):
    return load_pipeline(tiny_runs / "digits", "cpu")


@pytest.fixture(scope="module")
def digits(pipe):
    from noisecraft.data import load_dataset

    val = load_dataset(pipe.config.data, "val")
    return val.images[:4], val.labels[:4].long()


class Counter:
    """Images through the network, counted at the network."""

    def __init__(self, pipe):
        self.rows = 0
        self.handle = pipe.denoiser.net.register_forward_hook(lambda m, a, out: setattr(self, "rows",
                                                                                         self.rows + out.shape[0]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def png(image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, **kw)
    return buf.getvalue()


def test_strength_picks_the_start_on_the_samplers_grid_and_steps_count_the_steps_run(pipe):
    full = get_sigmas(pipe.denoiser, "ddim", 20)
    grid = strength_grid(lambda k: get_sigmas(pipe.denoiser, "ddim", k), 6, 0.3)
    assert torch.equal(grid, full[-7:])  # the last 6 of the 20 steps a strength-0.3 edit of 6 steps belongs to
    assert torch.equal(strength_grid(lambda k: get_sigmas(pipe.denoiser, "ddim", k), 20, 1.0), full)
    req = pipe.prepare(image=torch.zeros(1, 28, 28, dtype=torch.uint8), strength=0.5, sampler="ddim", steps=None,
                       class_index=1, guidance=0)
    assert req.options.steps == -(-pipe.config.sample.steps // 2)  # strength x the run's steps, rounded up


def test_an_edit_costs_its_steps_network_calls_and_jumps_add_resampled_steps(pipe, digits):
    images, labels = digits
    with Counter(pipe) as c:
        events = list(pipe.stream(image=images, labels=labels, strength=0.4, steps=5, sampler="ddim", guidance=0))
    assert c.rows == 5 * len(images) and sum(e.kind == "step" for e in events) == 5
    with Counter(pipe) as c:
        pipe.generate(image=images, mask=half_mask("bottom", 28), labels=labels, steps=5, sampler="ddim", guidance=0,
                      jumps=2)
    assert c.rows == (5 + 2 * 4) * len(images)  # every step but the last to sigma = 0 is taken twice more


def test_inpainting_keeps_the_known_pixels_exactly_and_regenerates_the_mask(pipe, digits):
    images, labels = digits
    mask = half_mask("bottom", 28)
    out = pipe.inpaint(images, mask, labels=labels, seed=3)
    assert torch.equal(out[..., :14, :], images[..., :14, :])
    assert not torch.equal(out[..., 14:, :], images[..., 14:, :])
    again = pipe.inpaint(images, mask, labels=labels, seed=3, batch_size=1)  # image i does not depend on its batch
    assert torch.equal(out, again)
    assert not torch.equal(out, pipe.inpaint(images, mask, labels=labels, seed=4))


def test_known_region_follows_the_forward_process_for_a_deterministic_sampler():
    """With x0 forced to the known image there, DDIM's x in the known region is x0 + sigma * eps all the way down,
    and ends exactly on the known image."""
    from noisecraft.editing import known_region
    from noisecraft.samplers import sample_ddim

    torch.manual_seed(0)
    x0_known, keep = torch.randn(2, 1, 4, 4), torch.rand(2, 1, 4, 4) > 0.5
    eps, sigmas = torch.randn(2, 1, 4, 4), torch.tensor([10.0, 3.0, 0.5, 0.0])
    d = known_region(lambda x, s, c=None: torch.zeros_like(x), x0_known, keep, lambda x: torch.randn_like(x))
    for step in sample_ddim(d, x0_known + sigmas[0] * eps, sigmas):
        sigma_next = sigmas[step.i + 1]
        torch.testing.assert_close(step.x[keep], (x0_known + sigma_next * eps)[keep])
        assert torch.equal(step.x0[~keep], torch.zeros_like(step.x0)[~keep])
    assert torch.equal(step.x[keep], x0_known[keep])


def _latent_pipe():
    from noisecraft.autoencoder.codec import LatentCodec
    from noisecraft.config import AutoencoderConfig
    from noisecraft.models import build_autoencoder

    torch.manual_seed(0)
    ae = build_autoencoder(AutoencoderConfig(base_channels=4, latent_channels=3, disc_channels=4, disc_layers=2), 1)
    codec = LatentCodec(ae, "noisecraft", 1.7, 0.0, 1, 4, 3, "test", "0" * 64)
    cfg = Config()
    cfg.model.in_channels, cfg.model.image_size, cfg.model.num_classes = 3, 4, 10
    cfg.model.unet.base_channels, cfg.model.unet.channel_mult, cfg.model.unet.attn_resolutions = 8, (1,), ()
    cfg.model.head_channels, cfg.sample.steps = 8, 3
    return Pipeline(Denoiser(build_model(cfg.model), cfg.diffusion).eval(), cfg, codec=codec)


def test_latent_inpainting_pastes_the_known_pixels_back_with_a_feathered_edge(monkeypatch):
    """Outside the mask the source exactly; just inside its edge a blend of the source and the decoded image that
    leans further to the decoded one pixel by pixel inward; from `downsample` pixels in, the decoded image alone."""
    import noisecraft.pipeline as pipeline_module

    pipe, seen = _latent_pipe(), {}
    real_paste = pipeline_module.paste_known

    def spy(generated, source, feather=0):
        seen.update(generated=generated.clone(), feather=feather)
        return real_paste(generated, source, feather)

    monkeypatch.setattr(pipeline_module, "paste_known", spy)
    images = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    mask = rect_mask(2, 2, 12, 12, 16)
    out = pipe.inpaint(images, mask, class_index=2)
    f, decoded = seen["feather"], seen["generated"]
    assert f == pipe.codec.downsample == 4
    outside = ~mask.expand_as(out)
    assert torch.equal(out[outside], images[outside])
    deep = rect_mask(2 + f, 2 + f, 12 - 2 * f, 12 - 2 * f, 16).expand_as(out)  # the feather's box fits inside
    assert torch.equal(out[deep], decoded[deep])
    # the first ring inside the edge, along row 7: how far each pixel moved from the source to the decoded image
    row, src, dec = out[:, 0, 7].float(), images[:, 0, 7].float(), decoded[:, 0, 7].float()
    far = (dec - src).abs() > 40  # pixels where the two differ enough to read the blend's weight
    w = torch.where(far, (row - src) / (dec - src), torch.nan)
    edge = w[:, 2][far[:, 2]]  # the first masked column
    assert edge.numel() and (edge < 0.5).all()  # mostly the source at the edge, not a hard paste
    inward = [w[:, c][far[:, c]].mean() for c in range(2, 2 + f + 1) if far[:, c].any()]
    assert all(a <= b + 0.05 for a, b in zip(inward, inward[1:])) and inward[-1] > 0.95


def test_latent_inpainting_regenerates_the_inside_of_the_mask():
    pipe = _latent_pipe()
    images = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    mask = rect_mask(4, 4, 8, 8, 16)
    inner = rect_mask(8, 8, 1, 1, 16).expand(2, 1, 16, 16)  # 4 px inside the edge: all generated
    out = pipe.inpaint(images, mask, class_index=2, jumps=0)
    assert not torch.equal(out[inner], images[inner])


def test_edits_are_reproducible_and_record_what_was_done_in_the_png(cli, tiny_runs, tmp_path, digits):
    from PIL import Image

    from noisecraft.imageinfo import read_parameters

    Image.fromarray(digits[0][1, 0].numpy()).save(tmp_path / "in.png")
    args = ["edit", "--checkpoint", tiny_runs / "digits", "--image", tmp_path / "in.png", "--mask-half", "bottom",
            "--class", 7, "--n", 3, "--seed", 5, "--device", "cpu"]
    for out in ("a", "b"):
        code, stdout, err = cli(*args, "--out", tmp_path / out)
        assert code == 0, err
    for i in range(3):  # the same seed: the same bytes
        assert (tmp_path / "a" / f"{i:05d}.png").read_bytes() == (tmp_path / "b" / f"{i:05d}.png").read_bytes()
    params = read_parameters(tmp_path / "a" / "00001.png")
    assert "Denoising strength: 1.0" in params and 'Mask: "rect 0,14,28,14"' in params and "Class: 7" in params
    assert "Image seed: 6" in params and "Source sha256: " in params
    grid = Image.open(tmp_path / "a" / "before_after.png")
    assert grid.size == (2 + 5 * 30, 2 + 30)  # source, masked source, 3 edits: 28 px and a 2 px border each


def test_a_converted_image_is_said_with_its_size_and_mode(pipe):
    from PIL import Image

    rgb = Image.new("RGB", (56, 56), (200, 10, 10))
    with pytest.warns(UserWarning, match=r"56x56 -> 28x28, mode RGB -> grey"):
        req = pipe.prepare(image=rgb, n=2)
    assert req.source.images.shape == (2, 1, 28, 28) and req.options.strength == 0.6


def test_a_class_model_edited_without_a_class_asks_for_nothing_the_null_class_unguided(pipe):
    req = pipe.prepare(image=torch.zeros(1, 28, 28, dtype=torch.uint8), n=2)
    assert req.labels.tolist() == [10, 10] and req.options.guidance == 0  # the null class: nothing asked
    assert req.options.guidance_interval == ()


def test_requests_of_edits_batch_with_their_own_kind_only(pipe):
    img = torch.zeros(1, 28, 28, dtype=torch.uint8)
    a, b = pipe.prepare(image=img, class_index=1), pipe.prepare(image=img, class_index=2, seed=9)
    assert a.batch_key() == b.batch_key() != pipe.prepare(class_index=1).batch_key()
    assert a.batch_key() != pipe.prepare(image=img, mask=half_mask("top", 28), class_index=1, strength=0.6).batch_key()
    merged = a.merged([a, b])
    assert merged.source.images.shape[0] == 2 and merged.seeds == (0, 9)


def _png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (and whose data is a 1x1 image's)."""
    from PIL import Image

    data = bytearray(png(Image.new("L", (1, 1)), format="PNG"))
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    return bytes(data)


def test_bad_images_and_masks_get_one_clear_error(pipe, tmp_path):
    from PIL import Image

    ok = png(Image.new("L", (28, 28)), format="PNG")
    noisy = png(Image.fromarray(torch.randint(0, 256, (28, 28), dtype=torch.uint8).numpy()), format="PNG")
    frames = [Image.new("L", (28, 28), v) for v in (0, 255)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    cases = [
        (dict(image=b"not an image at all"), "is not an image"),
        (dict(image=noisy[:len(noisy) * 3 // 4]), "is damaged"),
        (dict(image=_png_with_size(20_000, 20_000)), "too large"),
        (dict(image=gif.getvalue()), r"animated \(2 frames\)"),
        (dict(image=tmp_path / "missing.png"), "image not found"),
        (dict(image=ok, mask=torch.ones(1, 1, 10, 10, dtype=torch.bool)), "mask is 10x10 but the image is 28x28"),
        (dict(image=ok, mask=torch.zeros(1, 1, 28, 28, dtype=torch.bool)), "selects no pixel"),
        (dict(image=ok, strength=0.0), r"strength must be in \(0, 1\]"),
        (dict(image=ok, strength=1.5), r"strength must be in \(0, 1\]"),
        (dict(image=ok, strength=float("nan")), r"strength must be in \(0, 1\]"),
        (dict(image=ok, jumps=-1), "jumps must be"),
        (dict(mask=half_mask("top", 28)), "a mask needs the image"),
        (dict(strength=0.5), "strength and jumps apply to edits"),
        (dict(image=torch.zeros(1, 28, 28)), "must be uint8"),
        (dict(image=ok, mask=torch.ones(1, 1, 28, 28)), "must be bool"),
    ]
    for kwargs, message in cases:
        with pytest.raises(UserError, match=message):
            pipe.prepare(class_index=1, **kwargs)
    with pytest.warns(UserWarning, match="every pixel: this is generation from noise"):
        pipe.prepare(image=ok, mask=torch.ones(1, 1, 28, 28, dtype=torch.bool), class_index=1)


def test_cli_edit_refuses_bad_input_in_one_line(cli, tiny_runs, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code, _, err = cli("edit", "--checkpoint", tiny_runs / "digits", "--image", tmp_path / "bad.png", "--out",
                       tmp_path / "o")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing half-written
    code, _, err = cli("edit", "--checkpoint", tiny_runs / "digits", "--image", tmp_path / "bad.png",
                       "--mask-rect", "1,2,x", "--out", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1


def test_describe_mask_names_rectangles_and_hashes_other_shapes():
    assert describe_mask(half_mask("left", 28)[0]) == "rect 0,0,14,28"
    m = half_mask("left", 8)[0].clone()
    m[0, 7, 7] = True
    assert describe_mask(m).startswith("33 pixels, sha256 ")
