"""The settings an image was drawn with, carried in its PNG as a text chunk named `parameters`: the convention of
the diffusion web UIs (AUTOMATIC1111 and the tools that read it), so their "PNG info" readers show ours too.

    a red bird on a branch                      <- the prompt (text models only)
    Negative prompt: blurry                     <- (when given)
    Steps: 20, Sampler: ddim, Guidance: 1.0, Seed: 5, Image index: 3, Image seed: 8, Class: 7, Size: 28x28, ...

`noisecraft sample` and the web server write it; `noisecraft info IMAGE.png` prints it. Torch-free.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

CHUNK = "parameters"
_TEXT_KEYS = ("prompt", "negative_prompt")  # lines of their own, before the key-value line
_PAIR = re.compile(r'\s*([A-Za-z][A-Za-z0-9 _-]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def image_settings(pipe, request, *, model: str, **extra: Any) -> list[dict[str, Any]]:
    """The settings of each image of a request: `pipe` (a Pipeline) and `request` (its prepared `Request`: the
    conditions, seeds and resolved options of the n images); `extra` is added to every image's settings."""
    _, h, w = pipe.image_shape
    opts, labels, out = request.options, request.conditions, []
    for i in range(request.n):  # the web UIs' order: what was drawn, how, which seed; then the model
        asked = pipe.conditioner.image_settings(labels[i]) if labels is not None else {}
        s: dict[str, Any] = {k: v for k, v in asked.items() if k in _TEXT_KEYS}  # the prompt leads
        if getattr(opts, "negative_prompt", None):
            s["negative_prompt"] = opts.negative_prompt
        s.update(steps=opts.steps, sampler=opts.sampler, guidance=opts.guidance)
        if opts.guidance and opts.guidance_interval:
            s["guidance_interval"] = ",".join(str(v) for v in opts.guidance_interval)
        s.update(seed=opts.seed, index=i, image_seed=request.seeds[i])
        s.update({k: v for k, v in asked.items() if k not in _TEXT_KEYS})  # a class follows the seed
        if request.source is not None:
            s.update(_edit_settings(request, i))
        s.update(size=f"{w}x{h}", model=model, model_step=pipe.step, precision=opts.precision)
        if getattr(request, "loras", ()):  # each adapter as name:sha256:scale (A1111 writes "Lora hashes")
            s["lora"] = ", ".join(f"{name}:{sha}:{scale:g}" for name, sha, scale in request.loras)
        s.update(extra)
        out.append(s)
    return out


def _edit_settings(request, i: int) -> dict[str, Any]:
    """An edit's part of image i's settings: strength (A1111's "Denoising strength"), the mask, the source."""
    from noisecraft.editing import describe_mask

    src, opts = request.source, request.options
    s: dict[str, Any] = {"denoising_strength": opts.strength}
    if src.inpainting:
        s.update(mask=describe_mask(src.mask[i]), jumps=opts.jumps)
    s["source_sha256"] = src.sha256[i]
    return s


def _label(key: str) -> str:
    return "Image index" if key == "index" else key.replace("_", " ").capitalize()


def _value(v: Any) -> str:
    if isinstance(v, float) and math.isinf(v):
        v = "inf"
    text = str(v)
    return json.dumps(text, ensure_ascii=False) if any(ch in text for ch in ',:"\n') else text


def format_parameters(settings: dict[str, Any]) -> str:
    """Settings -> the `parameters` text (prompt lines, then one 'Key: value, ...' line; None values left out)."""
    lines = []
    if settings.get("prompt") is not None:
        lines.append(str(settings["prompt"]).replace("\n", " "))
    if settings.get("negative_prompt"):
        lines.append("Negative prompt: " + str(settings["negative_prompt"]).replace("\n", " "))
    pairs = [f"{_label(k)}: {_value(v)}" for k, v in settings.items() if k not in _TEXT_KEYS and v is not None]
    return "\n".join(lines + [", ".join(pairs)])


def _parse_value(text: str) -> Any:
    text = text.strip()
    if text.startswith('"'):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_parameters(text: str) -> dict[str, Any]:
    """The `parameters` text -> settings (the inverse of `format_parameters`, for our keys)."""
    lines = text.strip().splitlines()
    out: dict[str, Any] = {}
    if not lines:
        return out
    for line in lines[:-1]:
        if line.startswith("Negative prompt:"):
            out["negative_prompt"] = line.partition(":")[2].strip()
        else:
            out["prompt"] = (out["prompt"] + "\n" + line) if "prompt" in out else line
    for m in _PAIR.finditer(lines[-1]):
        key = m.group(1).strip().lower().replace(" ", "_")
        out["index" if key == "image_index" else key] = _parse_value(m.group(2))
    return out


def png_info(settings: dict[str, Any]):
    """A PIL PngInfo holding the `parameters` chunk (UTF-8 iTXt when the text is not Latin-1)."""
    from PIL.PngImagePlugin import PngInfo

    info, text = PngInfo(), format_parameters(settings)
    try:
        text.encode("latin-1")
        info.add_text(CHUNK, text)
    except UnicodeEncodeError:
        info.add_itxt(CHUNK, text)
    return info


def read_parameters(path: str | Path) -> str | None:
    """The `parameters` text of a PNG file, or None when it has none."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()  # text chunks after the image data are read with it
        value = getattr(im, "text", {}).get(CHUNK) or im.info.get(CHUNK)
    return None if value is None else str(value)
