"""Thin command line: parse, build a config, call a library function. User errors exit 2 with `error: ...`."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from noisecraft.config import PRESETS, Config, DataConfig, apply_overrides, preset, to_json
from noisecraft.errors import Interrupted, UserError
from noisecraft.registry import DATASETS, DISTILLATIONS, FIGURES, GRID_AXES, LORA_TARGETS, PRECISIONS, SAMPLERS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2, no usage dump
        raise UserError(f"{message} (see `{self.prog} --help`)")


def _overrides(extra: list[str]) -> dict[str, str]:
    """`--section.field=value`, `--field=value` or `--field value` -> {"section.field": "value"}."""
    out, i = {}, 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise UserError(f"unexpected argument '{arg}'")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(extra) or extra[i + 1].startswith("--"):
                raise UserError(f"config override --{key} needs a value (--{key}=VALUE)")
            value, i = extra[i + 1], i + 1
        out[key] = value
        i += 1
    return out


def build_config(args, extra: list[str]) -> Config:
    if args.config:
        cfg = Config.load(args.config)
    else:
        cfg = preset(args.preset)
    flags = {"data.dataset": args.dataset, "data.data_root": args.data_root, "data.image_size": args.image_size,
             "train.steps": args.steps, "train.device": args.device, "train.seed": args.seed,
             "autoencoder.path": args.autoencoder, "autoencoder.lpips_weights": args.lpips_weights}
    if args.autoencoder:
        flags["autoencoder.latent"] = True
    if args.command == "train-autoencoder":
        flags["train.task"] = "autoencoder"
    if args.download:
        flags["data.download"] = True
    overrides = {k: v for k, v in flags.items() if v is not None}
    overrides.update(_overrides(extra))
    return apply_overrides(cfg, overrides)


def cmd_train(args, extra) -> int:
    from noisecraft.train import train

    if args.resume:  # the run's own config (rundir owns the resume rules)
        from noisecraft.rundir import RunDir

        changed = [f for f, v in (("--config", args.config), ("--preset", args.preset_given), ("--dataset", args.dataset),
                                  ("--data-root", args.data_root), ("--image-size", args.image_size),
                                  ("--seed", args.seed), ("--download", args.download),
                                  ("--autoencoder", args.autoencoder), ("--lpips-weights", args.lpips_weights)) if v]
        cfg = RunDir(args.out).resume_config(changed + extra[:1], args.steps, args.device,
                                             preset(args.default_preset))
    else:
        cfg = build_config(args, extra)
    summary = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    if summary.get("rank", 0) == 0:  # under torchrun only rank 0 reports
        print(to_json(summary))
    return 0


def _train_derived(args, extra, what: str, given: list[str], make_config) -> int:
    """`distill` and `finetune`: a run made from another (`make_config(overrides)`), or --resume of one with its
    saved config; `what` names such a run in errors ("distillation")."""
    from noisecraft.train import train

    if args.resume:
        from noisecraft.rundir import RunDir

        if given:
            raise UserError(f"--resume continues the {what} with its saved config: drop {' and '.join(given)}")
        run = RunDir(args.out)
        if not run.config.is_file():
            raise UserError(f"{args.out} holds no {what} to resume (no config.json)")
        cfg = run.resume_config(extra[:1], args.steps, args.device, None)
    else:
        if not args.checkpoint:
            raise UserError("give the run to start from: --checkpoint RUN")
        overrides = _overrides(extra)
        if args.device:
            overrides["train.device"] = args.device
        cfg = make_config(overrides)
    summary = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    if summary.get("rank", 0) == 0:
        print(to_json(summary))
    return 0


def cmd_distill(args, extra) -> int:
    from noisecraft.train.distill import student_config

    given = [f for f, v in (("--checkpoint", args.checkpoint), ("--method", args.method)) if v]
    method = args.method or "cd"
    return _train_derived(args, extra, "distillation", given,
                          lambda o: student_config(args.checkpoint, method, args.steps, o))


def cmd_finetune(args, extra) -> int:
    from noisecraft.train.finetune import finetune_config

    given = [f for f, v in (("--checkpoint", args.checkpoint), ("--data-root", args.data_root),
                            ("--rank", args.rank)) if v]
    if not args.resume and not args.data_root:
        raise UserError("give the images to learn from: --data-root FOLDER (class sub-folders or metadata.jsonl)")
    if args.data_root and Path(args.data_root).resolve() == Path(args.out).resolve():
        raise UserError("--out must be another folder than --data-root: the run's files would mix with the images")
    return _train_derived(args, extra, "fine-tuning", given,
                          lambda o: finetune_config(args.checkpoint, args.data_root, args.rank, args.steps, o))


def parse_guidance_interval(text: str | None) -> tuple[float, ...] | None:
    """'LO,HI' -> (LO, HI); 'all' -> () (guide at every step); None -> None (the checkpoint's setting)."""
    if text is None:
        return None
    if text.strip().lower() in ("all", "none", ""):
        return ()
    cfg = apply_overrides(Config(), {"sample.guidance_interval": text})  # the config's parsing and validation
    return cfg.sample.guidance_interval


def _sampling_options(args):
    """The sampling flags `sample` and `evaluate` share; None leaves the checkpoint's default."""
    from noisecraft.pipeline import SamplingOptions

    return SamplingOptions(sampler=args.sampler, steps=args.steps, guidance=args.guidance,
                           guidance_interval=parse_guidance_interval(args.guidance_interval), seed=args.seed,
                           batch_size=args.batch_size, precision=args.precision, negative_prompt=args.negative_prompt)


def _loras(args) -> list[tuple[str, float]]:
    """--lora PATH[:SCALE] (repeatable) -> [(path, scale)]."""
    from noisecraft.adapters import parse_lora_arg

    return [parse_lora_arg(text) for text in args.lora or []]


def _add_lora_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lora", action="append", metavar="PATH[:SCALE]",
                   help="a LoRA adapter (a finetune run or a peft adapter folder) at SCALE in [-2, 2] (default 1); "
                   "repeat for several. Text prompts may set a loaded one's scale with <lora:NAME:SCALE>")


