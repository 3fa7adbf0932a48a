"""Text alignment of a text-to-image model's samples: does each image show what its prompt asks for?

By default a text model is asked for the captions of real held-out images (`caption_prompts`, the COCO protocol):
its samples then compare with those images, like for like, and each figure below has the same figure of the real
image behind each caption beside it.

* named class accuracy: the share of images the offline judge classifies as the class their prompt names (a digit
  as a word or a numeral, else a class name), over the prompts that name exactly one class;
* attribute agreement (digits, MNIST): stroke thickness, slant and size measured on the generated pixels
  (`captions.measure_attributes`), cut at the training data's thresholds for the image's class, against the level
  the prompt asks for;
* colour agreement (RGB data): the dominant hue measured on the generated pixels (`captions.dominant_colour`)
  against the colour word the prompt names;
* CLIPScore (Hessel et al. 2021, torchmetrics) when a local CLIP model is given: no CLIP weights can be downloaded
  here, so there is no default.
"""
from __future__ import annotations

import torch

from noisecraft.captions import (ATTRIBUTES, Captions, attribute_levels, class_texts, dominant_colour,
                                 measure_attributes, named_colour, parse_prompt, with_articles)
from noisecraft.conditioning.prompt_syntax import final_words
from noisecraft.config import DataConfig
from noisecraft.data import DIGIT_DATASETS, load_dataset, resize_uint8
from noisecraft.errors import UserError

NATIVE_DIGIT_SIZE = 28  # digits and MNIST: where captions measure attributes, whatever size a run draws at


def default_prompts(class_names: list[str], dataset: str) -> list[str]:
    """One prompt per class, from the first caption template ("a handwritten seven", "a photo of a cat")."""
    from noisecraft.registry import DATASETS

    if not class_names:
        raise UserError("this text model was trained on captions without classes: give prompts (--prompts FILE)")
    template = DATASETS.get(dataset, "data.dataset").facts.get("prompt")  # a dataset's own (emoji: "an emoji of {}")
    if template:
        return [with_articles(template.format(n.lower().replace("&", "and"))) for n in class_names]
    return [class_texts(n, digit=dataset in DIGIT_DATASETS)[0] for n in class_names]


def caption_prompts(captions: Captions, images: torch.Tensor, n: int, seed: int
                    ) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """n prompts from the captions of `images` (indices into the split `captions` belongs to): the images are
    cycled in an order drawn from `seed`, so each prompts once before any prompts twice, and sample i asks for one
    caption of image source[i], drawn at random from its captions. Returns (prompts, source (n,), the distinct
    images that prompted, in the order drawn)."""
    g = torch.Generator().manual_seed(seed)
    order = images[torch.randperm(len(images), generator=g)]
    source = order[torch.arange(n) % len(order)]
    ids = captions.draw(source, torch.rand(n, generator=g))
    return [captions.texts[i] for i in ids.tolist()], source, order[:n]


def text_metrics(images: torch.Tensor, prompts: list[str], class_names: list[str], data_cfg: DataConfig,
                 thresholds: dict | None = None, clip_weights: str | None = None, device="cpu") -> dict:
    """Alignment metrics of uint8 `images` (N, C, H, W) drawn for `prompts` (N). `thresholds`: the attribute cuts
    of the training data (a text run's checkpoint metadata); measured from the data when None."""
    digits = data_cfg.dataset in DIGIT_DATASETS
    parsed = [parse_prompt(final_words(p), class_names, digits) for p in prompts]  # "a (bold:1.5) seven": no 1, 5
    named = torch.tensor([-1 if c is None else c for c, _ in parsed])
    out: dict = {"n": len(prompts), "distinct_prompts": len(set(prompts)), "named_n": int((named >= 0).sum())}
    pred = None
    if class_names and (out["named_n"] or digits):
        from noisecraft.evaluate.classifier import get_classifier

        pred = get_classifier(data_cfg, device=device).predict(images)[0].argmax(1)
        if out["named_n"]:
            out["named_class_accuracy"] = (pred[named >= 0] == named[named >= 0]).float().mean().item()
    if digits and any(levels for _, levels in parsed):
        classes = torch.where(named >= 0, named, pred)  # whose thresholds: the class asked for, else the judge's
        out["attributes"] = attribute_agreement(images, [lv for _, lv in parsed], classes, class_names, data_cfg,
                                                thresholds)
    if images.shape[1] == 3:
        out.update(colour_agreement(images, prompts))
    if clip_weights:
        out["clip_score"] = clip_score(images, prompts, clip_weights, device)
    return out


