"""Captions for every dataset, for text-to-image training. Like `data`, this module knows nothing about diffusion.

* Class datasets (digits, MNIST, CIFAR-10, class folders): captions from the class names through templates, one
  drawn at random per sample and step ("a handwritten 7", "the digit seven", "a photo of a cat"); digits are written
  both as words and as numerals.
* Digits and MNIST also get attribute captions measured from the pixels (`measure_attributes`): stroke thickness
  (thin / regular / bold), slant (leaning left / upright / leaning right) and size (small / large), cut at the
  tertiles of each class's measurements, so that "a thin, small four leaning left" names what the image shows.
* Image folders: the Hugging Face imagefolder convention (`metadata.jsonl` lines with `file_name` and `text`, in the
  folder or any sub-folder) or a `.txt` beside each image. Images without a caption are counted in a warning and
  train with the empty prompt (in class sub-folders: with their class's captions).

A dataset's captions are a `Captions`: the distinct texts (texts[0] is the empty prompt) and, per image, the group
of texts it may be shown with; the batcher draws one text of each image's group per step (`Captions.draw`).
"""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from noisecraft.errors import UserError

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_TEMPLATES = ("a handwritten {}", "the digit {}", "the number {}", "a {}", "an image of the digit {}",
                   "a drawing of a {}")
OBJECT_TEMPLATES = ("a photo of a {}", "a picture of a {}", "an image of a {}", "a {}", "a close-up photo of a {}",
                    "a low-resolution photo of a {}")
# Each attribute's levels, low to high, as captions write them; None: the middle third goes unnamed.
ATTRIBUTES = {
    "thickness": ("thin", "regular", "bold"),
    "slant": ("leaning left", "upright", "leaning right"),
    "size": ("small", None, "large"),
}
SYNONYMS = {"thick": ("thickness", 2), "heavy": ("thickness", 2), "straight": ("slant", 1), "big": ("size", 2),
            "tiny": ("size", 0)}  # understood in prompts, never written in captions