def _prompts(args) -> list[str] | None:
    """The prompts of --prompt (repeatable) and --prompt-file (one a line; blank lines and # comments skipped)."""
    prompts = list(args.prompt or [])
    if args.prompt_file:
        try:
            lines = Path(args.prompt_file).read_text().splitlines()
        except OSError as e:
            raise UserError(f"cannot read prompt file {args.prompt_file}: {e.strerror}") from None
        prompts += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not prompts:
            raise UserError(f"prompt file {args.prompt_file} holds no prompt")
    return prompts or None


def cmd_sample(args, extra) -> int:
    from noisecraft.imageinfo import image_settings
    from noisecraft.pipeline import load_pipeline
    from noisecraft.viz import save_images

    if extra:
        raise UserError(f"unexpected argument '{extra[0]}'")
    options = _sampling_options(args)
    pipe = load_pipeline(args.checkpoint, args.device, loras=_loras(args))
    req = pipe.prepare(args.n, args.class_index, prompt=_prompts(args), options=options)
    images = pipe.generate(request=req, progress=True)
    settings = image_settings(pipe, req, model=str(args.checkpoint))  # PNG `parameters`
    out = save_images(images, args.out, settings=settings)
    asked = pipe.conditioner.conditions_file(req.labels)  # labels.json or prompts.json, or nothing
    if asked is not None:
        (out / asked[0]).write_text(asked[1])
    print(f"wrote {len(images)} images and grid.png to {out}")
    return 0


def cmd_grid(args, extra) -> int:
    from noisecraft.editing import open_image
    from noisecraft.grid import GridSpec, parse_axis, plan_grid, run_grid
    from noisecraft.pipeline import load_pipeline

    if extra:
        raise UserError(f"unexpected argument '{extra[0]}'")
    if not (args.x or args.y or args.z):
        raise UserError("a grid needs at least one axis: --x, --y or --z NAME=VALUES")
    prompts = _prompts(args)
    if prompts is not None and len(prompts) > 1:
        raise UserError("a grid draws one prompt (--prompt once); compare prompts with a prompt_sr axis")
    x, y, z = (None if a is None else parse_axis(a) for a in (args.x, args.y, args.z))  # checked before loading
    spec = GridSpec(str(args.checkpoint), x, y, z, n=args.n, class_index=args.class_index,
                    prompt=prompts[0] if prompts else None, image=open_image(args.image) if args.image else None,
                    options=_sampling_options(args))
    loras = _loras(args)  # loaded on every run of the grid
    plan = plan_grid(spec, lambda path: load_pipeline(path, args.device, loras=loras),
                     max_megapixels=args.max_megapixels)
    out = run_grid(plan, args.out, progress=True)
    print(f"wrote grid.png ({len(plan.cells)} cells of {args.n} images), cells/ and cells.json to {out}")
    return 0


def _edit_mask(args, image_size: tuple[int, int]):
    """The mask of `edit`'s flags, at the input image's size (None: img2img)."""
    from noisecraft.editing import half_mask, rect_mask

    if args.mask_rect:
        try:
            x, y, w, h = (int(v) for v in args.mask_rect.split(","))
        except ValueError:
            raise UserError(f"--mask-rect takes X,Y,W,H in the image's pixels, got '{args.mask_rect}'") from None
        return rect_mask(x, y, w, h, image_size)
    if args.mask_half:
        return half_mask(args.mask_half, image_size)
    return args.mask  # a path, or None