def colour_agreement(images: torch.Tensor, prompts: list[str]) -> dict:
    """RGB images: over the prompts that name one colour word, the share of images whose dominant hue measured on
    the pixels (captions.dominant_colour, as colour captions are measured) is that colour; {} when none does."""
    asked = [named_colour(p) for p in prompts]
    rows = [i for i, c in enumerate(asked) if c is not None]
    if not rows:
        return {}
    got = dominant_colour(images[rows])
    want = torch.tensor([asked[i] for i in rows])
    return {"colour": {"agreement": (got == want).float().mean().item(), "n": len(rows)}}


def attribute_agreement(images: torch.Tensor, asked: list[dict[str, int]], classes: torch.Tensor,
                        class_names: list[str], data_cfg: DataConfig, thresholds: dict | None) -> dict:
    """For each attribute, the share of images whose measured level equals the level their prompt asks for."""
    if thresholds is None:
        train = load_dataset(DataConfig(dataset=data_cfg.dataset, data_root=data_cfg.data_root), "train")
        thresholds = attribute_levels(measure_attributes(train.images), train.labels, len(class_names))[1]
    if images.shape[-1] != NATIVE_DIGIT_SIZE:  # the cuts were measured at the native size (data.load_dataset)
        images = resize_uint8(images, NATIVE_DIGIT_SIZE)
    measured, _ = attribute_levels(measure_attributes(images), classes, len(class_names), thresholds)
    out = {}
    for name in ATTRIBUTES:
        rows = [i for i, lv in enumerate(asked) if name in lv]
        if rows:
            want = torch.tensor([asked[i][name] for i in rows])
            out[name] = {"agreement": (measured[name][rows] == want).float().mean().item(), "n": len(rows)}
    total = sum(v["n"] for v in out.values())
    out["mean"] = sum(v["agreement"] * v["n"] for v in out.values()) / total
    return out


def clip_score(images: torch.Tensor, prompts: list[str], weights: str, device="cpu", batch_size: int = 64) -> float:
    """CLIPScore (Hessel et al. 2021: 100 * max(cos(image, text), 0), averaged) with torchmetrics, for a local CLIP
    model directory in the Hugging Face format. Grayscale images are repeated to three channels."""
    try:
        from torchmetrics.multimodal.clip_score import CLIPScore
        from transformers import CLIPModel, CLIPProcessor
    except ImportError as e:
        raise UserError(f"CLIPScore needs torchmetrics and transformers ({e}): pip install -e \".[text]\"") from None

    def load():
        try:
            return (_FeatureTensors(CLIPModel.from_pretrained(weights, local_files_only=True)),
                    CLIPProcessor.from_pretrained(weights, local_files_only=True))
        except OSError as e:
            raise UserError(f"cannot load CLIP weights from {weights}: {e}") from None

    metric = CLIPScore(model_name_or_path=load).to(device)
    rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
    for start in range(0, len(prompts), batch_size):
        metric.update(rgb[start:start + batch_size].to(device), prompts[start:start + batch_size])
    return float(metric.compute())


class _FeatureTensors(torch.nn.Module):
    """A CLIPModel whose get_image_features / get_text_features return the projected features as tensors:
    transformers 5 returns model outputs (the features in `pooler_output`), torchmetrics 1.9 expects tensors."""

    def __init__(self, clip: torch.nn.Module):
        super().__init__()
        self.clip, self.config = clip, clip.config

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        return _features(self.clip.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        return _features(self.clip.get_text_features(*args, **kwargs))


def _features(out) -> torch.Tensor:
    return out if torch.is_tensor(out) else out.pooler_output
