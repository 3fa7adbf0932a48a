"""Non-leaking augmentation (noisecraft.augment): each transform against its closed form, labels that are zero
exactly where nothing was applied, draws that are a pure function of (seed, step) and split over ranks, the
network's augment conditioning that is zero at sampling, and a run that trains with it through the CLI."""
import math

import pytest
import torch

from noisecraft.augment import Draws, _rotation, _warp, augment, augment_dim, mirror_index
from noisecraft.errors import UserError
from noisecraft.registry import AUGMENTATIONS

GREY = tuple(n for n in AUGMENTATIONS if not AUGMENTATIONS.get(n).rgb_only)  # every transform but colour
CPU = torch.device("cpu")


def draws(n: int, seed: int = 0) -> Draws:
    return Draws(torch.Generator().manual_seed(seed), n, slice(0, n), CPU)


def digits_like(n: int = 16, size: int = 28, seed: int = 0) -> torch.Tensor:
    """Ink (random values) in the middle 12 x 12 of a black (-1) square: shifts up to 4 pixels stay inside."""
    x = torch.full((n, 1, size, size), -1.0)
    x[:, :, 8:20, 8:20] = torch.rand((n, 1, 12, 12), generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return x


def test_probability_zero_is_the_identity_with_zero_labels():
    x = digits_like()
    y, labels = augment(x, GREY, 0.0, draws(len(x)))
    assert torch.equal(y, x)
    assert labels.shape == (len(x), augment_dim(GREY, 1)) and not labels.any()


def test_xflip_and_yflip_mirror_every_image_at_probability_one():
    x = digits_like()
    y, labels = augment(x, ("xflip",), 1.0, draws(len(x)))
    assert torch.equal(y, x.flip(-1)) and torch.equal(labels, torch.ones(len(x), 1))
    y, labels = augment(x, ("yflip", "xflip"), 1.0, draws(len(x)))  # both, in registry order whatever the order
    assert torch.equal(y, x.flip(-1).flip(-2)) and torch.equal(labels, torch.ones(len(x), 2))


def test_integer_translation_moves_pixels_by_its_label():
    x = digits_like(n=64)
    y, labels = augment(x, ("translate",), 1.0, draws(len(x)))
    shift = (labels * 4).round().long()  # m = round(28 / 8) = 4 pixels
    assert torch.allclose(labels * 4, shift.float()) and shift.abs().max() == 4 and (shift != 0).any()
    for i in range(len(x)):  # the ink never reaches the border, so the shift is a plain roll
        dx, dy = shift[i].tolist()
        assert torch.equal(y[i], torch.roll(x[i], shifts=(dy, dx), dims=(1, 2)))


def test_translation_mirrors_at_the_border():
    assert mirror_index(torch.arange(-3, 8), 5).tolist() == [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]


def test_rotation_by_zero_and_scale_one_are_identity_and_a_quarter_turn_is_rot90():
    x = torch.rand(3, 2, 12, 12) * 2 - 1
    on = torch.ones(3, dtype=torch.bool)
    assert torch.allclose(_warp(x, _rotation(torch.zeros(3)), on), x, atol=1e-6)  # rotate by 0
    assert torch.allclose(_warp(x, torch.eye(2).repeat(3, 1, 1), on), x, atol=1e-6)  # scale 1
    quarter = _warp(x, _rotation(torch.full((3,), -math.pi / 2)), on)  # `rotate` with a = pi / 2
    assert torch.allclose(quarter, torch.rot90(x, -1, dims=(2, 3)), atol=1e-5)  # clockwise on screen (y down)


def test_geometric_labels_follow_their_closed_forms():
    n = 32
    _, labels = augment(digits_like(n), ("scale", "rotate", "aniso"), 1.0, draws(n))
    w, cos_m1, sin, aw_cos, aw_sin = labels.unbind(1)
    assert torch.allclose((cos_m1 + 1) ** 2 + sin**2, torch.ones(n), atol=1e-5)  # a point on the unit circle
    assert (w != 0).all() and (sin != 0).all() and (aw_cos**2 + aw_sin**2 > 0).all()  # all applied at p = 1
    from noisecraft.augment import scale

    inverse, w2, on = scale(draws(n), 1.0)
    assert on.all() and torch.allclose(inverse[:, 0, 0], torch.exp2(-0.2 * w2[:, 0]))  # zoom 2^(0.2 w)


def test_labels_are_zero_exactly_where_an_image_is_untouched():
    x = digits_like(n=256)
    y, labels = augment(x, GREY, 0.15, draws(len(x), seed=3))
    untouched = (y == x).flatten(1).all(1)
    zero = (labels == 0).all(1)
    assert torch.equal(untouched, zero) and 0 < int(zero.sum()) < len(x)
    per_transform = (labels != 0).float().mean(0)  # each coordinate is non-zero about as often as p (or p/2 ...)
    assert (per_transform > 0.03).all() and (per_transform < 0.3).all()


def test_colour_on_grey_pixels_is_brightness_and_contrast_only():
    """Hue turns about the grey axis and saturation scales what is off it, so a grey RGB image only sees
    c * x + b with c = 2^(0.5 w_c), b = 0.2 w_b."""
    x = (torch.rand(8, 1, 6, 6) * 2 - 1).expand(8, 3, 6, 6)
    y, labels = augment(x, ("color",), 1.0, draws(8))
    w_b, w_c = labels[:, 0, None, None, None], labels[:, 1, None, None, None]
    assert torch.allclose(y, torch.exp2(0.5 * w_c) * x + 0.2 * w_b, atol=1e-5)
    assert (labels[:, 3] != 0).all()  # the hue was turned all the same
    assert torch.equal(augment(x, ("color",), 0.0, draws(8))[0], x)


def test_colour_on_grey_images_is_refused():
    with pytest.raises(UserError, match="data.augment=color transforms RGB colours; these images have 1 channel"):
        augment_dim(("rotate", "color"), 1)
    assert augment_dim(("rotate", "color"), 3) == 7


def test_batches_are_a_function_of_seed_and_step_and_ranks_split_them():
    from noisecraft.data import ImageData, make_batcher

    data = ImageData(((digits_like(40) + 1) * 127.5).round().to(torch.uint8), torch.arange(40) % 10,
                     [str(i) for i in range(10)], "digits")
    one = make_batcher(data, 8, CPU, seed=5, augment=("translate", "rotate"), augment_p=0.5)
    x, y, labels = one.batch(3)
    assert labels.shape == (8, 4) and labels.any()
    x2, _, labels2 = one.batch(3)
    assert torch.equal(x, x2) and torch.equal(labels, labels2)
    assert not torch.equal(labels, one.batch(4)[2])
    halves = [make_batcher(data, 8, CPU, seed=5, rank=r, world_size=2, augment=("translate", "rotate"),
                           augment_p=0.5).batch(3) for r in (0, 1)]
    assert torch.equal(torch.cat([h[0] for h in halves]), x) and torch.equal(torch.cat([h[2] for h in halves]), labels)
    assert len(make_batcher(data, 8, CPU).batch(3)) == 2  # off: the batch is (x, cond) as before


@pytest.mark.parametrize("arch", ["unet", "dit"])
def test_the_network_sees_no_augment_label_as_zeros(arch):
    from noisecraft.config import DiTConfig, ModelConfig, UNetConfig
    from noisecraft.models import build_model

    cfg = ModelConfig(arch=arch, unet=UNetConfig(base_channels=8, channel_mult=(1,), num_res_blocks=1,
                                                 attn_resolutions=()) if arch == "unet" else None,
                      dit=DiTConfig(width=8, depth=1) if arch == "dit" else None, head_channels=8,
                      patch_size=1 if arch == "unet" else 2, in_channels=1, image_size=8, num_classes=3, augment_dim=5)
    torch.manual_seed(0)
    net = build_model(cfg).eval()
    for p in net.parameters():  # the zero-initialised output layers would hide any difference
        torch.nn.init.normal_(p, std=0.2)
    x, t, c = torch.randn(4, 1, 8, 8), torch.tensor([1.0, 10.0, 100.0, 500.0]), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        none = net(x, t, c)
        assert torch.equal(none, net(x, t, c, augment_labels=torch.zeros(4, 5)))
        assert not torch.allclose(none, net(x, t, c, augment_labels=torch.ones(4, 5)))
    plain = build_model(ModelConfig(**{**cfg.__dict__, "augment_dim": 0}))  # an old run's network: no new weights
    assert set(net.state_dict()) - set(plain.state_dict()) == {"augment_emb.weight"}
    assert "bias" not in dict(net.augment_emb.named_parameters())


@pytest.mark.parametrize("flag, needle", [
    ("--data.augment=xflip,warp", "each of data.augment must be one of xflip, yflip, translate, scale, rotate, "
                                  "aniso, color; got 'warp'"),
    ("--data.augment_p=1.5", "data.augment_p must be in [0, 1], got 1.5"),
    ("--data.augment=rotate,rotate", "names a transform twice"),
    ("--data.subset=-1", "data.val_size and data.subset must be >= 0"),
])
def test_bad_augment_settings_are_one_error_line(cli, tmp_path, flag, needle):
    code, _, err = cli("train", "--out", tmp_path / "x", flag)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err


def test_colour_on_the_grey_digits_is_one_error_line(cli, tmp_path, tiny_args):
    code, _, err = cli("train", "--preset", "digits", "--out", tmp_path / "x", "--steps", "1", "--no-progress",
                       *tiny_args, "--data.augment=color")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: data.augment=color transforms RGB"), err


def test_a_subset_trains_on_the_first_images_of_the_split():
    from noisecraft.config import DataConfig
    from noisecraft.data import load_dataset

    full, part = load_dataset(DataConfig(), "train"), load_dataset(DataConfig(subset=50), "train")
    assert len(part) == 50 and torch.equal(part.images, full.images[:50]) and torch.equal(part.labels,
                                                                                         full.labels[:50])
    assert len(load_dataset(DataConfig(subset=50), "val")) == len(load_dataset(DataConfig(), "val"))
    with pytest.raises(UserError, match="data.subset=9999 is more than"):
        load_dataset(DataConfig(subset=9999), "train")


@pytest.fixture(scope="module")
def augmented_run(tmp_path_factory):
    from conftest import TINY
    from noisecraft.cli import main

    run = tmp_path_factory.mktemp("aug") / "run"
    assert main(["train", "--preset", "digits", "--out", str(run), "--steps", "4", "--no-progress", *TINY,
                 "--train.num_threads=1", "--data.subset=64", "--data.augment=translate,scale,rotate,aniso",
                 "--data.augment_p=0.5"]) == 0
    return run


def test_an_augmented_run_trains_samples_and_distils_through_the_cli(augmented_run, cli, tmp_path):
    from noisecraft.config import Config

    cfg = Config.load(augmented_run / "config.json")
    assert cfg.data.augment == ("translate", "scale", "rotate", "aniso") and cfg.model.augment_dim == 7
    code, _, err = cli("sample", "--checkpoint", augmented_run, "--out", tmp_path / "s", "--n", "4", "--steps", "2")
    assert code == 0 and len(list((tmp_path / "s").glob("0000*.png"))) == 4, err
    code, _, err = cli("distill", "--checkpoint", augmented_run, "--out", tmp_path / "cd", "--steps", "2",
                       "--no-progress", "--train.num_threads=1")
    assert code == 0, err
    student = Config.load(tmp_path / "cd" / "config.json")  # the unaugmented ODE, with its teacher's network
    assert student.data.augment == () and student.model.augment_dim == 7


def test_an_augmented_run_samples_with_no_transform_asked(augmented_run):
    """The non-leaking claim at sampling: every network call of an augmented run's sampler gets no augment label
    (None, which the network reads as zeros: "no transform"), so it draws the unaugmented distribution."""
    from noisecraft.pipeline import load_pipeline

    pipe = load_pipeline(augmented_run, "cpu")
    seen = []
    pipe.denoiser.net.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs.get("augment_labels")), with_kwargs=True)
    pipe.generate(n=3, class_index=1, steps=3, seed=0)
    assert seen and all(a is None or not a.any() for a in seen)


