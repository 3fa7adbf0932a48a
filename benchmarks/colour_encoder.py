"""What the frozen text encoder itself knows of colour synonyms: the ceiling on colour_search's synonym prompts.

A network conditioned on a frozen encoder can only tell "a crimson heart" means red if the encoder puts it nearer
"a red heart" than the other colours' prompts. For each synonym colour_search asks with (never a training caption's
word), and each shape, this takes the colour word whose prompt "a {colour} {shape}" has the nearest pooled embedding
(cosine) and counts how often that is the colour the synonym names; the same for colour_search's word-order forms,
which name the colour by its own word. No model is trained; it takes seconds.

    python benchmarks/colour_encoder.py        # writes benchmarks/results/colour_encoder.json
"""
from __future__ import annotations

from common.colour_prompts import COLOURS, FORMS, SHAPES, SYNONYMS
from common.machine import record
from common.results import RESULTS, write_result


def nearest_colours(encoder: str, template: str) -> dict[str, dict[str, str]]:
    """For each colour and shape: the caption colour whose "a {colour} {shape}" is nearest `template`'s prompt."""
    import torch.nn.functional as F

    from noisecraft.conditioning.text import TextEncoder

    enc = TextEncoder(encoder, 16)
    out = {}
    for shape in SHAPES:
        bank = F.normalize(enc.encode([f"a {c} {shape}" for c in COLOURS])["context_pooled"], dim=-1)
        asked = [template.format(colour=c, synonym=SYNONYMS[c], shape=shape) for c in COLOURS]
        query = F.normalize(enc.encode(asked)["context_pooled"], dim=-1)
        nearest = (query @ bank.T).argmax(1).tolist()
        out[shape] = {c: COLOURS[n] for c, n in zip(COLOURS, nearest)}
    return out


def main() -> None:
    from noisecraft.conditioning.text import default_text_encoder

    encoder = default_text_encoder()
    forms = {"synonym": FORMS["synonym"][0], **{f"order: {t}": t for t in FORMS["order"]}}
    result = {"encoder": encoder, "synonyms": SYNONYMS, "machine": record()}
    for name, template in forms.items():
        nearest = nearest_colours(encoder, template)
        right = sum(n == c for by_colour in nearest.values() for c, n in by_colour.items())
        result[name] = {"template": template, "nearest_right": round(right / (len(SHAPES) * len(COLOURS)), 4),
                        "nearest": nearest}
    write_result(result, RESULTS, "colour_encoder")


if __name__ == "__main__":
    main()
