"""The whole evaluation of a checkpoint: sample N images, compute metrics, write report.json / report.md / grids.

Metrics come in two families:

* offline (no download): the dataset's small classifier (see `classifier.py`) gives class-conditional accuracy,
  a Fréchet distance in its feature space ("FD-clf") and improved precision/recall. The same numbers for the
  real held-out split against the training split are the scale: "what perfect looks like". `offline.floors`
  scores FD, KID, precision, recall and the near-copy share against one reference (the training split less a
  set-aside subset) with two floors beside each: the judge's real held-out images, which it never trained on,
  and the set-aside training images, which it did. The two floors need not agree (one set shaped the
  judge's features, the other did not, and each is a finite sample), so a figure reads against both.
* standard: FID, KID and IS on Inception-v3 features (torch-fidelity conventions), when its weights are here.

A text model is asked, by default, for the captions of real held-out images (`heldout_captions`, the COCO
protocol): a model asked a few template prompts cannot match the spread of a whole data set, however good it is. Its
samples are then also scored against those images, with two floors ("floors_captions"), and each text-alignment
figure has the same figure of the real image behind each caption beside it.

Pitfalls avoided on purpose: sample counts are reported next to every number (FD is biased upwards for small
N, so the generated set is also scored at the held-out set's size, like for like); every image's noise depends
only on its index, and features are per image, so nothing depends on the batch size; the sampler defaults to
the checkpoint's fast one (DDIM, 50 steps), not 1,000 ancestral steps.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from noisecraft.config import DataConfig, to_json
from noisecraft.errors import UserError
from noisecraft.evaluate.frechet import (GaussianStats, frechet_distance_features, frechet_distance_stats,
                                         gaussian_stats, inception_score, kernel_distance)
from noisecraft.evaluate.memorisation import memorisation, nearest_distance
from noisecraft.evaluate.prdc import precision_recall
from noisecraft.pipeline import SamplingOptions, load_pipeline
from noisecraft.rundir import REPORT_JSON, REPORT_MD, RunDir, atomic_write_bytes, run_root
from noisecraft.samplers import describe_interval

REF_SEED = 0  # seed of the subsets drawn from the reference set for precision/recall


@dataclass
class EvalOptions:
    n: int = 2000
    sampling: SamplingOptions = field(default_factory=SamplingOptions)  # None fields: the checkpoint's defaults
    device: str = "auto"
    inception: bool = True  # try FID/KID/IS (skipped with a message when the weights are not here)
    inception_weights: str | None = None
    inception_batch_size: int = 64
    classifier: bool = True  # offline metrics (trains the dataset's classifier on first use)
    progress: bool = True
    prompts: list[str] | None = None  # text models: cycled over the n samples; None: held-out captions
    clip_weights: str | None = None  # text models: a local CLIP model directory for CLIPScore
    loras: list[tuple[str, float]] = field(default_factory=list)  # (path, scale) of LoRA adapters to sample with


# ---------------------------------------------------------------- offline metrics


def _subset(x: torch.Tensor, n: int, seed: int = REF_SEED) -> torch.Tensor:
    if len(x) <= n:
        return x
    return x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]]


def feature_metrics(features: torch.Tensor, reference: torch.Tensor, k: int = 3) -> dict:
    """Fréchet distance (vs all of `reference`) and improved precision/recall (vs a reference subset of the
    same size, as in Kynkäänniemi et al., whose k-NN radii depend on the set size)."""
    fd = frechet_distance_stats(gaussian_stats(features), gaussian_stats(reference))
    pr = precision_recall(_subset(reference, len(features)), features, k=k)
    return {"fd": fd, "precision": pr["precision"], "recall": pr["recall"], "n": len(features)}


def floor_split(n_train: int, n: int, seed: int = REF_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the training images set aside as a floor (n, at most half of them) and of the reference (the
    rest): a fixed random split, disjoint by construction."""
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    n = min(n, n_train // 2)
    return perm[:n].sort().values, perm[n:].sort().values


def reference_row(features: torch.Tensor, reference: torch.Tensor, kid_subset: int, threshold: float) -> dict:
    """FD, precision/recall (`feature_metrics`), KID on subsets of `kid_subset` and the share of `features` whose
    nearest reference image is closer than `threshold`."""
    r = feature_metrics(features, reference)
    kid = kernel_distance(features, reference, subset_size=kid_subset)
    r.update(kid_mean=kid["mean"], kid_std=kid["std"], kid_subset_size=kid["subset_size"],
             near_copy_share=(nearest_distance(features, reference) < threshold).float().mean().item())
    return r


def floors_table(features: torch.Tensor, reference: torch.Tensor, floors: dict[str, torch.Tensor],
                 quantile: float = 0.05) -> dict:
    """Generated `features` and sets of real images (`floors`, "real_heldout" among them: it sets the near-copy cut)
    scored against one `reference` (`reference_row`). The floors are cut to the generated set's size when it is
    smaller, the generated set to theirs when larger; KID uses subsets of that n for every row, so they compare like
    for like."""
    n = min(len(features), *(len(f) for f in floors.values()))
    # A near-copy: nearer its nearest reference image than all but `quantile` of the held-out images are.
    threshold = torch.quantile(nearest_distance(floors["real_heldout"], reference), quantile).item()
    sets = {"generated": features, **({"generated_at_floor_n": features[:n]} if len(features) > n else {}),
            **{name: f[:n] for name, f in floors.items()}}
    out = {"floor_n": n, "near_copy_quantile": quantile, "near_copy_threshold": threshold}
    return out | {name: reference_row(f, reference, n, threshold) for name, f in sets.items()}


def floor_metrics(features: torch.Tensor, ref: dict, quantile: float = 0.05) -> dict:
    """Generated `features` against a reference of training images, and two floors scored the same way
    (`floors_table`): the held-out split and as many training images left out of the reference (module
    docstring)."""
    train, val = ref["train_features"], ref["val_features"]
    aside, keep = floor_split(len(train), len(val))
    out = {"reference": {"split": "train", "n": len(keep), "set_aside": len(aside), "seed": REF_SEED}}
    floors = {"real_heldout": val[:len(aside)], "real_train_unseen": train[aside]}
    return out | floors_table(features, train[keep], floors, quantile)


def caption_floor_metrics(features: torch.Tensor, reference: torch.Tensor, heldout_floor: torch.Tensor,
                          train: torch.Tensor, quantile: float = 0.05) -> dict:
    """Generated `features` against the held-out images whose captions prompted them (`reference`), with two floors
    scored the same way (`floors_table`): the held-out images set aside from prompting (the judge never trained on
    them) and as many training images (it did)."""
    out = {"reference": {"split": "val", "n": len(reference), "set_aside": len(heldout_floor), "seed": REF_SEED}}
    floors = {"real_heldout": heldout_floor, "real_train_unseen": _subset(train, len(heldout_floor))}
    return out | floors_table(features, reference, floors, quantile)


def _judge_summary(clf) -> dict:
    """What report.json says of the judge: its held-out accuracy in the run's classes and in its own labels."""
    m = clf.meta
    return {"heldout_accuracy": clf.heldout_accuracy, "dataset": m["data_key"], "train_size": m["train_size"],
            "heldout_size": m["heldout_size"], "path": m.get("path"), "labels": m.get("labels", "class"),
            "label_classes": m["num_classes"], "heldout_accuracy_own_labels": float(m["heldout_accuracy"]),
            "classes": clf.num_classes, "feature_dim": m["config"]["feature_dim"], "key": m.get("key")}


def classifier_metrics(images: torch.Tensor, labels: torch.Tensor | None, data_cfg: DataConfig,
                       device: torch.device | str = "cpu", progress: bool = False,
                       perfect: bool = True, judge=None, captioned: tuple[torch.Tensor, torch.Tensor] | None = None
                       ) -> dict:
    """Offline metrics of uint8 `images` (generated for `labels`, or None for an unconditional model); `judge`: a
    ClassifierConfig other than the dataset's default recipe; `captioned`: uint8 held-out images whose captions
    prompted a text model's samples and held-out images set aside from prompting (`heldout_captions`), which add
    "floors_captions" (`caption_floor_metrics`).

    Returns {"classifier": {...}, "generated": {...}, "generated_at_heldout_n": {...}, "real_heldout": {...},
    "memorisation": {...}, "floors": {...}}: "real_heldout" is the real held-out split scored the same way (the
    ceiling), the one before the generated set cut to the held-out size so the two compare like for like;
    "floors" is `floor_metrics`. Classes are the run's (`Classifier.for_data`)."""
    from noisecraft.evaluate.classifier import get_classifier, reference_features

    clf = get_classifier(data_cfg, device=device, progress=progress, cfg=judge)
    ref = reference_features(clf, data_cfg)
    logits, feats = clf.predict(images)
    pred = logits.argmax(1)
    k = clf.num_classes
    out = {"classifier": _judge_summary(clf)}

    def row(p, f, y):
        r = feature_metrics(f, ref["train_features"])
        if y is not None:
            r["class_accuracy"] = (p == y.cpu()).float().mean().item()
        counts = torch.bincount(p, minlength=k).double()
        share = counts / counts.sum()
        # Entropy of the predicted-class histogram over its maximum log K: 1 = every class equally often.
        r["class_balance"] = abs(float((share[share > 0] * share[share > 0].log()).sum() / math.log(k)))
        return r

    out["generated"] = row(pred, feats, labels)
    out["generated"]["predicted_class_counts"] = torch.bincount(pred, minlength=k).tolist()
    if perfect:
        n_val = len(ref["val_features"])
        if len(images) > n_val:
            out["generated_at_heldout_n"] = row(pred[:n_val], feats[:n_val], None if labels is None else labels[:n_val])
        val_labels = clf.run_labels(ref["val_labels"]) if labels is not None else None
        out["real_heldout"] = row(clf.run_logits(ref["val_logits"]).argmax(1), ref["val_features"], val_labels)
        out["memorisation"] = memorisation(feats, ref["train_features"], ref["val_features"])
        out["floors"] = floor_metrics(feats, ref)
    if captioned is not None:
        out["floors_captions"] = caption_floor_metrics(feats, clf.features(captioned[0]), clf.features(captioned[1]),
                                                       ref["train_features"])
    return out


# ---------------------------------------------------------------- Inception metrics


def inception_reference(net, data_cfg: DataConfig, weights_id: str, batch_size: int, device, progress: bool) -> dict:
    """Inception statistics of the real training split (mu, sigma), a 5,000-image feature subset for KID, and
    the held-out split's features; computed once and cached under $NOISECRAFT_CACHE/inception/."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save

    from noisecraft.data import cache_dir, load_dataset
    from noisecraft.evaluate.classifier import dataset_key
    from noisecraft.evaluate.inception import inception_features

    path = cache_dir() / "inception" / f"{dataset_key(data_cfg)}.safetensors"
    if path.is_file():
        try:
            with safe_open(str(path), "pt") as f:
                ok = (f.metadata() or {}).get("weights") == weights_id
            if ok:
                t = load_file(str(path))
                stats = GaussianStats.from_tensors({k[6:]: v for k, v in t.items() if k.startswith("train.")})
                return {"train": stats, "train_kid": t["train_kid"], "val_pool": t["val_pool"]}
        except Exception:
            pass
    train, val = load_dataset(data_cfg, "train"), load_dataset(data_cfg, "val")
    f_train = inception_features(net, train.images, batch_size, device, progress)["pool"]
    f_val = inception_features(net, val.images, batch_size, device, progress)["pool"]
    stats = gaussian_stats(f_train)
    ref = {"train": stats, "train_kid": _subset(f_train, 5000).float(), "val_pool": f_val.float()}
    tensors = {f"train.{k}": v for k, v in stats.to_tensors().items()}
    tensors.update(train_kid=ref["train_kid"], val_pool=ref["val_pool"])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = save({k: v.contiguous() for k, v in tensors.items()}, metadata={"weights": weights_id})
        atomic_write_bytes(path, blob)
    except OSError:
        pass
    return ref


def inception_metrics(images: torch.Tensor, data_cfg: DataConfig, weights: str | None, batch_size: int = 64,
                      device="cpu", progress: bool = False) -> dict:
    """FID, KID and IS of the generated images vs the real training split, plus the same for the held-out split
    (the scale). Raises InceptionUnavailable when the weights are not here."""
    from noisecraft.evaluate.inception import build_inception, find_weights, inception_features

    wpath = find_weights(weights)
    net = build_inception(wpath, device)
    st = wpath.stat()
    weights_id = f"{wpath.name}:{st.st_size}"
    ref = inception_reference(net, data_cfg, weights_id, batch_size, device, progress)
    gen = inception_features(net, images, batch_size, device, progress)
    out = {"weights": str(wpath), "weights_id": weights_id}
    for name, pool, logits in (("generated", gen["pool"], gen["logits"]), ("real_heldout", ref["val_pool"], None)):
        r = {"fid": frechet_distance_features(pool, ref["train"]), "n": len(pool)}
        kid = kernel_distance(pool, ref["train_kid"])
        r.update(kid_mean=kid["mean"], kid_std=kid["std"], kid_subset_size=kid["subset_size"])
        if logits is not None and len(logits) >= 10:
            isc = inception_score(logits)
            r.update(is_mean=isc["mean"], is_std=isc["std"])
        out[name] = r
    return out


# ---------------------------------------------------------------- the whole evaluation


def class_grid_order(labels: torch.Tensor | None, n: int, num_classes: int, per_class: int = 10) -> torch.Tensor:
    """Indices for a sample grid: one row per class (its first `per_class` samples), or the first 100."""
    if labels is None or num_classes == 0:
        return torch.arange(min(n, 100))
    return torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in range(num_classes)])


def heldout_captions(val, n: int, seed: int) -> dict:
    """A text model's default prompts: the captions of real held-out images (`text.caption_prompts`). The captioned
    held-out images are split in two at random (`floor_split`): one half prompts the samples and is the reference
    they are compared with, the other half is a floor, scored the same way."""
    from noisecraft.evaluate.text import caption_prompts

    caps = val.captions if val is not None else None
    captioned = torch.nonzero(caps.options[caps.group, 0] != 0).flatten() if caps is not None else torch.empty(0)
    if len(captioned) < 4:
        raise UserError(f"the held-out split of this run's data has {len(captioned)} captioned images, too few to "
                        "prompt with (at least 4): give prompts (--prompts FILE)")
    aside, keep = floor_split(len(captioned), len(captioned) // 2)
    prompts, source, reference = caption_prompts(caps, captioned[keep], n, seed)
    return {"source": "heldout_captions", "prompts": prompts, "images": source, "reference": reference,
            "floor": captioned[aside], "seed": seed}


def _request(pipe, opts: EvalOptions, val):
    """The samples to judge, and how a text model was prompted: class-balanced (i % K); for a text model the
    prompts given, cycled, or by default the captions of real held-out images (`heldout_captions`)."""
    seed = 0 if opts.sampling.seed is None else opts.sampling.seed
    prompting = pipe.conditioner.evaluation_prompts(opts.prompts, lambda: heldout_captions(val, opts.n, seed))
    prompt = opts.prompts if prompting is None else prompting["prompts"]
    return pipe.prepare(opts.n, prompt=prompt, options=opts.sampling), prompting


def _heldout(data_cfg: DataConfig, thresholds: dict | None = None):
    """The run's held-out split, or None where there is none. A text run's captions of digits are cut at its
    training data's `thresholds`, so that a held-out caption's "thin" is the model's "thin"."""
    from noisecraft.captions import class_captions
    from noisecraft.data import DIGIT_DATASETS, load_dataset

    try:
        val = load_dataset(data_cfg, "val")
        if thresholds and val.captions is not None and val.name in DIGIT_DATASETS:
            native = dataclasses.replace(data_cfg, image_size=None, captions="off")  # where attributes are measured
            images = val.images if data_cfg.image_size is None else load_dataset(native, "val").images
            val.captions = class_captions(val.labels, val.class_names, images, digits=True, thresholds=thresholds)
        return val
    except UserError:
        return None


def _sampling_record(n: int, s: SamplingOptions, labels, prompting: dict | None) -> dict:
    """report.json's "sampling": the resolved options, and for a text model its prompts' source and how many
    distinct prompts it was asked."""
    interval = s.guidance_interval
    out = {"n": n, "sampler": s.sampler, "steps": s.steps, "guidance": s.guidance,
           **({"guidance_interval": list(interval)} if interval and s.guidance else {}), "seed": s.seed,
           "precision": s.precision, "class_balanced": labels is not None and prompting is None}
    if prompting is not None:
        out.update(prompts=len(set(labels)), prompt_source=prompting["source"],
                   negative_prompt=s.negative_prompt or "")
        if "reference" in prompting:
            out.update(captioned_images=len(prompting["reference"]), prompt_seed=prompting["seed"])
    return out


def _judged(report: dict, images: torch.Tensor, labels, pipe, opts: EvalOptions, val, prompting: dict | None):
    """The offline judge's metrics and, for a text model, text alignment (with the real image behind each caption
    judged the same way, when the prompts are held-out captions) into `report`."""
    cfg, device = pipe.config, pipe.device
    text = prompting is not None
    captions = text and prompting["source"] == "heldout_captions"
    captioned = (val.images[prompting["reference"]], val.images[prompting["floor"]]) if captions else None
    if opts.classifier:
        try:
            report["offline"] = classifier_metrics(images, None if text else labels, cfg.data, device, opts.progress,
                                                   captioned=captioned)
        except UserError as e:
            report["offline"] = {"skipped": str(e)}
            warnings.warn(f"offline metrics skipped: {e}", stacklevel=3)
    if text:
        from noisecraft.evaluate.text import text_metrics

        def judge(x):
            return text_metrics(x, labels, pipe.class_names, cfg.data, pipe.meta.get("attribute_thresholds"),
                                opts.clip_weights, device)

        report["text"] = judge(images)
        if captions:
            report["text"]["real_heldout"] = judge(val.images[prompting["images"]])


def evaluate_checkpoint(checkpoint: str | Path, out: str | Path | None = None,
                        opts: EvalOptions | None = None) -> dict:
    """Evaluate a run directory or checkpoint file; writes report.json, report.md, samples.png, real.png and
    samples.npz (the generated images and their requested labels or prompts)."""
    from noisecraft.evaluate.inception import InceptionUnavailable
    from noisecraft.viz import save_grid

    opts = opts or EvalOptions()
    if opts.n < 2:
        raise UserError(f"--n must be at least 2 (metrics need a sample covariance), got {opts.n}")
    pipe = load_pipeline(checkpoint, opts.device, loras=opts.loras)
    cfg, device = pipe.config, pipe.device
    ckpt_path = Path(pipe.path)
    out = Path(out) if out is not None else RunDir(run_root(ckpt_path)).eval_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output directory {out}: {e.strerror}") from None

    k, val = pipe.num_classes, _heldout(cfg.data, pipe.meta.get("attribute_thresholds"))
    req, prompting = _request(pipe, opts, val)
    labels, text = req.labels, prompting is not None

    t0 = time.perf_counter()
    images = pipe.generate(request=req, progress=opts.progress)
    t_sample = time.perf_counter() - t0
    report = {"checkpoint": str(ckpt_path), "step": pipe.step, "dataset": cfg.data.dataset,
              "sampling": _sampling_record(opts.n, req.options, labels, prompting),
              "timing": {"sampling_s": round(t_sample, 2), "samples_per_s": round(opts.n / t_sample, 2)}}

    t1 = time.perf_counter()
    _judged(report, images, labels, pipe, opts, val, prompting)
    report["timing"]["offline_metrics_s"] = round(time.perf_counter() - t1, 2)

    t2 = time.perf_counter()
    if opts.inception:
        try:
            report["inception"] = inception_metrics(images, cfg.data, opts.inception_weights,
                                                    opts.inception_batch_size, device, opts.progress)
        except InceptionUnavailable as e:
            report["inception"] = {"skipped": str(e)}
            print(str(e), file=sys.stderr)
    report["timing"]["inception_metrics_s"] = round(time.perf_counter() - t2, 2)
    report["timing"]["total_s"] = round(time.perf_counter() - t0, 2)

    save_grid(images[class_grid_order(None if text else labels, len(images), k)], out / "samples.png", nrow=10)
    # The samples behind the numbers, for other judges: uint8 (N, C, H, W) and the requested labels (-1: none) or
    # prompts, and held-out captions' images (their index in the run's held-out split).
    asked = np.array(labels) if text else (labels if labels is not None else torch.full((len(images),), -1)).numpy()
    sources = {"source_images": prompting["images"].numpy()} if text and "images" in prompting else {}
    np.savez_compressed(out / "samples.npz", images=images.numpy(), **{"prompts" if text else "labels": asked},
                        **sources)
    if val is not None:
        save_grid(val.images[class_grid_order(val.labels if k else None, len(val), k)], out / "real.png", nrow=10)
    (out / REPORT_JSON).write_text(to_json(report) + "\n")
    (out / REPORT_MD).write_text(render_markdown(report, has_real=(out / "real.png").is_file()))
    report["out"] = str(out)
    return report


def _fmt(x, digits=3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"
    return str(x)


def _prompts_words(s: dict) -> str:
    """How a text model was prompted, for the first sentence of report.md ("" for a class model)."""
    if s.get("prompt_source") == "heldout_captions":
        return (f", prompted with the captions of {s['captioned_images']} real held-out images ({s['prompts']} "
                f"distinct prompts, seed {s['prompt_seed']})")
    if "prompts" in s:
        return f", prompted with {s['prompts']} distinct prompts given (--prompts), cycled"
    return ""


def _text_markdown(t: dict | None, s: dict) -> list[str]:
    """The text-alignment section of report.md (text models): each figure of the samples, and where the prompts
    were held-out captions, the same figure of the real image behind each caption."""
    if not t:
        return []
    real = t.get("real_heldout")
    if real:
        said = (f"Each of the {t['n']} samples asks for one caption, drawn at random, of one of "
                f"{s['captioned_images']} real held-out images ({t['distinct_prompts']} distinct prompts); the real "
                f"image behind each caption is judged the same way beside it.")
    else:
        said = f"{t['n']} samples of {t['distinct_prompts']} distinct prompts."
    lines = ["## Text alignment", "", said, "", "| metric | generated |" + (" real image of the caption |" if real
             else "") + " n |", "| --- | ---: |" + (" ---: |" if real else "") + " ---: |"]
    theirs = _alignment_rows(real) if real else None
    for label, (value, n) in _alignment_rows(t).items():
        cells = [value] + ([theirs.get(label, (None,))[0]] if real else [])
        lines.append(f"| {label} | " + " | ".join(_fmt(c) for c in cells) + f" | {n} |")
    return lines + [""]


def _alignment_rows(t: dict) -> dict[str, tuple[float, int]]:
    """A text_metrics dict as table rows: label -> (value, n)."""
    rows = {}
    if "named_class_accuracy" in t:
        rows["named class accuracy (judge classifier)"] = (t["named_class_accuracy"], t["named_n"])
    for name, a in {**t.get("attributes", {}), **({"colour": t["colour"]} if "colour" in t else {})}.items():
        if name != "mean":
            rows[f"{name} agreement (measured on the pixels)"] = (a["agreement"], a["n"])
    if "clip_score" in t:
        rows["CLIPScore"] = (t["clip_score"], t["n"])
    return rows


def _judge_markdown(c: dict) -> str:
    """The sentence on the judge: what it learnt and its held-out accuracy, in the run's classes too if coarser."""
    said = (f"Judge: a small CNN trained on the {c['train_size']} training images of `{c['dataset']}`; its own "
            f"accuracy on the {c['heldout_size']} held-out images is")
    if c.get("classes", c.get("label_classes")) == c.get("label_classes"):
        return f"{said} **{c['heldout_accuracy']:.2%}**."
    return (f"{said} {c['heldout_accuracy_own_labels']:.2%} on its {c['label_classes']} {c['labels']}s and "
            f"**{c['heldout_accuracy']:.2%}** in the run's {c['classes']} classes (a class's probability is the sum "
            f"of its {c['labels']}s').")


def _memorisation_markdown(m: dict | None) -> list[str]:
    """The memorisation section of report.md (noisecraft.evaluate.memorisation)."""
    if not m:
        return []
    return ["### Memorisation", "",
            f"Share of samples whose nearest training image (in the judge's features) is closer than that of all but "
            f"{m['quantile']:.0%} of the real held-out images: **{m['near_copy_share']:.1%}** of {m['n']} samples, "
            f"against {m['heldout_share']:.1%} of the {m['heldout_n']} held-out images (what a model that copies "
            f"nothing scores): {_share_words(m)}. Median distance to the nearest training image, samples over "
            f"held-out: {m['median_ratio']:.2f} ({_ratio_words(m['median_ratio'])}).", ""]


def _share_words(m: dict) -> str:
    """The near-copy share of the samples against the held-out images', in words chosen by the two numbers: apart by
    more than two standard errors of their difference (binomial, pooled share) or not."""
    p = (m["near_copy_share"] * m["n"] + m["heldout_share"] * m["heldout_n"]) / (m["n"] + m["heldout_n"])
    band = 2 * math.sqrt(max(p * (1 - p), 1e-12) * (1 / m["n"] + 1 / m["heldout_n"]))
    diff = m["near_copy_share"] - m["heldout_share"]
    if diff > band:
        return (f"more than the held-out share by over two standard errors ({diff:+.1%}, band ±{band:.1%}): more "
                "samples sit on training images than new real images do")
    if diff < -band:
        return (f"less than the held-out share by over two standard errors ({diff:+.1%}, band ±{band:.1%}): the "
                "samples sit on training images less often than new real images do")
    return (f"within two standard errors of the held-out share ({diff:+.1%}, band ±{band:.1%}): as many samples sit "
            "on training images as new real images do, within noise")


def _ratio_words(ratio: float) -> str:
    if ratio < 1:
        return "under 1: the samples sit closer to training images than new real images do"
    return "1 or more: the samples sit no closer to training images than new real images do"


# figure of offline.floors: (row key, label, scale, lower is better)
FLOOR_FIGURES = (("fd", "FD-clf", 1, True), ("kid_mean", "KID (x1e3)", 1e3, True), ("precision", "precision", 1, False),
                 ("recall", "recall", 1, False), ("near_copy_share", "near-copy share", 1, True))


def _against_floors(value: float, floors: list[float], lower_is_better: bool) -> str:
    """Where a figure lies against its two floors, in words that follow the numbers."""
    sign = 1 if lower_is_better else -1
    if all(sign * value <= sign * f for f in floors):
        return "as good as both floors"
    if all(sign * value > sign * f for f in floors):
        return "worse than both floors"
    return "between the floors"


def _floors_markdown(f: dict | None) -> list[str]:
    """The table of offline.floors: every figure of the samples with the two real floors beside it."""
    if not f:
        return []
    n, gens = f["floor_n"], [f["generated"]] + ([f["generated_at_floor_n"]] if "generated_at_floor_n" in f else [])
    if f["reference"]["split"] == "val":  # caption_floor_metrics
        title, columns = "the held-out images whose captions were asked", ("real held-out, not asked", "real training")
        said = (f"Reference: the {f['reference']['n']} real held-out images whose captions prompted the samples. "
                f"Floors, scored the same way: {n} other real held-out images, whose captions were not asked (the "
                f"judge never trained on them), and {n} training images (the judge trained on them).")
    else:
        title, columns = "a reference of training images", ("real held-out", "real training, not in the reference")
        said = (f"Reference: {f['reference']['n']} training images. Floors, scored the same way: {n} real held-out "
                f"images (the judge never trained on them) and {n} training images left out of the reference (the "
                f"judge trained on them).")
    lines = [f"### Against {title}, with two floors", "",
             f"{said} A near-copy is a sample nearer its nearest reference image than all but "
             f"{f['near_copy_quantile']:.0%} of the held-out images are.", "",
             "| figure | " + " | ".join(f"generated (n = {g['n']})" for g in gens) + f" | {columns[0]} | "
             f"{columns[1]} | generated (n = {n}) against the floors |",
             "| --- |" + " ---: |" * (len(gens) + 2) + " --- |"]
    for key, label, scale, lower in FLOOR_FIGURES:
        floors = [f["real_heldout"][key], f["real_train_unseen"][key]]
        cells = " | ".join(_fmt(scale * v) for v in [g[key] for g in gens] + floors)
        lines.append(f"| {label} | {cells} | {_against_floors(gens[-1][key], floors, lower)} |")
    return lines + [""]


def render_markdown(report: dict, has_real: bool = True) -> str:
    """report.md from report.json's dict: numbers in tables, and words that are either rules or chosen by the
    numbers beside them (`_against_floors`, `_share_words`, `_ratio_words`)."""
    s = report["sampling"]
    where = describe_interval(s.get("guidance_interval"))
    lines = [
        f"# Evaluation of `{report['checkpoint']}` (step {report['step']})", "",
        f"{s['n']} samples, {s['sampler']} with {s['steps']} steps, guidance w = {s['guidance']}{where}, "
        f"{s['precision']}, seed {s['seed']}"
        f"{', class-balanced' if s['class_balanced'] else ''}{_prompts_words(s)}. Sampling took "
        f"{report['timing']['sampling_s']} s ({report['timing']['samples_per_s']} samples/s); total "
        f"{report['timing']['total_s']} s.", "",
    ]
    off = report.get("offline")
    lines += ["## Offline metrics (dataset classifier, no download)", ""]
    if off is None:
        lines += ["Not computed (--no-classifier).", ""]
    elif "skipped" in off:
        lines += [f"Skipped: {off['skipped']}", ""]
    elif off:
        c = off["classifier"]
        lines += [_judge_markdown(c) + f" FD-clf is the Fréchet distance to the training set in its "
                  f"{c.get('feature_dim', 128)}-d feature space (lower is better); precision/recall are Kynkäänniemi "
                  "et al. (2019), k = 3; class balance is the entropy of the predicted classes over its maximum (1: "
                  "every class equally often). Compare the generated rows with the real held-out row: that is what "
                  "perfect looks like at that sample size.", "",
                  "| set | n | class accuracy | FD-clf | precision | recall | class balance |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        names = {"generated": "generated", "generated_at_heldout_n": "generated (held-out size)",
                 "real_heldout": "**real held-out (perfect)**"}
        for key, label in names.items():
            if key in off:
                r = off[key]
                lines.append(f"| {label} | {r['n']} | {_fmt(r.get('class_accuracy'))} | {_fmt(r['fd'])} | "
                             f"{_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['class_balance'])} |")
        lines.append("")
        lines += _floors_markdown(off.get("floors"))
        lines += _floors_markdown(off.get("floors_captions"))
        lines += _memorisation_markdown(off.get("memorisation"))
    lines += _text_markdown(report.get("text"), s)
    inc = report.get("inception")
    lines += ["## Inception metrics (FID, KID, IS; torch-fidelity conventions)", ""]
    if inc is None:
        lines += ["Not computed (--no-inception).", ""]
    elif "skipped" in inc:
        lines += [inc["skipped"], ""]
    elif inc:
        lines += ["| set | n | FID | KID (x1e3) | IS |", "| --- | ---: | ---: | ---: | ---: |"]
        for key, label in (("generated", "generated"), ("real_heldout", "**real held-out (perfect)**")):
            r = inc[key]
            is_ = f"{r['is_mean']:.2f} ± {r['is_std']:.2f}" if "is_mean" in r else "–"
            lines.append(f"| {label} | {r['n']} | {r['fid']:.2f} | {1e3 * r['kid_mean']:.2f} ± "
                         f"{1e3 * r['kid_std']:.2f} | {is_} |")
        lines += ["", "FID is biased upwards for small n: compare numbers only at equal n (papers use 50,000).", ""]
    lines += ["## Samples", "", "![samples](samples.png)", ""]
    if has_real:
        lines += ["Real held-out images for comparison:", "", "![real](real.png)", ""]
    return "\n".join(lines)

