"""Conditioning: class labels with a null token for classifier-free guidance; prompts through a frozen text
encoder in `conditioning.text`.

A pipeline holds one *conditioner* (`Unconditional`, `ClassLabels`, `conditioning.text.TextPrompts`, chosen by
`conditioner_for` from the model config): it turns a request into per-image conditions (`request`), a batch of
them into the network's conditioning dict (`condition`), and gives the "no condition" that guidance contrasts with
(`null`). It knows nothing about the space the images are drawn in, so any conditioner works with any codec.

A conditioning is a dict of batched tensors passed to the network as keyword arguments (`{"class_labels": (B,)}`,
or for text `{"context": (B, L, D), "context_mask": (B, L), "context_pooled": (B, D)}`), so the samplers, guidance
and trainer can batch, concatenate and drop it without knowing what it holds.
"""
from __future__ import annotations

import json

import torch

from noisecraft.errors import UserError


def class_cond(labels: torch.Tensor | None) -> dict | None:
    return None if labels is None else {"class_labels": labels}


def null_cond(num_classes: int, device) -> dict:
    """The 'no condition' token: class index `num_classes` (the extra embedding row)."""
    return {"class_labels": torch.tensor([num_classes], device=device)}


def sample_labels(n: int, num_classes: int, class_index: int | list[int] | None = None,
                  class_names: list[str] | None = None) -> torch.Tensor | None:
    """Labels for n samples: one requested class, a list of classes cycled, or all classes balanced."""
    if num_classes == 0:
        if class_index is not None:
            raise UserError("this model is unconditional: drop --class")
        return None
    if class_index is None:
        return torch.arange(n) % num_classes
    wanted = [class_index] if isinstance(class_index, int) else list(class_index)
    for c in wanted:
        if not 0 <= c < num_classes:
            names = f" ({', '.join(class_names)})" if class_names else ""
            raise UserError(f"class {c} is out of range: this model has classes 0..{num_classes - 1}{names}")
    return torch.tensor(wanted)[torch.arange(n) % len(wanted)]


def take(conditions: torch.Tensor | list[str] | None, index: list[int]) -> torch.Tensor | list[str] | None:
    """The per-image conditions at `index`: class labels (a tensor) or prompts (a list of strings)."""
    if conditions is None:
        return None
    if torch.is_tensor(conditions):
        return conditions[torch.as_tensor(index, dtype=torch.long)]
    return [conditions[i] for i in index]


class Unconditional:
    """No condition: a request names only how many images."""

    kind = "unconditional"
    num_classes = 0
    guidable = False  # classifier-free guidance needs a condition to contrast with the null one
    takes_prompts = False  # requests name prompts (and may carry <lora:...> tags)
    noun = ""  # what a figure's title calls one condition ("class 7", "prompt a seven")

    def __init__(self, class_names: list[str] | None = None):
        self.class_names = list(class_names or [])

    def request(self, n: int | None, class_index=None, labels=None, prompt=None) -> tuple[int, None]:
        if prompt is not None:
            raise UserError("this model is unconditional: it takes no prompt")
        if class_index is not None:
            raise UserError("this model is unconditional: drop --class")
        if labels is not None:
            raise UserError("this model is unconditional: it takes no class labels")
        return _count(n), None

    def condition(self, conditions, device, sigmas=None) -> dict | None:
        return None

    def check_negative(self, negative_prompt: str) -> None:
        raise UserError("this model is unconditional: it takes no negative prompt")

    def check_steps(self, conditions, negative_prompt: str | None, steps: int) -> None:
        """Conditions that change during sampling must fit in `steps` (only prompts can)."""

    def null(self, negative_prompt: str | None, device, sigmas=None) -> dict | None:
        return None

    def unasked(self, n: int) -> torch.Tensor | None:
        """What an edit that names no condition draws with (None: as an ordinary request without one)."""
        return None

    def figure_rows(self, n: int, class_index: int | None = None, prompts=None, examples=None):
        """The condition of each of n rows of a figure: None (nothing to choose)."""
        return None

    def row_names(self, rows) -> list[str]:
        """What a figure writes beside each of its rows: nothing."""
        return [""] * len(rows)

    def edit_rows(self, own_class, rows):
        """The conditions an editing figure asks of a held-out image, its own and another: none to ask.
        `own_class()`: the image's class; `rows(n)`: the figures' rows."""
        return None

    def evaluation_prompts(self, given: list[str] | None, default) -> dict | None:
        """How an evaluation prompts this model: not at all (its samples are class-balanced, i % K, or
        unconditional); prompts `given` are left to `request`, which refuses them."""
        return None

    def conditions_file(self, conditions) -> tuple[str, str] | None:
        """The file written beside sampled images naming what each was asked, and its text: none."""
        return None

    def request_classes(self) -> list[str]:
        """The classes a request may name (the web page's choices): none."""
        return []

    def image_settings(self, condition) -> dict:
        """What an image's `parameters` record of the condition it was drawn with: nothing."""
        return {}


