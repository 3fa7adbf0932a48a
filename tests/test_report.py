"""`noisecraft evaluate`'s report (issue 38): a text model asked for the captions of real held-out images, and
report.md rendered from synthetic metric dicts on both sides of every threshold its words depend on."""
import math
import re

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


# ---------------------------------------------------------------- report.md follows its numbers


def words(md: str) -> str:
    """report.md with every number replaced by '#': what it says, apart from the figures."""
    return re.sub(r"[-+±]?\d[\d.,]*(e[-+]?\d+)?%?", "#", md)


def floors(gen: dict, reference: str = "train") -> dict:
    """offline.floors (or floors_captions) with `gen`'s figures for the samples, floors FD 2 and 3, KID 1e-3 and 2e-3,
    precision 0.8 and 0.9, recall 0.7 and 0.8, near-copy share 0.05 and 0.06."""
    def row(n, fd, kid, p, r, nc):
        return {"n": n, "fd": fd, "kid_mean": kid, "kid_std": 1e-4, "kid_subset_size": 200, "precision": p,
                "recall": r, "near_copy_share": nc}

    return {"reference": {"split": reference, "n": 1000, "set_aside": 200, "seed": 0}, "floor_n": 200,
            "near_copy_quantile": 0.05, "near_copy_threshold": 1.5, "generated": row(1000, **gen),
            "generated_at_floor_n": row(200, **gen), "real_heldout": row(200, 2.0, 1e-3, 0.8, 0.7, 0.05),
            "real_train_unseen": row(200, 3.0, 2e-3, 0.9, 0.8, 0.06)}


def report(*, gen=None, memorisation=None, sampling=None, text=None, inception=None, offline=True, captions=False):
    """A report.json dict as evaluate_checkpoint writes it, from synthetic figures (no model, no judge)."""
    gen = gen or {"fd": 2.5, "kid": 1.5e-3, "p": 0.85, "r": 0.75, "nc": 0.055}
    row = {"n": 1000, "fd": gen["fd"], "precision": gen["p"], "recall": gen["r"], "class_balance": 0.99}
    mem = {"near_copy_share": 0.05, "heldout_share": 0.05, "quantile": 0.05, "threshold": 1.5, "median_ratio": 1.1,
           "n": 1000, "heldout_n": 500} | (memorisation or {})
    judge = {"heldout_accuracy": 0.99, "dataset": "digits", "train_size": 4500, "heldout_size": 500, "labels": "class",
             "label_classes": 10, "heldout_accuracy_own_labels": 0.99, "classes": 10, "feature_dim": 128}
    off = {"classifier": judge, "generated": row, "real_heldout": {**row, "n": 500, "fd": 2.0},
           "floors": floors(gen), "memorisation": mem}
    if captions:
        off["floors_captions"] = floors(gen, "val")
    out = {"checkpoint": "runs/x/checkpoints/best.safetensors", "step": 650, "dataset": "digits",
           "sampling": {"n": 1000, "sampler": "ddim", "steps": 50, "guidance": 1.0,
                        "guidance_interval": [2.0, math.inf], "seed": 0, "precision": "fp32", "class_balanced": True} | (sampling or {}),
           "timing": {"sampling_s": 10.0, "samples_per_s": 100.0, "total_s": 12.0}}
    if offline:
        out["offline"] = off
    if text:
        out["text"] = text
    if inception is not None:
        out["inception"] = inception
    return out


def md(**kw) -> str:
    from noisecraft.evaluate.report import render_markdown

    return render_markdown(report(**kw))