def cmd_edit(args, extra) -> int:
    from noisecraft.editing import open_image
    from noisecraft.imageinfo import image_settings
    from noisecraft.pipeline import load_pipeline
    from noisecraft.viz import save_before_after, save_images

    if extra:
        raise UserError(f"unexpected argument '{extra[0]}'")
    image = open_image(args.image)  # checked before the model loads
    mask = _edit_mask(args, image.size)
    options = _sampling_options(args)
    options.strength, options.jumps = args.strength, args.jumps
    pipe = load_pipeline(args.checkpoint, args.device, loras=_loras(args))
    req = pipe.prepare(args.n, args.class_index, prompt=_prompts(args), image=image, mask=mask, options=options)
    images = pipe.generate(request=req, progress=True)
    out = save_images(images, args.out, settings=image_settings(pipe, req, model=str(args.checkpoint)))
    src = req.source
    save_before_after(src.images[0], None if src.mask is None else src.mask[0], images, out / "before_after.png")
    print(f"wrote {len(images)} images, grid.png and before_after.png to {out}")
    return 0


def cmd_info(args, extra) -> int:
    from noisecraft.checkpoint import load_checkpoint
    from noisecraft.conditioning.text import describe_encoder
    from noisecraft.models import build_model, count_parameters

    if extra:
        raise UserError(f"unexpected argument '{extra[0]}'")
    if args.checkpoint and args.path:
        raise UserError("give the checkpoint either as --checkpoint or as the argument, not both")
    path = args.checkpoint or args.path
    if args.dataset:
        if path is not None:
            raise UserError("give either a run (or PNG) or --dataset, not both")
        return _print_dataset_info(args)
    if path is None:
        raise UserError("give a run directory, a checkpoint file or a PNG image (or --dataset NAME)")
    if Path(path).suffix.lower() == ".png":
        return _print_png_parameters(path)
    ckpt = load_checkpoint(path)
    meta, cfg = ckpt.meta, ckpt.config
    task = meta.get("task", cfg.train.task)
    n = count_parameters(build_model(cfg.model)) if task == "diffusion" else meta.get("params")
    info = {"checkpoint": meta["path"], "step": meta["step"], "task": task,
            "parts": meta["modules"], "parameters": n, "best_val_loss": meta.get("best_val_loss"),
            "class_names": meta.get("class_names"), "text_encoder": describe_encoder(cfg.model),
            **{k: meta[k] for k in ("autoencoder", "latent_scale") if k in meta}, **_data_license(cfg.data.dataset),
            "config": cfg.to_dict()}
    print(to_json(info))
    return 0


def _data_license(dataset: str) -> dict:
    """The licence and attribution of a dataset that has them (registry.DATASETS), for `info`."""
    facts = DATASETS.get(dataset, "data.dataset").facts
    return {"data_license": {k: facts[k] for k in ("license", "license_url", "attribution")}} if "license" in facts \
        else {}


def _print_dataset_info(args) -> int:
    """`info --dataset NAME`: a dataset's images, classes, licence and attribution (the emoji set is rasterised into
    its cache here when it is not yet)."""
    from noisecraft.data import load_dataset

    cfg = Config().data
    cfg.dataset, cfg.data_root, cfg.image_size = args.dataset, args.data_root, args.image_size
    if args.dataset == "emoji":
        from noisecraft.emoji import describe

        print(to_json(describe(cfg)))
        return 0
    train, val = load_dataset(cfg, "train"), load_dataset(cfg, "val")
    print(to_json({"dataset": args.dataset, "train": len(train), "heldout": len(val), "classes": train.class_names,
                   "image_shape": [train.channels, train.image_size, train.image_size], **_data_license(args.dataset)}))
    return 0


def _print_png_parameters(path: str) -> int:
    from noisecraft.imageinfo import read_parameters

    try:
        text = read_parameters(path)
    except OSError as e:  # missing, unreadable, or not an image (PIL's UnidentifiedImageError is an OSError)
        raise UserError(f"cannot read {path}: {e}") from None
    if text is None:
        raise UserError(f"{path} has no `parameters` text chunk (not written by noisecraft or a diffusion web UI)")
    print(text)
    return 0


def cmd_serve(args, extra) -> int:
    if extra:
        raise UserError(f"unexpected argument '{extra[0]}'")
    try:
        from noisecraft.serve import ServeConfig, serve
    except ImportError as e:
        raise UserError(f"the web app needs the serve extra ({e}): pip install -e '.[serve]'") from None
    serve(ServeConfig(runs=args.runs, data_root=args.data_root, host=args.host, port=args.port, device=args.device,
                      cache_mb=args.cache_mb, max_queue=args.max_queue, threads=args.threads,
                      loras=tuple(args.lora or ())))
    return 0