class ClassLabels(Unconditional):
    """Class labels (n,), with the extra class index `num_classes` as the null token."""

    kind = "class"
    guidable = True
    noun = "class"

    def __init__(self, num_classes: int, class_names: list[str] | None = None):
        super().__init__(class_names)
        self.num_classes = num_classes

    def request(self, n: int | None, class_index: int | list[int] | None = None, labels=None, prompt=None
                ) -> tuple[int, torch.Tensor]:
        """`class_index` (one class, or a list cycled), `labels` (n,) as given, or neither: all classes in turn."""
        if prompt is not None:
            raise UserError("this model is class-conditional: it takes a class (--class), not a prompt")
        if labels is not None:
            if class_index is not None:
                raise UserError("give class_index or labels, not both")
            if not torch.is_tensor(labels) and any(isinstance(v, str) for v in labels):
                raise UserError("this model is class-conditional: it takes a class (--class), not a prompt")
            labels = torch.as_tensor(labels)
            n = len(labels) if n is None else n
            if len(labels) != n or bool(((labels < 0) | (labels >= self.num_classes)).any()):
                raise UserError(f"labels must be {n} classes in 0..{self.num_classes - 1}, got {labels.tolist()}")
            return _count(n), labels
        n = _count(n)
        return n, sample_labels(n, self.num_classes, class_index, self.class_names)

    def condition(self, labels: torch.Tensor, device, sigmas=None) -> dict:
        return class_cond(labels.to(device))

    def check_negative(self, negative_prompt: str) -> None:
        raise UserError("this model is class-conditional: a negative prompt needs a text-to-image model")

    def null(self, negative_prompt: str | None, device, sigmas=None) -> dict:
        return null_cond(self.num_classes, device)

    def unasked(self, n: int) -> torch.Tensor:
        """An edit of a class model that names no class keeps the image's own content: the null token, unguided."""
        return torch.full((n,), self.num_classes)

    def figure_rows(self, n: int, class_index: int | None = None, prompts=None, examples=None) -> torch.Tensor:
        """Class labels (n,): `class_index` in every row, or the classes in turn."""
        k = self.num_classes
        return torch.tensor([class_index if class_index is not None else i % k for i in range(n)])

    def row_names(self, rows: torch.Tensor) -> list[str]:
        """Each row's class name (its index where the run has no names, or for the null class)."""
        names = self.class_names
        return [names[int(c)] if int(c) < len(names) else str(int(c)) for c in rows]

    def edit_rows(self, own_class, rows) -> torch.Tensor:
        """The image's class `own_class()` and the next one (2,)."""
        own = own_class()
        return torch.tensor([own, (own + 1) % self.num_classes])

    def conditions_file(self, labels: torch.Tensor) -> tuple[str, str]:
        return "labels.json", json.dumps(labels.tolist()) + "\n"

    def request_classes(self) -> list[str]:
        """The class names, or the class indices as text where the run has none."""
        return self.class_names or [str(i) for i in range(self.num_classes)]

    def image_settings(self, label) -> dict:
        """Its class (its name where the run has names), or "none" for the null token."""
        c = int(label)
        if c >= self.num_classes:
            return {"class": "none"}
        return {"class": c, **({"class_name": self.class_names[c]} if c < len(self.class_names) else {})}


def _count(n: int | None) -> int:
    n = 1 if n is None else n
    if n <= 0:
        raise UserError(f"n must be > 0, got {n}")
    return n


def conditioner_for(model_cfg, class_names: list[str] | None = None, *, text=None, text_cache=None, device="cpu"):
    """The conditioner a model config asks for (`ModelConfig.conditioning`): text models get `TextPrompts` over
    `text` (a `TextEmbeddings`) or, lazily, over the run's cache file `text_cache`."""
    kind = model_cfg.conditioning
    if kind == "text":
        from noisecraft.conditioning.text import TextPrompts

        return TextPrompts(model_cfg, text=text, cache=text_cache, device=device, class_names=class_names)
    if kind == "class":
        return ClassLabels(model_cfg.num_classes, class_names)
    return Unconditional(class_names)