def floor_line(text: str, label: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {label} |"))


@pytest.mark.parametrize("figure, label, values", [
    ("fd", "FD-clf", (1.0, 2.5, 4.0)),  # floors 2 and 3, lower is better
    ("kid", "KID (x1e3)", (0.5e-3, 1.5e-3, 3e-3)),
    ("p", "precision", (0.95, 0.85, 0.5)),  # floors 0.8 and 0.9, higher is better
    ("r", "recall", (0.9, 0.75, 0.2)),
    ("nc", "near-copy share", (0.01, 0.055, 0.5)),
])
def test_each_figure_against_its_floors_says_where_it_lies(figure, label, values):
    base = {"fd": 2.5, "kid": 1.5e-3, "p": 0.85, "r": 0.75, "nc": 0.055}
    said = [floor_line(md(gen=base | {figure: v}), label) for v in values]
    for line, verdict in zip(said, ("as good as both floors", "between the floors", "worse than both floors"),
                             strict=True):
        assert line.endswith(f"| {verdict} |"), line
    nudged = floor_line(md(gen=base | {figure: values[0] * 0.99 if figure in "fd kid nc" else values[0] * 1.01}),
                        label)
    assert words(nudged) == words(said[0])  # the same side of both floors: the same words, other numbers


SHARE_WORDS = ("more than the held-out share", "within two standard errors of the held-out share",
               "less than the held-out share")


@pytest.mark.parametrize("share, n, says", [(0.30, 1000, 0), (0.06, 1000, 1), (0.04, 1000, 1), (0.0, 2000, 2)])
def test_the_near_copy_share_is_read_against_the_held_out_share_and_its_noise(share, n, says):
    text = md(memorisation={"near_copy_share": share, "n": n})  # the held-out share: 5.0% of 500
    assert [w for w in SHARE_WORDS if w in text] == [SHARE_WORDS[says]]


@pytest.mark.parametrize("ratio, says, not_said", [
    (0.4, "under 1: the samples sit closer to training images", "1 or more"),
    (0.99, "under 1: the samples sit closer to training images", "1 or more"),
    (1.0, "1 or more: the samples sit no closer", "under 1"),
    (1.24, "1 or more: the samples sit no closer", "under 1"),  # the report said "well under 1" here
])
def test_the_median_distance_ratio_is_read_by_its_value(ratio, says, not_said):
    text = md(memorisation={"median_ratio": ratio})
    assert f"{ratio:.2f} ({says}" in text and not_said not in text


def test_the_report_says_how_a_text_model_was_prompted_and_how_many_prompts_were_distinct():
    t = {"n": 1000, "distinct_prompts": 812, "named_n": 1000, "named_class_accuracy": 0.9,
         "attributes": {"thickness": {"agreement": 0.6, "n": 300}, "mean": 0.6}}
    real = {**t, "named_class_accuracy": 0.99, "attributes": {"thickness": {"agreement": 1.0, "n": 300}, "mean": 1.0}}
    text = {**t, "real_heldout": real}
    captions = md(captions=True, text=text, sampling={"class_balanced": False, "prompts": 812, "negative_prompt": "",
                                                     "prompt_source": "heldout_captions", "captioned_images": 250,
                                                     "prompt_seed": 0})
    assert "prompted with the captions of 250 real held-out images (812 distinct prompts, seed 0)" in captions
    assert "class-balanced" not in captions and "### Against the held-out images whose captions were asked" in captions
    assert floor_line(captions, "thickness agreement (measured on the pixels)") == \
        "| thickness agreement (measured on the pixels) | 0.600 | 1.000 | 300 |"
    given = md(text={**t, "distinct_prompts": 8}, sampling={"class_balanced": False, "prompts": 8,
                                                            "negative_prompt": "", "prompt_source": "given"})
    assert "prompted with 8 distinct prompts given (--prompts), cycled" in given
    assert "prompted with the captions" not in given
    assert "real image of the caption" not in given and "1000 samples of 8 distinct prompts." in given
    classes = md()
    assert ", class-balanced. Sampling took" in classes and "prompted" not in classes


def test_sections_not_computed_or_skipped_say_so():
    none = md(offline=False)
    assert "Not computed (--no-classifier)." in none and "Not computed (--no-inception)." in none
    skipped = md(inception={"skipped": "FID/KID/IS skipped: no Inception weights"})
    assert "FID/KID/IS skipped: no Inception weights" in skipped and "Not computed (--no-inception)" not in skipped
    inc = {"generated": {"n": 1000, "fid": 12.0, "kid_mean": 1e-3, "kid_std": 1e-4, "is_mean": 2.0, "is_std": 0.1},
           "real_heldout": {"n": 500, "fid": 3.0, "kid_mean": 1e-4, "kid_std": 1e-5}}
    assert "| generated | 1000 | 12.00 | 1.00 ± 0.10 | 2.00 ± 0.10 |" in md(inception=inc)
