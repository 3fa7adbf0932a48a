"""`noisecraft evaluate`'s report (issue 38): a text model asked for the captions of real held-out images, and
report.md rendered from synthetic metric dicts on both sides of every threshold its words depend on."""
import pytest
import torch

from noisecraft.captions import Captions
from noisecraft.data import ImageData
from noisecraft.errors import UserError
from noisecraft.evaluate.report import heldout_captions

# ---------------------------------------------------------------- held-out captions


def coloured_split(n: int, uncaptioned: int = 0) -> ImageData:
    """n solid-colour squares on white, each captioned with its colour (emoji-like colour captions); the last
    `uncaptioned` have only the empty prompt."""
    colours = {"red": (210, 47, 39), "blue": (30, 80, 160), "green": (92, 158, 49)}
    names = [list(colours)[i % 3] for i in range(n)]
    images = torch.full((n, 3, 8, 8), 255, dtype=torch.uint8)
    for i, name in enumerate(names):
        images[i, :, 2:6, 2:6] = torch.tensor(colours[name])[:, None, None]
    groups = [[f"a {c} square {i}", f"square {i}, {c}"] for i, c in enumerate(names[:n - uncaptioned])]
    group = torch.arange(n).clamp_max(len(groups))
    captions = Captions.from_groups(groups + [[""]] * bool(uncaptioned), group)
    return ImageData(images, torch.zeros(n, dtype=torch.long), ["square"], "folder", captions)


def test_held_out_captions_prompt_each_image_once_before_any_twice_and_keep_a_floor_apart():
    val = coloured_split(21, uncaptioned=1)  # 20 captioned: 10 prompt, 10 are the floor
    p = heldout_captions(val, 25, seed=3)
    asked, floor = set(p["reference"].tolist()), set(p["floor"].tolist())
    assert len(asked) == len(floor) == 10 and not asked & floor and asked | floor == set(range(20))
    assert set(p["images"][:10].tolist()) == asked and p["images"][10:20].tolist() == p["images"][:10].tolist()
    for prompt, i in zip(p["prompts"], p["images"].tolist(), strict=True):
        colour = ("red", "blue", "green")[i % 3]
        assert prompt in (f"a {colour} square {i}", f"square {i}, {colour}")
    again, other = heldout_captions(val, 25, seed=3), heldout_captions(val, 25, seed=4)
    assert again["prompts"] == p["prompts"] and other["images"].tolist() != p["images"].tolist()
    assert heldout_captions(val, 4, seed=3)["reference"].tolist() == p["images"][:4].tolist()  # those asked only
    with pytest.raises(UserError, match=r"3 captioned images, too few.*--prompts FILE"):
        heldout_captions(coloured_split(4, uncaptioned=1), 8, seed=0)


def test_colour_captions_of_real_images_agree_with_their_pixels():
    from noisecraft.config import DataConfig
    from noisecraft.evaluate.text import text_metrics

    val = coloured_split(12)
    p = heldout_captions(val, 12, seed=0)
    t = text_metrics(val.images[p["images"]], p["prompts"], [], DataConfig(dataset="folder"))
    assert t["colour"] == {"agreement": 1.0, "n": 12} and t["distinct_prompts"] == len(set(p["prompts"]))
    wrong = val.images[p["images"].roll(1)]  # each image drawn for its neighbour's caption
    assert text_metrics(wrong, p["prompts"], [], DataConfig(dataset="folder"))["colour"]["agreement"] < 0.5