def cmd_evaluate(args, extra) -> int:
    from noisecraft.evaluate.report import EvalOptions, evaluate_checkpoint

    if extra:
        raise UserError(f"unexpected argument '{extra[0]}'")
    opts = EvalOptions(n=args.n, sampling=_sampling_options(args), device=args.device, prompts=_prompts(args),
                       clip_weights=args.clip_weights, loras=_loras(args),
                       inception=not args.no_inception, inception_weights=args.inception_weights,
                       classifier=not args.no_classifier, progress=not args.no_progress)
    report = evaluate_checkpoint(args.checkpoint, args.out, opts)
    print(to_json(report))
    print(f"wrote report.json, report.md and samples.png to {report['out']}", file=sys.stderr)
    return 0


def cmd_evaluate_autoencoder(args, extra) -> int:
    from noisecraft.evaluate.autoencoder import AutoencoderEvalOptions, evaluate_autoencoder

    if extra:
        raise UserError(f"unexpected argument '{extra[0]}'")
    opts = AutoencoderEvalOptions(n=args.n, device=args.device, classifier=not args.no_classifier)
    report = evaluate_autoencoder(args.checkpoint, args.out, opts)
    print(to_json(report))
    return 0


def cmd_train_classifier(args, extra) -> int:
    from noisecraft.device import pick_device
    from noisecraft.evaluate.classifier import get_classifier

    if extra:
        raise UserError(f"unexpected argument '{extra[0]}'")
    data_cfg = DataConfig(dataset=args.dataset, data_root=args.data_root, image_size=args.image_size)
    clf = get_classifier(data_cfg, device=pick_device(args.device), retrain=True, progress=not args.no_progress)
    m = clf.meta
    print(f"classifier for {m['data_key']}: held-out accuracy {m['heldout_accuracy']:.4f} on {m['heldout_size']} "
          f"images (trained on {m['train_size']} in {m['train_seconds']:.0f} s); saved to {m['path']}")
    return 0


def cmd_explain(args, extra) -> int:
    from noisecraft.explain import ExplainOptions, explain

    if extra:
        raise UserError(f"unexpected argument '{extra[0]}'")
    figures = tuple(f.strip() for f in args.figures.split(",") if f.strip()) if args.figures else None
    index = explain(args.checkpoint, args.out, ExplainOptions(figures=figures, seed=args.seed, n=args.n,
                                                              steps=args.steps, class_index=args.class_index,
                                                              prompts=list(args.prompt or []), loras=_loras(args)),
                    device=args.device)
    print(f"wrote {len(index['figures'])} figures and explain.json to {args.out}")
    return 0


def cmd_ema(args, extra) -> int:
    if extra:
        raise UserError(f"unexpected argument '{extra[0]}'")
    if (args.sigma_rel is None) == (not args.sweep):
        raise UserError("pass --sigma-rel S (one EMA, written as a checkpoint) or --sweep (several, scored), not "
                        "both or neither")
    if not args.sweep:
        from noisecraft.phema import write_posthoc_checkpoint

        path = write_posthoc_checkpoint(args.checkpoint, args.sigma_rel, args.out)
        print(f"wrote the post-hoc EMA sigma_rel={args.sigma_rel} to {path}; sample it with `noisecraft sample "
              f"--checkpoint {path} --out DIR`")
        return 0
    from noisecraft.evaluate.posthoc_ema import DEFAULT_SIGMA_RELS, SweepOptions, sweep

    sigmas = _floats(args.sigma_rels, "--sigma-rels") if args.sigma_rels else DEFAULT_SIGMA_RELS
    result = sweep(args.checkpoint, SweepOptions(sigmas, n=args.n, device=args.device, seed=args.seed), args.out)
    print(to_json({k: result[k] for k in ("fixed_ema", "best", "out")}))
    print(f"wrote sweep.json and sweep.png to {result['out']}", file=sys.stderr)
    return 0


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"{flag} takes comma-separated numbers, got '{text}'") from None


def _add_ema_parser(sub) -> None:
    """`ema`: post-hoc EMA of a run that kept power-function EMA profiles."""
    m = sub.add_parser("ema", help="post-hoc EMA: reconstruct an EMA of any length from a run's snapshots",
                       description="Reconstruct the power-function EMA of relative width --sigma-rel at the end of "
                       "training from the snapshots of the two profiles the run kept (train.posthoc_ema; Karras et "
                       "al. 2024), by least squares, and write it as a checkpoint that sample, evaluate and explain "
                       "take. --sweep reconstructs several and scores each beside the run's fixed EMA "
                       "(validation loss; judge accuracy and FD for class-conditional runs): sweep.json, sweep.png.")
    m.add_argument("--checkpoint", required=True, help="run directory (its last checkpoint) or .safetensors file")
    m.add_argument("--sigma-rel", type=float, help="the EMA's width relative to the training length, e.g. 0.05")
    m.add_argument("--sweep", action="store_true", help="reconstruct and score --sigma-rels")
    m.add_argument("--sigma-rels", metavar="A,B,...", help="the sweep's widths (default: 0.02 to 0.25)")
    m.add_argument("--n", type=int, default=500, help="--sweep: samples judged per EMA (default 500; 0: validation "
                   "loss only)")
    m.add_argument("--seed", type=int, default=0, help="--sweep: sample i uses seed + i")
    m.add_argument("--out", help="the checkpoint file (default: <run>/checkpoints/posthoc_ema_<S>.safetensors); "
                   "with --sweep, a directory (default: <run>/posthoc_ema)")
    _device_flag(m)
    m.set_defaults(func=cmd_ema)