def test_a_streamed_rgb_folder_gives_the_in_memory_augmented_batches(tmp_path):
    from test_stream import _folder

    from noisecraft.config import DataConfig
    from noisecraft.data import FolderStream, load_train_data, make_batcher

    cfg = DataConfig(dataset="folder", data_root=str(_folder(tmp_path)), image_size=12, val_size=4)
    memory, stream = load_train_data(cfg), load_train_data(DataConfig(**{**cfg.__dict__, "max_memory_mb": 0}))
    assert isinstance(stream, FolderStream)
    names = ("xflip", "rotate", "color")
    a = make_batcher(memory, 8, CPU, seed=2, augment=names, augment_p=0.5)
    b = make_batcher(stream, 8, CPU, seed=2, num_workers=0, augment=names, augment_p=0.5)
    for step in (0, 3):
        (xa, ya, la), (xb, yb, lb) = a.batch(step), b.batch(step)
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(la, lb) and la.shape == (8, 8)
    with pytest.raises(UserError, match="data.subset takes images from a split held in memory"):
        load_train_data(DataConfig(**{**cfg.__dict__, "max_memory_mb": 0, "subset": 5}))


def test_the_training_step_gives_the_batch_labels_to_the_network_and_validation_none():
    from noisecraft.config import Config, ModelConfig, UNetConfig
    from noisecraft.train.diffusion import DiffusionTask
    from noisecraft.train.task import TaskContext

    cfg = Config()
    cfg.model = ModelConfig(unet=UNetConfig(base_channels=8, channel_mult=(1,), num_res_blocks=1, attn_resolutions=()),
                            head_channels=8, in_channels=1, image_size=8, num_classes=10, augment_dim=4)
    cfg.train.batch_size, cfg.train.precision = 4, "fp32"
    task = DiffusionTask(cfg, TaskContext(CPU, class_names=[str(i) for i in range(10)]))
    seen = []
    for net in (task.net, task.ema.module):  # the step trains the one, the held-out loss reads the other
        net.register_forward_pre_hook(lambda m, a, kw: seen.append(kw.get("augment_labels")), with_kwargs=True)
    x, y, labels = torch.rand(4, 1, 8, 8) * 2 - 1, torch.arange(4), torch.randn(4, 4)
    task.step((x, y, labels), 0)
    assert torch.equal(seen[-1], labels)
    task.step((x, y), 1)  # augmentation off: nothing passed, the network adds nothing
    with torch.no_grad():
        task.held_out_loss(x, {"class_labels": y}, torch.Generator().manual_seed(0))
    assert seen[-2] is None and seen[-1] is None  # the unaugmented step, the held-out loss
