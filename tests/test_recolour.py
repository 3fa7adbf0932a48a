"""data.recolour: copies of captioned colour images with their hues turned and their colour words rewritten, each
copy measuring as the words its captions say; training sees them, evaluation's real splits do not."""
import colorsys

import pytest
import torch
from PIL import Image

from noisecraft.captions import COLOURS, Captions, dominant_colour, named_colour, rgb_to_hsv
from noisecraft.config import DataConfig
from noisecraft.data import ImageData, load_dataset, load_train_data
from noisecraft.errors import UserError
from noisecraft.recolour import hsv_to_rgb, recolour, rewrite, turn_hue

SHADES = {"red": (210, 47, 39), "blue": (97, 178, 228), "green": (177, 204, 51), "yellow": (252, 234, 43)}


def shapes(colour_names: list[str], size: int = 16) -> torch.Tensor:
    """A filled square of each colour, outlined in black, on white: (N, 3, size, size) uint8."""
    x = torch.full((len(colour_names), 3, size, size), 255, dtype=torch.uint8)
    x[:, :, 3:-3, 3:-3] = 0
    for i, c in enumerate(colour_names):
        x[i, :, 4:-4, 4:-4] = torch.tensor(SHADES[c], dtype=torch.uint8).view(3, 1, 1)
    return x


def captioned(colour_names: list[str]) -> ImageData:
    groups = [[f"a {c} square", f"{c} square, symbols", "a square"] for c in colour_names]
    caps = Captions.from_groups(groups, torch.arange(len(groups)))
    return ImageData(shapes(colour_names), torch.zeros(len(groups), dtype=torch.long), ["square"], "folder", caps)


def test_hsv_matches_colorsys_and_a_full_turn_changes_nothing():
    rgb = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    h, s, v = rgb_to_hsv(rgb.float() / 255)
    px = rgb[0, :, 0, 0].float() / 255
    want = colorsys.rgb_to_hsv(*px.tolist())
    assert h[0, 0, 0].item() == pytest.approx(want[0] * 360, abs=1e-3)
    assert (s[0, 0, 0].item(), v[0, 0, 0].item()) == pytest.approx(want[1:], abs=1e-5)
    assert torch.allclose(hsv_to_rgb(h, s, v), rgb.float() / 255, atol=1e-5)
    assert torch.equal(turn_hue(rgb, torch.full((4,), 360.0)), rgb)


def test_turning_red_by_a_third_of_the_circle_makes_it_green_and_leaves_black_and_white():
    x = shapes(["red"])
    y = turn_hue(x, torch.tensor([120.0]))
    assert COLOURS[int(dominant_colour(y))] == "green"
    outline_and_background = (x == 0).all(1) | (x == 255).all(1)
    assert torch.equal(y.permute(0, 2, 3, 1)[outline_and_background], x.permute(0, 2, 3, 1)[outline_and_background])


def test_rewrite_follows_the_new_word_and_refuses_captions_that_would_lie():
    assert rewrite("an orange fox", {"orange": "red"}) == "a red fox"
    assert rewrite("a red and blue tram car", {"red": "green", "blue": "purple"}) == "a green and purple tram car"
    assert rewrite("a red and blue tram car", {"red": "green"}) is None  # blue is not this image's colour any more
    assert rewrite("grinning face", {"yellow": "red"}) is None  # says nothing about colour: not the copy's caption


def test_every_copy_measures_as_its_captions_say_and_the_originals_stay():
    data = captioned(["red", "blue", "green", "yellow"])
    out = recolour(data, 3)
    assert torch.equal(out.images[:4], data.images) and len(out) > len(data)
    caps = out.captions
    assert [caps.texts[t] for t in caps.options[0, :caps.counts[0]].tolist()] == \
        ["a red square", "red square, symbols", "a square"]
    measured = dominant_colour(out.images[4:])
    for i, colour in enumerate(measured.tolist(), start=4):
        texts = [caps.texts[t] for t in caps.options[int(caps.group[i]), :caps.counts[int(caps.group[i])]].tolist()]
        assert texts and all(named_colour(t) == colour for t in texts), texts  # "a square" is never a copy's
    assert out.labels.tolist() == [0] * len(out)
    assert len(out) <= 4 + 4 * 3  # at most `copies` of each image


def test_bad_input_is_one_clear_error():
    grey = ImageData(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), None, [], "folder", captioned(["red"]).captions)
    with pytest.raises(UserError, match="greyscale"):
        recolour(grey, 1)
    with pytest.raises(UserError, match="captions"):
        recolour(ImageData(shapes(["red"]), None, [], "folder"), 1)
    with pytest.raises(UserError, match="data.recolour must be between 0 and 6"):
        DataConfig(recolour=7).validate()


def test_training_sees_the_copies_and_the_evaluated_splits_do_not(tmp_path):
    colours = ["red", "blue", "green", "yellow"] * 3
    for i, (c, img) in enumerate(zip(colours, shapes(colours))):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / f"{i:02d}.png")
        (tmp_path / f"{i:02d}.txt").write_text(f"a {c} square")
    cfg = DataConfig(dataset="folder", data_root=str(tmp_path), val_size=2, recolour=2)
    cfg.validate()
    real = load_dataset(cfg, "train")
    train = load_train_data(cfg)
    assert len(train) > len(real) and torch.equal(train.images[:len(real)], real.images)
    assert {"a purple square", "a pink square", "an orange square"} <= set(train.captions.texts)  # none is real


def test_an_autoencoders_copies_are_plain_hue_augmentation_and_a_class_model_is_refused():
    from noisecraft.config import Config

    data = ImageData(shapes(["red", "blue"]), torch.tensor([0, 1]), ["a", "b"], "folder")
    out = recolour(data, 2, captioned=False)
    assert len(out) == 2 + 2 * 2 and out.captions is None and out.labels.tolist() == [0, 1, 0, 0, 1, 1]
    assert set(dominant_colour(out.images[2:]).tolist()) - {COLOURS.index("red"), COLOURS.index("blue")}
    cfg = Config()
    cfg.data.recolour, cfg.data.captions = 2, "off"
    with pytest.raises(UserError, match="learn the recoloured copies as real colours"):
        cfg.validate()
    cfg.train.task = "autoencoder"
    cfg.validate()
