"""The colour prompts the emoji benchmarks ask: six colour words, three shapes, and the forms no caption holds."""
from __future__ import annotations

COLOURS = ("red", "orange", "yellow", "green", "blue", "purple")
SHAPES = ("heart", "circle", "square")
# Another word for each colour that no training caption uses (data.emoji_synonyms writes others).
SYNONYMS = {"red": "crimson", "orange": "tangerine", "yellow": "golden", "green": "emerald", "blue": "azure",
            "purple": "violet"}
FORMS = {"order": ("a {shape} in {colour}", "a {colour} coloured {shape}"), "synonym": ("a {synonym} {shape}",),
         "caption": ("a {colour} {shape}",)}
