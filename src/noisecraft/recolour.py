"""Recolouring: caption-consistent colour augmentation for text-to-image runs on colour images (data.recolour).

A colour word is learnt from the shapes that wear it: among the emoji, purple is 3% of the images and no heart,
circle or square is purple, so a model asked for "a purple heart" draws a pink one. Each recoloured copy turns every
hue of a training image by one angle (saturation and value kept, so black outlines and white stay as they are), so
that its main colour becomes another colour word, and rewrites that word in its captions. Unlike a colour jitter the
caption tells the network what changed, so the augmentation does not leak: the network learns "purple" on every
shape, and an uncoloured caption ("grinning face") still means the colours real images have, because a copy keeps
only the captions that name its colour. The colour words are those `captions.dominant_colour` measures, the same
measure that wrote the emoji's captions and that judges samples; a copy whose measured colours do not come out as
its rewritten words is dropped.
"""
from __future__ import annotations

import dataclasses
import re

import torch

from noisecraft.captions import (CHROMA_MIN_S, CHROMA_MIN_V, COLOUR_SYNONYMS, COLOURS, HUES, Captions, main_colours,
                                 rgb_to_hsv)
from noisecraft.errors import UserError

RECOLOUR_SEED = 4321  # the copies' target colours are part of the data set's definition, not of a run's seed
HUE_WORDS = tuple(HUES)  # the chromatic colour words, which a turn of hue maps onto each other


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The inverse of `rgb_to_hsv`: 3 x (N, H, W) -> (N, 3, H, W) in [0, 1]."""
    k = torch.stack([(5 + h / 60) % 6, (3 + h / 60) % 6, (1 + h / 60) % 6], 1)  # (N, 3, H, W)
    return v[:, None] - (v * s)[:, None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def turn_hue(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """RGB uint8 images (N, 3, H, W) with every pixel's hue turned by `degrees` (N,); greys are unchanged."""
    h, s, v = rgb_to_hsv(images.float() / 255)
    rgb = hsv_to_rgb((h + degrees.float()[:, None, None]) % 360, s, v)
    return (rgb * 255).round().clamp(0, 255).to(torch.uint8)