@dataclass
class Captions:
    """The captions of a dataset split."""

    texts: list[str]  # distinct captions; texts[0] == "" (the empty prompt, also what caption dropout shows)
    options: torch.Tensor  # (G, K) text indices of each group, short groups padded by repeating their first
    counts: torch.Tensor  # (G,) real options of each group
    group: torch.Tensor  # (N,) each image's group
    thresholds: dict[str, list[list[float]]] = field(default_factory=dict)  # attribute -> per class (lo, hi) cuts
    uncaptioned: int = 0  # images of an image folder with no caption of their own

    def draw(self, index: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Text indices (B,) for images `index` (B,), one option of each image's group picked by u in [0, 1)."""
        g = self.group[index]
        k = (u * self.counts[g]).long().clamp_max(self.counts[g] - 1)
        return self.options[g, k]

    def examples(self, k: int) -> list[str]:
        """Up to k distinct non-empty captions, each group's first (for digits: one per class, in class order)."""
        firsts = [self.texts[i] for i in self.options[:, 0].tolist()]
        return [t for t in dict.fromkeys(firsts) if t][:k]

    def to(self, device: torch.device | str) -> Captions:
        return replace(self, options=self.options.to(device), counts=self.counts.to(device),
                       group=self.group.to(device))

    @classmethod
    def from_groups(cls, groups: list[list[str]], group: torch.Tensor, **extra) -> Captions:
        """Captions from each group's texts and each image's group index."""
        index = {"": 0}
        for texts in groups:
            for t in texts:
                index.setdefault(t, len(index))
        k = max(len(texts) for texts in groups)
        options = torch.tensor([[index[t] for t in texts] + [index[texts[0]]] * (k - len(texts)) for texts in groups])
        counts = torch.tensor([len(texts) for texts in groups])
        return cls(list(index), options, counts, group.long(), **extra)


# ---------------------------------------------------------------- class names and templates


def with_articles(text: str) -> str:
    """'a eight' -> 'an eight', 'a 8' -> 'an 8' ('a one' stays)."""
    return re.sub(r"\ba (?=(?!one\b)[aeiou8])", "an ", text)


def class_texts(name: str, digit: bool) -> list[str]:
    """A class's captions without attributes: every template with the name (a digit: as a word and a numeral)."""
    if digit:
        names = (DIGIT_WORDS[int(name)], name)
        return [with_articles(t.format(n)) for t in DIGIT_TEMPLATES for n in names]
    return [with_articles(t.format(name.replace("_", " "))) for t in OBJECT_TEMPLATES]


def attribute_text(name: str, levels: dict[str, int]) -> str:
    """'a thin, small four leaning left' for levels {"thickness": 0, "size": 0, "slant": 0}; attributes left out
    of `levels` (or at an unnamed level) are not mentioned."""
    words = {a: ATTRIBUTES[a][lvl] for a, lvl in levels.items() if ATTRIBUTES[a][lvl] is not None}
    slant = words.pop("slant", None)
    adjectives = [words[a] for a in ("thickness", "size") if a in words] + (["upright"] if slant == "upright" else [])
    suffix = f" {slant}" if slant and slant != "upright" else ""
    return with_articles(f"a {', '.join(adjectives)}{' ' if adjectives else ''}{name}{suffix}")


def digit_texts(digit: int, levels: dict[str, int]) -> list[str]:
    """Every caption of a digit with the measured `levels`: the class templates, and each non-empty subset of its
    named attributes, with the digit as a word and as a numeral."""
    named = [a for a, lvl in levels.items() if ATTRIBUTES[a][lvl] is not None]
    subsets = [[a for i, a in enumerate(named) if mask >> i & 1] for mask in range(1, 2 ** len(named))]
    texts = class_texts(str(digit), digit=True)
    for name in (DIGIT_WORDS[digit], str(digit)):
        texts += [attribute_text(name, {a: levels[a] for a in subset}) for subset in subsets]
    return texts


def class_captions(labels: torch.Tensor | None, class_names: list[str], images: torch.Tensor | None = None,
                   digits: bool = False, thresholds: dict | None = None) -> Captions:
    """Template captions of a labelled split; for digits (`digits` and `images` given) with attribute captions, cut
    at the split's own tertiles or at `thresholds` (another split's: held-out captions in a model's own words)."""
    if labels is None:
        raise UserError("captions from class names need a labelled dataset (one sub-folder per class); give the "
                        "images their own captions (metadata.jsonl or .txt files)")
    if not digits or images is None:
        return Captions.from_groups([class_texts(n, digit=False) for n in class_names], labels)
    levels, thresholds = attribute_levels(measure_attributes(images), labels, len(class_names), thresholds)
    sig = (labels * 27 + levels["thickness"] * 9 + levels["slant"] * 3 + levels["size"]).tolist()
    keys = sorted(set(sig))
    groups = [digit_texts(int(class_names[s // 27]), {"thickness": s // 9 % 3, "slant": s // 3 % 3, "size": s % 3})
              for s in keys]
    where = {s: g for g, s in enumerate(keys)}
    return Captions.from_groups(groups, torch.tensor([where[s] for s in sig]), thresholds=thresholds)


# ---------------------------------------------------------------- attributes measured from the pixels


@torch.no_grad()
def measure_attributes(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Stroke thickness, slant and size of grayscale digits, uint8 (N, 1, H, W) -> three (N,) float tensors.

    Measured on the ink p = pixel / 255, in the spirit of Morpho-MNIST (Castro et al. 2019), but each one a few
    tensor operations:
      * thickness: ink mass / (boundary / 2), in pixels. A stroke of width w and length l has mass ~ w l and a
        boundary (ink pixels, p > 0.5, with a non-ink 8-neighbour) of ~ 2 l pixels;
      * slant: -mu11 / mu02 of the ink's central moments, the horizontal shift per row down the image, negated so
        that a digit leaning right (its top to the right) is positive;
      * size: sqrt(mu20 + mu02), the ink's radius of gyration in pixels.
    """
    out = {"thickness": [], "slant": [], "size": []}
    for chunk in images.split(4096):
        p = chunk[:, 0].float() / 255  # (B, H, W)
        ink = (p > 0.5).float()
        inner = -F.max_pool2d(-F.pad(ink, (1, 1, 1, 1))[:, None], 3, stride=1)[:, 0]  # erosion: all 8 neighbours ink
        boundary = (ink - inner).flatten(1).sum(1).clamp(min=1)
        mass = p.flatten(1).sum(1).clamp(min=1e-6)
        h, w = p.shape[-2:]
        y = torch.arange(h, dtype=torch.float32)[None, :, None]
        x = torch.arange(w, dtype=torch.float32)[None, None, :]
        my, mx = (p * y).flatten(1).sum(1) / mass, (p * x).flatten(1).sum(1) / mass
        dy, dx = y - my[:, None, None], x - mx[:, None, None]
        mu02, mu20 = (p * dy**2).flatten(1).sum(1) / mass, (p * dx**2).flatten(1).sum(1) / mass
        mu11 = (p * dx * dy).flatten(1).sum(1) / mass
        out["thickness"].append(mass / (boundary / 2))
        out["slant"].append(-mu11 / mu02.clamp(min=1e-6))
        out["size"].append((mu20 + mu02).sqrt())
    return {k: torch.cat(v) for k, v in out.items()}


def attribute_levels(values: dict[str, torch.Tensor], labels: torch.Tensor, num_classes: int,
                     thresholds: dict | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Levels 0/1/2 of measured attributes (below the first cut, between, above the second) and the cuts: the
    tertiles of each class's values, unless `thresholds` (attribute -> per class [lo, hi]) are given."""
    if thresholds is None:
        q = torch.tensor([1 / 3, 2 / 3])
        thresholds = {a: [torch.quantile(v[labels == c], q).tolist() if bool((labels == c).any()) else [0.0, 0.0]
                          for c in range(num_classes)] for a, v in values.items()}
    levels = {}
    for a, v in values.items():
        cuts = torch.tensor(thresholds[a])[labels]  # (N, 2)
        levels[a] = (v > cuts[:, 0]).long() + (v > cuts[:, 1]).long()
    return levels, thresholds


# ---------------------------------------------------------------- colour measured from the pixels

# Hue ranges (degrees, [lo, hi)) of the chromatic colour words; red wraps round 0. Brown is a dark orange-ish hue.
HUES = {"red": ((350, 360), (0, 15)), "orange": ((15, 40),), "yellow": ((40, 66),), "green": ((66, 170),),
        "blue": ((170, 255),), "purple": ((255, 300),), "pink": ((300, 350),)}
COLOURS = (*HUES, "brown", "black", "grey")  # every colour word a caption may hold, in index order
CHROMA_MIN_S, CHROMA_MIN_V = 0.15, 0.25  # a pixel of saturation and value above these has a hue
BROWN_HUES, BROWN_MAX_V = (15, 50), 0.75  # orange/yellowish hues this dark are brown
INK_MAX_V = 0.9  # a pixel darker than this (or chromatic) is not background white
# Another word for each colour, written in captions when data.emoji_synonyms is on, so a model learns a colour from
# more than one word; benchmarks/colour_search.py asks with other synonyms still (crimson, emerald, violet, ...).
COLOUR_SYNONYMS = {"red": "scarlet", "orange": "amber", "yellow": "lemon", "green": "lime", "blue": "cobalt",
                   "purple": "lilac", "pink": "rose", "brown": "chocolate", "black": "jet", "grey": "ash"}
SECOND_MIN_SHARE = 0.3  # a second hue on this share of the chromatic pixels is a second main colour ("red and blue")


def rgb_to_hsv(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hue in degrees [0, 360), saturation and value in [0, 1] of RGB in [0, 1] (N, 3, H, W) -> 3 x (N, H, W)."""
    v, _ = rgb.max(1)
    c = v - rgb.min(1).values
    s = torch.where(v > 0, c / v.clamp(min=1e-6), torch.zeros_like(v))
    r, g, b = rgb.unbind(1)
    safe = c.clamp(min=1e-6)
    h = torch.where(v == r, ((g - b) / safe) % 6, torch.where(v == g, (b - r) / safe + 2, (r - g) / safe + 4)) * 60
    return h % 360, s, v


@torch.no_grad()
def colour_counts(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per RGB uint8 image (N, 3, H, W): the chromatic pixels of each hue word and brown (N, 8), the ink pixels
    (every pixel not near-white, (N,)), and the ink's mean value (N,). A pixel has a hue when its HSV saturation
    > 0.15 and value > 0.25; white and grey pixels, a white background and black outlines among them, have none."""
    counts, inks, means = [], [], []
    for chunk in images.split(1024):
        h, s, v = rgb_to_hsv(chunk.float() / 255)
        chroma = (s > CHROMA_MIN_S) & (v > CHROMA_MIN_V)
        ink = chroma | (v < INK_MAX_V)
        brown = chroma & (h >= BROWN_HUES[0]) & (h < BROWN_HUES[1]) & (v < BROWN_MAX_V)
        hue = [sum(((h >= lo) & (h < hi) & chroma & ~brown).flatten(1).sum(1) for lo, hi in ranges)
               for ranges in HUES.values()]
        counts.append(torch.stack(hue + [brown.flatten(1).sum(1)], 1).float())  # (B, 8)
        inks.append(ink.flatten(1).sum(1).clamp(min=1))
        means.append((v * ink).flatten(1).sum(1) / inks[-1])
    if not counts:
        return torch.zeros(0, len(HUES) + 1), torch.zeros(0), torch.zeros(0)
    return torch.cat(counts), torch.cat(inks), torch.cat(means)


def _dominant(counts: torch.Tensor, n_ink: torch.Tensor, mean_v: torch.Tensor) -> torch.Tensor:
    grey = torch.where(mean_v < 0.35, COLOURS.index("black"), COLOURS.index("grey"))
    return torch.where(counts.sum(1) < 0.2 * n_ink, grey, counts.argmax(1))


def _second(counts: torch.Tensor, n_ink: torch.Tensor, min_share: float) -> torch.Tensor:
    top2 = counts.topk(2, dim=1)
    second = top2.values[:, 1] >= min_share * counts.sum(1)
    chromatic = counts.sum(1) >= 0.2 * n_ink
    return torch.where(second & chromatic, top2.indices[:, 1], torch.full_like(top2.indices[:, 1], -1))


def dominant_colour(images: torch.Tensor) -> torch.Tensor:
    """The colour word (an index into COLOURS) of each RGB image, uint8 (N, 3, H, W) -> (N,) int64: the hue that
    covers most chromatic pixels. An image whose chromatic pixels are under a fifth of its ink is black or grey by
    the mean value of its ink."""
    return _dominant(*colour_counts(images))


def main_colours(images: torch.Tensor, min_share: float = SECOND_MIN_SHARE) -> tuple[torch.Tensor, torch.Tensor]:
    """`dominant_colour` and `second_colour` of each image, from one count of its pixels."""
    counts, n_ink, mean_v = colour_counts(images)
    return _dominant(counts, n_ink, mean_v), _second(counts, n_ink, min_share)


def second_colour(images: torch.Tensor, min_share: float = SECOND_MIN_SHARE) -> torch.Tensor:
    """The second main colour word of each RGB image (an index into COLOURS), or -1: the hue with the second most
    chromatic pixels when it covers at least `min_share` of them and the image is chromatic at all."""
    counts, n_ink, _ = colour_counts(images)
    return _second(counts, n_ink, min_share)


def named_colour(text: str) -> int | None:
    """The colour word a prompt names (an index into COLOURS; 'gray' is grey), or None when it names none or
    several."""
    words = set(re.findall(r"[a-z]+", text.lower().replace("gray", "grey")))
    named = [i for i, w in enumerate(COLOURS) if w in words]
    return named[0] if len(named) == 1 else None


def parse_prompt(text: str, class_names: list[str], digits: bool) -> tuple[int | None, dict[str, int]]:
    """The class a prompt names (a digit as a word or numeral; else a class name) and the attribute levels it
    asks for, from the caption vocabulary above: ("a thin seven leaning left") -> (7, {thickness: 0, slant: 0})."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    vocab = {(DIGIT_WORDS[int(n)] if digits else n.replace("_", " ").replace("&", "and").lower()): c
             for c, n in enumerate(class_names)}
    if digits:
        vocab.update({n: c for c, n in enumerate(class_names)})
    joined = f" {' '.join(words)} "
    named = [c for name, c in vocab.items() if f" {name} " in joined]
    levels = {}
    for attribute, names in ATTRIBUTES.items():
        for level, phrase in enumerate(names):
            if phrase is not None and phrase.split()[-1] in words:
                levels[attribute] = level
    for word, (attribute, level) in SYNONYMS.items():
        if word in words:
            levels[attribute] = level
    return (named[0] if len(set(named)) == 1 else None), levels


# ---------------------------------------------------------------- image folders


def read_folder_captions(root: Path) -> dict[Path, str]:
    """Captions by resolved image path: every metadata.jsonl under `root` (`file_name` relative to its folder)."""
    found = {}
    for meta in sorted(root.rglob("metadata.jsonl")):
        for n, line in enumerate(meta.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                found[(meta.parent / rec["file_name"]).resolve()] = str(rec["text"]).strip()
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise UserError(f"{meta}:{n}: each line must be a JSON object with file_name and text ({e})") from None
    return found


def folder_captions(root: Path, files: list[Path], labels: torch.Tensor | None, class_names: list[str],
                    required: bool) -> Captions | None:
    """Captions of a folder's images: metadata.jsonl, else a .txt beside the image. None when no image has one and
    captions are not `required`; class templates for a class folder without any."""
    meta = read_folder_captions(root)
    own = []
    for f in files:
        txt = f.with_suffix(".txt")
        own.append(meta.get(f.resolve(), txt.read_text().strip() if txt.is_file() else None))
    missing = sum(t is None for t in own)
    if missing == len(files):
        if not required:
            return None
        if labels is None:
            raise UserError(f"no captions found in {root}: add a metadata.jsonl (lines of {{\"file_name\": ..., "
                            f"\"text\": ...}}) or a .txt beside each image")
        return class_captions(labels, class_names)
    if missing:
        fallback = "their class's captions" if labels is not None else "the empty prompt"
        warnings.warn(f"{missing} of {len(files)} images in {root} have no caption (metadata.jsonl or .txt): they "
                      f"train with {fallback}", stacklevel=3)
    class_groups = [class_texts(n, digit=False) for n in class_names] if labels is not None else [[""]]
    groups = class_groups + [[t] for t in own if t is not None]
    group, nxt = [], len(class_groups)
    for i, t in enumerate(own):
        group.append((int(labels[i]) if labels is not None else 0) if t is None else nxt)
        nxt += t is not None
    return Captions.from_groups(groups, torch.tensor(group), uncaptioned=missing)