def _add_sampling_args(p: argparse.ArgumentParser, n_default: int, n_help: str) -> None:
    """The flags `sample` and `evaluate` share: which checkpoint, how many images, and how to draw them."""
    p.add_argument("--checkpoint", required=True, help="run directory or .safetensors file")
    p.add_argument("--n", type=int, default=n_default, help=n_help)
    p.add_argument("--sampler", choices=SAMPLERS.names(),
                   help=f"{SAMPLERS.help()} (default: the checkpoint's sample.sampler)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the checkpoint's sample.steps)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance weight w (0 = off; default: the "
                   "checkpoint's sample.guidance)")
    p.add_argument("--guidance-interval", metavar="LO,HI",
                   help="guide only where LO < sigma <= HI ('all': every step; default: the checkpoint's "
                   "sample.guidance_interval)")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per sampling batch (default: the device's fastest, 256 on GPU, 32-64 on CPU)")
    _device_flag(p)
    p.add_argument("--precision", choices=PRECISIONS.names(),
                   help=f"network precision while sampling: {PRECISIONS.help()} (default: the checkpoint's "
                   "sample.precision)")
    p.add_argument("--prompt", action="append", help="text models: a prompt (repeat for several; the images cycle "
                   "through them), in A1111's syntax: (words:1.3) weights, [words] lightens, [from:to:when] switches "
                   "prompts during sampling, [a|b] alternates, BREAK (docs: how-to, prompt syntax)")
    p.add_argument("--prompt-file", "--prompts", dest="prompt_file", metavar="FILE",
                   help="text models: prompts, one a line (blank lines and # comments skipped)")
    p.add_argument("--negative-prompt", help="text models: guidance steers away from this prompt instead of the "
                   "empty one (the same syntax as --prompt)")
    _add_lora_flag(p)


def _device_flag(p: argparse.ArgumentParser, default: str | None = "auto", what: str = "") -> None:
    """--device, spelled once for every command; default None: the run's config decides."""
    shown = "the run's config" if default is None else default
    p.add_argument("--device", default=default,
                   help=f"auto (the first GPU, else the CPU) | cpu | cuda | cuda:N{what} (default: {shown})")


def _add_train_args(t: argparse.ArgumentParser, default_preset: str) -> None:
    """The flags of `train` and `train-autoencoder`."""
    t.add_argument("--preset", choices=PRESETS.names(), default=None,
                   help=f"starting config (default: {default_preset}): {PRESETS.help()}")
    t.add_argument("--config", help="JSON config file (instead of a preset)")
    t.add_argument("--dataset", choices=DATASETS.names(), help=DATASETS.help())
    t.add_argument("--data-root", help="dataset location (torchvision layout, or the image folder)")
    t.add_argument("--download", action="store_true", help="download mnist/cifar10 into --data-root if missing")
    t.add_argument("--image-size", type=int, help="resize images to N x N")
    _add_run_flags(t, "total optimizer steps")
    t.add_argument("--seed", type=int, help="seed of weights, batches and noise (train.seed)")
    t.add_argument("--autoencoder", metavar="PATH", help="latent diffusion: a noisecraft autoencoder run or a "
                   "diffusers AutoencoderKL folder (config.json + weights)")
    t.add_argument("--lpips-weights", metavar="FILE", help="autoencoders: torchvision's VGG16 ImageNet weights for "
                   "the LPIPS term (without them the term is off)")
    t.set_defaults(func=cmd_train, default_preset=default_preset)


def _add_run_flags(p: argparse.ArgumentParser, steps_help: str) -> None:
    """The flags of every command that trains a run: where, how long, on what, and starting again or going on."""
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--steps", type=int, help=steps_help)
    _device_flag(p, None)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint "
                   "(from step 0 with a clean log when it stopped before its first checkpoint)")
    p.add_argument("--overwrite", action="store_true", help="--out already holds a run: delete it (its checkpoints, "
                   "samples, logs and figures) and start again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="noisecraft", description="Train, sample and evaluate image diffusion models.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model", description="Train a diffusion model. Any config field can be "
                       "overridden as --section.field=VALUE (e.g. --train.lr=1e-3 --model.unet.base_channels=64). "
                       "SIGINT (Ctrl-C) or SIGTERM finishes the current step, saves checkpoints/last and exits with "
                       "130 or 143; --resume continues exactly where it stopped, also after a crash or kill -9. "
                       "--autoencoder PATH trains in the latent space of an autoencoder (latent diffusion).")
    _add_train_args(t, "digits")
    a = sub.add_parser("train-autoencoder", help="train a KL autoencoder with a patch discriminator (for latent "
                       "diffusion)", description="Train the first stage of latent diffusion: a KL-regularised "
                       "autoencoder against a PatchGAN discriminator (train with train.task=autoencoder). Overrides, "
                       "signals and --resume as for `train`. Its run directory is what `train --autoencoder` takes.")
    _add_train_args(a, "digits64-ae")

    s = sub.add_parser("sample", help="draw images from a checkpoint")
    _add_sampling_args(s, n_default=64, n_help="number of images")
    s.add_argument("--class", dest="class_index", type=int, help="class index (default: all classes in turn)")
    s.add_argument("--out", required=True, help="output directory (one PNG per image + grid.png)")
    s.set_defaults(func=cmd_sample)

    _add_edit_parser(sub)
    _add_grid_parser(sub)
    _add_distill_parser(sub)
    _add_finetune_parser(sub)
    _add_ema_parser(sub)

    _add_evaluate_parsers(sub)
    _add_classifier_parser(sub)
    _add_info_parser(sub)
    _add_explain_parser(sub)
    _add_serve_parser(sub)
    return p


