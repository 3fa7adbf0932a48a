"""What a batch's condition is at training, owned by the conditioner as sampling's is: class labels with the null
class where label dropout strikes, or the training captions' embeddings with the empty prompt; the held-out
split's conditions (the same every call); the null condition; the rows the sample grids show; and what a
fine-tuning (`train.finetune`) learns from: its folder's labels or captions, its prior images' conditions, its
trigger."""
from __future__ import annotations

import dataclasses

import torch

from noisecraft.captions import class_texts
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

    # ---- fine-tuning a base run on a folder of images (`train.finetune`)

    folder_captions = "off"  # the folder's class sub-folders are its labels

    @staticmethod
    def default_prior(names: list[str], digit: bool) -> tuple[str, ...]:
        """What the base drew that an adapter must keep: its classes, by name."""
        return tuple(names)

    @classmethod
    def check_folder(cls, data, root) -> None:
        """Any folder of images fits a class (or unconditional) base."""

    def base_labels(self, data, base_names, single_class):
        """The folder's labels renumbered as the base's classes `base_names()` (by name; a folder without labels
        is all `single_class()`); an unconditional base: the data as it is."""
        if not self.num_classes:
            return data
        names = base_names()
        folder = list(data.class_names) if data.labels is not None else [single_class()]
        unknown = [n for n in folder if n not in names]
        if unknown:
            raise UserError(f"the base's classes are {', '.join(names)}; the folder's class(es) {', '.join(unknown)} "
                            f"are not among them (name the sub-folders as the base's classes, or set "
                            f"--finetune.trigger to one for a folder of one class)")
        old = data.labels if data.labels is not None else torch.zeros(len(data), dtype=torch.long)
        labels = torch.tensor([names.index(n) for n in folder])[old]
        return dataclasses.replace(data, labels=labels, class_names=names)

    def prior_conditions(self, prior: list[str], which: list[int], base_names) -> tuple[torch.Tensor, torch.Tensor]:
        """The labels (P,) of prior images drawn for the base's classes named by the prior prompts `which`
        indexes: what the base is asked for and what the adapter's batches see."""
        names = base_names()
        ids = torch.tensor([names.index(prior[i]) for i in which])
        return ids, ids

    def trigger(self, given: str, class_names: list[str], single_class) -> str:
        """What calls up an adapter: `given`, else the folder's classes."""
        return given or ", ".join(class_names) or single_class()


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

    # ---- fine-tuning a base run on a folder of images (`train.finetune`)

    folder_captions = "on"  # the folder's captions (metadata.jsonl, .txt files or class sub-folders)

    @staticmethod
    def default_prior(names: list[str], digit: bool) -> tuple[str, ...]:
        """What the base drew that an adapter must keep: one caption of each of its classes."""
        return tuple(class_texts(n, digit=digit)[0] for n in names)

    @classmethod
    def check_folder(cls, data, root) -> None:
        if data.captions is None:
            raise UserError(f"the base is a text run: the images in {root} need captions (metadata.jsonl, .txt files "
                            f"or class sub-folders)")

    def base_labels(self, data, base_names, single_class):
        """Caption ids are the run's own: the data as it is."""
        return data

    def prior_conditions(self, prior: list[str], which: list[int], base_names) -> tuple[torch.Tensor, list[str]]:
        """The caption ids (P,) of prior images drawn for the prior prompts `which` indexes (embedded after the
        training captions: `train.finetune`'s caption texts), and those prompts."""
        first = len(self.captions.texts)
        return torch.tensor([first + i for i in which]), [prior[i] for i in which]

    def trigger(self, given: str, class_names: list[str], single_class) -> str:
        """What calls up an adapter: `given`, else the first of the data's captions."""
        examples = self.captions.examples(1)
        return given or (examples[0] if examples else "")


def training_conditioner_class(model_cfg) -> type[ClassTraining] | type[CaptionTraining]:
    """Which training conditioner a model config asks for (prompts when it has a text encoder's width): what a
    fine-tuning asks before any is built."""
    return CaptionTraining if model_cfg.context_dim else ClassTraining


def training_conditioner(model_cfg, captions, device: torch.device, file=None, save: bool = True,
                         texts: list[str] | None = None):
    """The training side of the conditioner a model config asks for (prompts when it has a text encoder's width)."""
    if training_conditioner_class(model_cfg) is CaptionTraining:
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
