"""What a batch's condition is at training, owned by the conditioner as sampling's is: class labels with the null
class where label dropout strikes, or the training captions' embeddings with the empty prompt; the held-out
split's conditions (the same every call); the null condition; and the rows the sample grids show."""
from __future__ import annotations

import torch

from noisecraft.conditioning import class_cond, null_cond
from noisecraft.conditioning.prompt_syntax import literal
from noisecraft.errors import UserError

VAL_CAPTION_SEED = 54321  # the held-out images' captions are drawn once, with this seed, so every call sees the same


class ClassTraining:
    """Class labels (B,) with the null token `num_classes` for dropout (Ho & Salimans 2022); unconditional: None."""

    text = None  # no prompt embeddings
    figure_prompt = None  # no cross-attention figure

    def __init__(self, num_classes: int, device: torch.device):
        self.num_classes, self.device = num_classes, device

    def batch(self, y: torch.Tensor | None, drop: torch.Tensor | None = None) -> dict | None:
        """The network's conditioning of a batch's labels y (B,); `drop` (B,) marks those given the null class."""
        if y is None:
            return None
        return class_cond(y if drop is None else torch.where(drop, torch.full_like(y, self.num_classes), y))

    def null(self) -> dict | None:
        return null_cond(self.num_classes, self.device) if self.num_classes else None

    def held_out(self, data, start: int, stop: int) -> dict | None:
        return class_cond(data.labels[start:stop].to(self.device) if data.labels is not None else None)

    def rows(self, n: int | None = None) -> torch.Tensor | None:
        """What the figures' rows show: every class, or None (unconditional)."""
        return torch.arange(self.num_classes)[:n] if self.num_classes else None

    def prompts(self, n: int) -> list[str]:
        return []

    def metadata(self) -> dict:
        return {}


class CaptionTraining:
    """Caption ids (B,) into the training captions, each embedded once up front by the frozen text encoder (cached
    in the run directory); caption 0 is the empty prompt, which caption dropout shows."""

    def __init__(self, model_cfg, captions, device: torch.device, file=None, save: bool = True,
                 texts: list[str] | None = None):
        from noisecraft.conditioning.text import TextEmbeddings

        self.captions, self.device = captions, device
        self.text = TextEmbeddings(model_cfg.text_encoder, model_cfg.text_max_tokens, device, file)
        cached = len(self.text)
        texts = captions.texts if texts is None else texts  # the rows a batch's ids index: the captions
        self.table = self.text(texts, device)  # (T, L, D) tokens, (T, L) mask, (T, D) pooled
        if file is not None and len(self.text) > cached and save:
            self.text.save(file)
        # captions read as they are written when drawn as prompts (brackets in a folder's captions: no syntax)
        self.preview_prompts = [literal(c) for c in captions.examples(10)]  # the rows of the sample grids
        self.figure_prompt = literal(max(captions.texts[:200], key=len))  # digits: naming all three attributes
        self._val_texts: list[str] | None = None

    def batch(self, y: torch.Tensor | None, drop: torch.Tensor | None = None) -> dict:
        ids = y if drop is None else torch.where(drop, torch.zeros_like(y), y)
        return {k: v[ids] for k, v in self.table.items()}

    def null(self) -> dict:
        return {k: v[:1] for k, v in self.table.items()}  # caption 0: the empty prompt

    def held_out(self, data, start: int, stop: int) -> dict:
        """One caption drawn for each held-out image, the same every call."""
        if self._val_texts is None:
            caps, n = data.captions, len(data)
            ids = caps.draw(torch.arange(n), torch.rand(n, generator=torch.Generator().manual_seed(VAL_CAPTION_SEED)))
            self._val_texts = [caps.texts[i] for i in ids.tolist()]
        return self.text(self._val_texts[start:stop], self.device)

    def rows(self, n: int | None = None) -> list[str]:
        """What the figures' rows show: preview prompts."""
        return self.preview_prompts[:n]

    def prompts(self, n: int) -> list[str]:
        """Prompts for the process figures."""
        return list(self.preview_prompts[:n])

    def metadata(self) -> dict:
        """What evaluation measures generated images' attributes against."""
        return {"attribute_thresholds": self.captions.thresholds}


def training_conditioner(model_cfg, captions, device: torch.device, file=None, save: bool = True,
                         texts: list[str] | None = None):
    """The training side of the conditioner a model config asks for (prompts when it has a text encoder's width)."""
    if model_cfg.context_dim:
        return CaptionTraining(model_cfg, captions, device, file, save, texts)
    return ClassTraining(model_cfg.num_classes, device)


def configure_conditioning(cfg, data) -> None:
    """What conditions a new run's network, from its data: captions through the text encoder (its width), else
    the data's classes (none: unconditional)."""
    if data.captions is None:
        if cfg.model.text_encoder:
            raise UserError(f"model.text_encoder is set but the {cfg.data.dataset} data has no captions: add "
                            f"--data.captions=on")
        cfg.model.num_classes = data.num_classes
        return
    from noisecraft.conditioning.text import default_text_encoder, encoder_spec

    cfg.model.text_encoder = cfg.model.text_encoder or default_text_encoder()
    cfg.model.context_dim = encoder_spec(cfg.model.text_encoder)["dim"]
    cfg.model.num_classes = 0  # the captions condition the model, not the classes