def _add_evaluate_parsers(sub) -> None:
    e = sub.add_parser("evaluate", help="sample a checkpoint and compute metrics (report.json, report.md)",
                       description="Generate N class-balanced samples and compute offline metrics (the dataset "
                       "classifier's class accuracy, Fréchet distance and precision/recall, next to the same for "
                       "real held-out data) and, when Inception-v3 weights are available, FID, KID and IS. A text "
                       "model draws them for the captions of real held-out images (default; its samples are also "
                       "compared with those images) or for --prompts (cycled), and adds text alignment: the named "
                       "class's accuracy, attribute and colour agreement and CLIPScore.")
    _add_sampling_args(e, n_default=2000, n_help="number of samples (default 2000)")
    e.add_argument("--out", help="report directory (default: <run>/eval)")
    e.add_argument("--inception-weights", help="torch-fidelity's weights-inception-2015-12-05-6726825d.pth "
                   "(or .safetensors); default: the torch hub cache")
    e.add_argument("--clip-weights", metavar="DIR", help="text models: a local CLIP model (Hugging Face format) for "
                   "CLIPScore (torchmetrics)")
    e.add_argument("--no-inception", action="store_true", help="skip FID/KID/IS")
    e.add_argument("--no-classifier", action="store_true", help="skip the offline classifier metrics")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("evaluate-autoencoder", help="reconstruction quality of an autoencoder run (PSNR, SSIM, "
                       "colour error, judge)",
                       description="Reconstruct the held-out split of an autoencoder run's data and report PSNR, SSIM, "
                       "for colour data the CIEDE2000 colour error (mean and 95th percentile, overall and per hue), "
                       "the offline classifier's accuracy and Fréchet distance on the reconstructions, and their "
                       "sharpness, next to the originals' (report.json, reconstructions.png).")
    r.add_argument("--checkpoint", required=True, help="autoencoder run directory or .safetensors file")
    r.add_argument("--n", type=int, help="held-out images to reconstruct (default: all)")
    r.add_argument("--out", help="report directory (default: <run>/eval-autoencoder)")
    _device_flag(r)
    r.add_argument("--no-classifier", action="store_true", help="skip the offline classifier metrics")
    r.set_defaults(func=cmd_evaluate_autoencoder)


def _add_classifier_parser(sub) -> None:
    c = sub.add_parser("train-classifier", help="train and cache the offline judge classifier for a dataset",
                       description="Train the small CNN that `evaluate` uses for offline metrics (class accuracy, "
                       "Fréchet distance and precision/recall in its feature space) and cache it under "
                       "$NOISECRAFT_CACHE (default ~/.cache/noisecraft)/classifiers. Prints its held-out accuracy.")
    c.add_argument("--dataset", choices=DATASETS.names(), default="digits",
                   help=f"{DATASETS.help()} (default: digits)")
    c.add_argument("--data-root", help="dataset location (torchvision layout, or the image folder)")
    c.add_argument("--image-size", type=int, help="image folders: resize images to N x N (built-in datasets are "
                   "judged at their native size)")
    _device_flag(c, "cpu")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_train_classifier)