def own_hue(images: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """The circular mean hue (degrees) of each image's pixels of its colour word `colour` (N,): where it sits
    inside that word's range (a red emoji at 2 degrees, an orange one at 35)."""
    h, s, v = rgb_to_hsv(images.float() / 255)
    ranges = [HUES[COLOURS[c]] for c in colour.tolist()]
    inside = torch.stack([sum(((h[i] >= lo) & (h[i] < hi)).float() for lo, hi in r) for i, r in enumerate(ranges)])
    weight = inside * (s > CHROMA_MIN_S) * (v > CHROMA_MIN_V)  # (N, H, W) the chromatic pixels of that word
    return circular_mean(h.flatten(1), weight.flatten(1))


def circular_mean(degrees: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The mean direction (degrees in [0, 360)) of angles along the last dimension, optionally weighted."""
    a = torch.deg2rad(degrees.float())
    w = torch.ones_like(a) if weights is None else weights
    return torch.rad2deg(torch.atan2((w * a.sin()).sum(-1), (w * a.cos()).sum(-1))) % 360


def typical_hues(hue: torch.Tensor, colour: torch.Tensor) -> dict[int, float]:
    """Each hue word's typical hue: in the data, the circular mean of the own hues of the images it is the main
    colour of (the emoji's green is a lime near 70 degrees, not the range's middle); a word no image wears, the
    middle of its range."""
    grid = torch.arange(0, 360, 0.5)
    inside = {w: sum(((grid >= lo) & (grid < hi)).int() for lo, hi in HUES[w]) > 0 for w in HUE_WORDS}
    out = {COLOURS.index(w): float(circular_mean(grid[inside[w]])) for w in HUE_WORDS}
    for c in colour.unique().tolist():
        out[c] = float(circular_mean(hue[colour == c]))
    return out


def rewrite(text: str, words: dict[str, str]) -> str | None:
    """`text` with each colour word (or its synonym) replaced as `words` maps it; None when it names a colour
    outside `words` (a caption that would lie about the copy) or names none (it says nothing about colour)."""
    found = False

    def swap(m: re.Match) -> str:
        nonlocal found
        found = True
        return words[m.group(0).lower()]

    named = re.findall(r"[a-z]+", text.lower())
    every = set(COLOURS) | set(COLOUR_SYNONYMS.values())
    if any(w in every and w not in words for w in named):
        return None
    alternatives = "|".join(map(re.escape, words))
    out = re.sub(rf"\b({alternatives})\b", swap, text, flags=re.IGNORECASE)
    # "an orange fox" turned red is "a red fox": the article before a rewritten word follows the new word
    article = lambda m: m.group(1)[0] + ("n " if m.group(2)[0].lower() in "aeiou" else " ")  # noqa: E731
    out = re.sub(rf"\b(an?) (?=({'|'.join(map(re.escape, set(words.values())))})\b)", article, out,
                 flags=re.IGNORECASE)
    return out if found else None


def word_map(old: tuple[int, int], new: tuple[int, int]) -> dict[str, str]:
    """Colour words (and their synonyms) of an image's main colours (dominant, second or -1) -> the copy's."""
    words = {}
    for o, n in zip(old, new):
        if o >= 0:
            words[COLOURS[o]] = COLOURS[n]
            words[COLOUR_SYNONYMS[COLOURS[o]]] = COLOUR_SYNONYMS[COLOURS[n]]
    return words


def plan(images: torch.Tensor, colour: torch.Tensor, copies: int, seed: int = RECOLOUR_SEED
         ) -> list[tuple[int, int, float]]:
    """(image index, target colour, degrees) of each copy to try: `copies` other hue words per image whose main
    colour `colour` (N,) is one, drawn without repeats from (seed, image); turned from its own hue to the target's
    typical one."""
    chromatic = torch.tensor([COLOURS[c] in HUE_WORDS for c in colour.tolist()])
    index = chromatic.nonzero().flatten()
    if not len(index):
        return []
    hue = own_hue(images[index], colour[index])
    typical = typical_hues(hue, colour[index])
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, h in zip(index.tolist(), hue.tolist()):
        others = [c for c in typical if c != int(colour[i])]
        order = torch.randperm(len(others), generator=g).tolist()
        out += [(i, others[k], (typical[others[k]] - h) % 360) for k in order[:copies]]
    return out


def recolour(data, copies: int, captioned: bool = True, seed: int = RECOLOUR_SEED):
    """The training split with up to `copies` recoloured copies of each image appended (see the module's
    docstring); labels are kept, captions rewritten; copies that do not measure as their words are dropped. Not
    `captioned` (an autoencoder's data, captions off): every copy is kept, as plain hue augmentation."""
    if copies <= 0:
        return data
    if data.channels != 3:
        raise UserError("data.recolour turns the hues of colour images; this data set is greyscale")
    if captioned and data.captions is None:
        raise UserError("data.recolour rewrites the colour words of captions; this run has none (a text-to-image run "
                        "on captioned colour images needs data.captions on)")
    dominant, second = main_colours(data.images)
    tries = plan(data.images, dominant, copies, seed)
    if not tries:
        return data
    index = torch.tensor([i for i, _, _ in tries])
    images = turn_hue(data.images[index], torch.tensor([d for _, _, d in tries]))
    if not captioned:
        return _with_copies(data, index, images)
    old, new = (dominant[index], second[index]), main_colours(images)
    caps = data.captions
    groups = [[caps.texts[t] for t in caps.options[g, :caps.counts[g]].tolist()] for g in range(len(caps.counts))]
    keep, new_groups = [], []
    for k, (i, target, _) in enumerate(tries):
        texts = _copy_texts(groups[int(caps.group[i])], (int(old[0][k]), int(old[1][k])),
                            (int(new[0][k]), int(new[1][k])), target)
        if texts:
            keep.append(k)
            new_groups.append(texts)
    return _appended(data, groups, index[keep], images[keep], new_groups)


def _copy_texts(texts: list[str], old: tuple[int, int], new: tuple[int, int], target: int) -> list[str]:
    """A copy's captions: those of its original naming its colours, rewritten; none when the copy's measured main
    colour is not its target or its second colour did not stay a second, distinct colour."""
    if new[0] != target or (old[1] >= 0) != (new[1] >= 0) or new[0] == new[1]:
        return []
    words = word_map(old, new)
    return list(dict.fromkeys(t for t in (rewrite(x, words) for x in texts) if t))


def _appended(data, groups: list[list[str]], index: torch.Tensor, images: torch.Tensor, new_groups: list[list[str]]):
    """`data` with `images` (copies of data's images `index`) appended, each with its own caption group."""
    caps = data.captions
    group = torch.cat([caps.group, len(groups) + torch.arange(len(new_groups))])
    captions = Captions.from_groups(groups + new_groups, group, thresholds=caps.thresholds,
                                    uncaptioned=caps.uncaptioned)
    return dataclasses.replace(_with_copies(data, index, images), captions=captions)


def _with_copies(data, index: torch.Tensor, images: torch.Tensor):
    """`data` with `images`, copies of its images `index`, appended under the same labels."""
    labels = None if data.labels is None else torch.cat([data.labels, data.labels[index]])
    return dataclasses.replace(data, images=torch.cat([data.images, images]), labels=labels)