def _add_info_parser(sub) -> None:
    i = sub.add_parser("info", help="config and parameter count of a checkpoint; the settings of a PNG image")
    i.add_argument("path", nargs="?", help="run directory or .safetensors file; or a PNG image: print the settings it "
                   "was drawn with (its `parameters` text chunk)")
    i.add_argument("--checkpoint", help="run directory or .safetensors file")
    i.add_argument("--dataset", choices=DATASETS.names(), help="instead of a run: a dataset's size, classes, licence "
                   "and attribution (emoji: rasterises the SVGs into the cache once)")
    i.add_argument("--data-root", help="with --dataset: its location (torchvision root, image folder, emoji SVGs)")
    i.add_argument("--image-size", type=int, help="with --dataset: the size to load it at (emoji: rasterise at N)")
    i.set_defaults(func=cmd_info)


def _add_distill_parser(sub) -> None:
    d = sub.add_parser("distill", help="distil a trained run into a 1-4 step student (consistency distillation)",
                       description="Tune a student, initialised from a trained diffusion run (the teacher), into a "
                       "consistency model that draws in 1-4 network calls, with the teacher's guidance distilled "
                       "into it. A training run like any other (resume, signals, logs, checkpoints); the student run "
                       "records its teacher and samples on its own. Any config field can be overridden with "
                       "--section.key=value.")
    d.add_argument("--checkpoint", help="the teacher: a diffusion run directory or checkpoint file")
    d.add_argument("--method", choices=DISTILLATIONS.names(), help=f"{DISTILLATIONS.help()} (default: cd)")
    _add_run_flags(d, "optimizer steps (default: measured, see benchmarks/fewstep.py)")
    d.set_defaults(func=cmd_distill)


def _add_finetune_parser(sub) -> None:
    f = sub.add_parser("finetune", help="teach a trained run a new concept or style from a few images (LoRA)",
                       description="Train a low-rank adapter (LoRA, through peft) on a frozen diffusion run from a "
                       "folder of images (class sub-folders, or metadata.jsonl / .txt captions for a text run), with "
                       "DreamBooth's prior preservation: images the base draws for its own classes join every batch "
                       "(--finetune.prior_weight, --finetune.prior_prompts). A training run like any other (resume, "
                       "signals, logs, checkpoints); it ends with <out>/adapter/ in peft's layout, which sample, "
                       "edit, evaluate, explain and serve load with --lora PATH[:SCALE]. Targets: "
                       f"{LORA_TARGETS.help()} (--finetune.targets).")
    f.add_argument("--checkpoint", help="the base: a diffusion run directory or checkpoint file (never changed)")
    f.add_argument("--data-root", help="the folder of images to learn from")
    f.add_argument("--rank", type=int, help="the adapter's rank r (default 8)")
    _add_run_flags(f, "optimizer steps (default 400)")
    f.set_defaults(func=cmd_finetune)


def _add_edit_parser(sub) -> None:
    from noisecraft.editing import HALVES

    d = sub.add_parser("edit", help="img2img, inpainting and variations of an image",
                       description="Edit an image with a trained run: without a mask, img2img (SDEdit: the image is "
                       "noised to --strength and denoised under the asked class or prompt; low strength = "
                       "variations); with a mask, inpainting (RePaint: the masked pixels are regenerated, the rest "
                       "kept). Images of another size or mode are converted as the run's data were.")
    _add_sampling_args(d, n_default=4, n_help="edited images (each with its own seed)")
    d.add_argument("--image", required=True, help="the image to edit (PNG, JPEG, ...)")
    m = d.add_mutually_exclusive_group()
    m.add_argument("--mask", help="mask image of the input's size: white = regenerate")
    m.add_argument("--mask-rect", metavar="X,Y,W,H", help="regenerate this rectangle (the input's pixels)")
    m.add_argument("--mask-half", choices=HALVES, help="regenerate this half of the image")
    d.add_argument("--strength", type=float, help="how far down the noise levels the image goes, in (0, 1]: 1 = "
                   "from pure noise (default: 0.6 for img2img, 1 with a mask)")
    d.add_argument("--jumps", type=int, help="inpainting: RePaint resamplings of each step (default: measured, "
                   "see benchmarks/editing.py)")
    d.add_argument("--class", dest="class_index", type=int, help="the class to draw (default: none: the model's "
                   "unconditional branch keeps what the image shows)")
    d.add_argument("--out", required=True, help="output directory (PNGs, grid.png, before_after.png)")
    d.set_defaults(func=cmd_edit)


def _add_grid_parser(sub) -> None:
    from noisecraft.grid import MAX_CELLS, MAX_MEGAPIXELS

    g = sub.add_parser("grid", help="X/Y/Z comparison grid: the same seeds under up to three axes of settings",
                       description="Draw the same seeds under every combination of up to three axes (AUTOMATIC1111's "
                       "X/Y/Z plot). An axis is NAME=VALUES with VALUES a list (5,10,20), a range (1-5), a range with "
                       "a step (1-10 (+3)) or a count (1-4 [4]). Axes: " + GRID_AXES.help() + ". Cells that differ "
                       "only in guidance, prompt, class or seed are drawn in one batch. Writes grid.png (labelled), "
                       f"cells/*.png (each with its `parameters`) and cells.json. At most {MAX_CELLS} cells.")
    _add_sampling_args(g, n_default=16, n_help="images per cell")
    for name in ("x", "y", "z"):
        g.add_argument(f"--{name}", metavar="NAME=VALUES", help=f"the {name} axis, e.g. steps=5,10,20")
    g.add_argument("--class", dest="class_index", type=int, help="class runs: the class of every cell (default: all "
                   "classes in turn)")
    g.add_argument("--image", help="edits: the image every cell starts from (img2img; with a strength axis)")
    g.add_argument("--max-megapixels", type=float, default=MAX_MEGAPIXELS, help="refuse a sheet larger than this "
                   f"(default: {MAX_MEGAPIXELS:g})")
    g.add_argument("--out", required=True, help="output directory (grid.png, cells/, cells.json)")
    g.set_defaults(func=cmd_grid)


def _add_explain_parser(sub) -> None:
    """`explain`: figures drawn from a run."""
    x = sub.add_parser("explain", help="figures that explain a run: schedules, forward and reverse process, "
                       "samplers, guidance, the U-Net, cross-attention, latents",
                       description="Draw figures from a trained run into --out (one PNG each, and explain.json "
                       f"listing them). Figures: {FIGURES.help()}.")
    x.add_argument("--checkpoint", required=True, help="run directory or .safetensors file")
    x.add_argument("--out", required=True, help="directory for the PNGs and explain.json")
    x.add_argument("--figures", metavar="A,B", help=f"comma-separated, of {', '.join(FIGURES.names())} (default: "
                   "every one the run supports)")
    x.add_argument("--seed", type=int, default=0, help="image i of a row uses seed + i (default 0)")
    x.add_argument("--n", type=int, default=4, help="rows of the process and guidance figures (default 4)")
    x.add_argument("--steps", type=int, default=50, help="sampler steps of the reverse process and guidance sweep "
                   "(default 50)")
    x.add_argument("--class", dest="class_index", type=int, help="class models: the class of every row (default: "
                   "classes 0, 1, ... in turn)")
    x.add_argument("--prompt", action="append", help="text models: a row's prompt (repeat; default: the dataset's "
                   "captions)")
    _device_flag(x)
    _add_lora_flag(x)
    x.set_defaults(func=cmd_explain)


def _add_serve_parser(sub) -> None:
    """`serve`: the web app and HTTP API."""
    v = sub.add_parser("serve", help="web app and HTTP API: generate with a live preview, follow and start runs",
                       description="Serve the page and the HTTP API (OpenAPI docs at /docs) over every run directory "
                       "under --runs. Binds 127.0.0.1 by default: anyone who can reach the port can sample, start "
                       "and stop training.")
    v.add_argument("--runs", required=True, help="directory of run directories: each run under it is a model")
    v.add_argument("--data-root", help="the only directory training started from the page may read data from")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    v.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    _device_flag(v, what=" for sampling")
    v.add_argument("--cache-mb", type=int, default=2048, help="memory for loaded checkpoints (least recently used "
                   "ones are dropped)")
    v.add_argument("--max-queue", type=int, default=32, help="jobs waiting at most; more are answered 429")
    v.add_argument("--threads", type=int, default=0, help="CPU threads for sampling (default: all cores)")
    v.add_argument("--lora", action="append", metavar="PATH", help="a LoRA adapter folder to offer (repeat for "
                   "several) beside the finetune runs under --runs; each is listed for the model it was trained on, "
                   "and a request picks its scale")
    v.set_defaults(func=cmd_serve)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, extra = make_parser().parse_known_args(argv)
        if args.command in ("train", "train-autoencoder"):
            args.preset_given = args.preset is not None
            if args.preset and args.config:
                raise UserError("pass either --preset or --config, not both")
            args.preset = args.preset or args.default_preset
        return args.func(args, extra)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:  # SIGINT/SIGTERM during training: `last` is saved; 130 / 143 by shell convention
        print(f"noisecraft: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a full disk or a read-only file system while writing outputs
        from noisecraft.faults import disk_error

        err = disk_error(e, "cannot write output")
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"  # for users: the message, not the source line that raised it


def entrypoint() -> None:
    warnings.filterwarnings("default", category=UserWarning, module="noisecraft")
    warnings.formatwarning = _one_line_warning
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
