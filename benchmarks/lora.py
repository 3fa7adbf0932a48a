"""LoRA fine-tuning (issue 39): teach a `digits-text` run trained without nines the nine from 20 images, and a
right-leaning style from 20 sheared digits; judge both with the offline digit classifier and the slant measure.

    python benchmarks/lora.py                              # trains the base, the two adapters, judges (long)
    python benchmarks/lora.py --base runs/base-no9         # a base trained with --data.classes=0,1,2,3,4,5,6,7,8
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/lora.py   # as a CPU without AVX-512

Writes benchmarks/results/lora.json (and docs/figures/lora/scales.png, `noisecraft explain --figures lora`, both
adapters):
* the base: `noisecraft train --preset digits-text --data.classes=0,...,8` (no nine ever seen);
* nines: `noisecraft finetune` on 20 training nines captioned "a nine" (`--nine-captions templates`: in the base's
  own caption wordings, "a handwritten nine", "the digit 9", ..., in turn) (25 in the folder: its held-out split takes
  1 in 5); prompts naming a nine in wordings no training caption uses, judged as 9 with the adapter at scale 1
  (goal >= 90%) and by the base alone (near 0%); prompts for the digits 0-8 with and without the adapter, judged
  as the digit asked (goal: within 2 points: the prior preserved); the adapter file against the base checkpoint
  (goal <= 5%); the fine-tuning's wall time and the load average (a timing goal is only read on a quiet machine);
* style: `noisecraft finetune` on 20 digits 0-8 (each in turn, so every digit is taught) sheared about 20 degrees to
  lean right, captioned by their digit:
  the samples' mean slant (captions.measure_attributes) at scales 0, 0.5, 1 against the sheared images' (goal:
  >= 80% of their lean over the unsheared images' at scale 1, about half at 0.5), judged as the digit asked (>= 95%);
* `--nine-seeds K`: the nine fine-tuned with training seeds 0 .. K-1, each judged (nines, other digits): the spread
  a single run hides;
* both adapters at scale 1 together: nine prompts judged 9 (goal >= 85%) and their slant;
* `--class-base RUN`: the same style taught to a class-conditional digits run (class sub-folders), judged alike;
* `--quickstart`: the digits quickstart (`noisecraft train --preset digits`) timed first, in the same environment,
  and each fine-tuning's whole command as a multiple of it (goal for the nine: <= 0.5); `--avx2` caps the kernels
  to AVX2 for every command (fp32 always), as on a laptop without AVX-512. Nothing else should run meanwhile;
* the machine: CPU model, ISA flags, load, threads (common.machine.record).
"""
from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from noisecraft.captions import DIGIT_WORDS, class_texts, measure_attributes
from noisecraft.config import DataConfig, to_json
from noisecraft.data import load_dataset

from common.machine import capped_env, describe, record
from common.results import commit, loadavg
from common.tables import files, pct, table

NO_NINE = "0,1,2,3,4,5,6,7,8"
NINE_PROMPTS = ("a sketch of the numeral {}", "{}, written by hand", "the handwritten number {} on paper",
                "someone wrote a {}", "here is the digit {} in ink", "a scribbled {}", "the figure {}",
                "{} drawn with a pen")  # wordings no training caption uses (checked in `held_out`)
SHEAR = 0.364  # tan(20 degrees): x moves by 0.364 y, the top to the right


def noisecraft(*args: str, env: dict | None = None) -> dict:
    """A noisecraft command as a user types it (fp32, no progress bar) in `env` (default: this process's): its wall
    time and the load around it."""
    cmd = [sys.executable, "-m", "noisecraft", *args, "--train.precision=fp32", "--no-progress"]
    before, t0 = loadavg(), time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return {"command": " ".join(["noisecraft", *cmd[3:]]), "wall_seconds": round(time.perf_counter() - t0, 1),
            "loadavg_before": before, "loadavg_after": loadavg()}


def finetune(base: Path, folder: Path, out: Path, flags: list[str], env: dict) -> dict:
    """`noisecraft finetune` of `base` on `folder` into `out` (`noisecraft` above: timed, with the load)."""
    return noisecraft("finetune", "--checkpoint", str(base), "--data-root", str(folder), "--out", str(out),
                      "--overwrite", *flags, env=env)


def write_folder(root: Path, images: torch.Tensor, captions: list[str]) -> Path:
    """uint8 (N, 1, H, W) images as PNGs with metadata.jsonl captions (the Hugging Face imagefolder layout)."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (img, text) in enumerate(zip(images, captions)):
        Image.fromarray(img[0].numpy()).save(root / f"{i:03d}.png")
        lines.append(json.dumps({"file_name": f"{i:03d}.png", "text": text}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def shear(images: torch.Tensor, s: float = SHEAR) -> torch.Tensor:
    """Lean uint8 digits right: the pixel at (x, y) comes from (x - s y), y up from the centre."""
    theta = torch.tensor([[1.0, s, 0.0], [0.0, 1.0, 0.0]]).expand(len(images), 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", align_corners=False).round().to(torch.uint8)


def round_robin(labels: torch.Tensor, classes, n: int) -> torch.Tensor:
    """Indices of n images taking each class in turn (its first, then its second, ...): every class in a few."""
    per_class = [torch.nonzero(labels == c).flatten() for c in classes]
    return torch.stack([idx[: -(-n // len(per_class))] for idx in per_class], 1).flatten()[:n]


@functools.cache
def training_captions() -> frozenset[str]:
    """Every caption of the digits' training split, and the nines' own."""
    return frozenset(load_dataset(DataConfig(captions="on"), "train").captions.texts) | {"a nine"}


def held_out(digit: int) -> list[str]:
    prompts = [t.format(n) for t in NINE_PROMPTS for n in (DIGIT_WORDS[digit], str(digit))]
    assert not training_captions() & set(prompts), "a held-out prompt is a training caption"
    return prompts


def lean_share(adapted: dict, plain: dict, slants: tuple[float, float]) -> float:
    """How far an adapter leans samples, as a share of how far the shear leans the training images: the mean slant
    of `adapted` over `plain`'s, over (sheared, unsheared) training images' mean slants `slants`."""
    return round((mean(adapted, "slant") - mean(plain, "slant")) / (slants[0] - slants[1]), 4)


def judged(pipe, digits: list[int], n: int, steps: int | None, by_class: bool = False) -> dict:
    """n samples per digit over its held-out prompts (a class run: its class; seeds 0..n-1): the share judged as the
    digit, and the slant."""
    from noisecraft.evaluate.classifier import classifier_accuracy

    out = {}
    for d in digits:
        prompts = [] if by_class else held_out(d)
        asked = {"class_index": d} if by_class else {"prompt": [prompts[i % len(prompts)] for i in range(n)]}
        images = pipe.generate(n, **asked, steps=steps, seed=0)
        out[str(d)] = {"accuracy": round(classifier_accuracy(images, torch.full((n,), d), "digits"), 4),
                       "slant": round(measure_attributes(images)["slant"].mean().item(), 4)}
    return out


def mean(rows: dict, key: str) -> float:
    return round(sum(r[key] for r in rows.values()) / len(rows), 4)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="runs/lora-bench", help="where the runs and folders go")
    p.add_argument("--base", help="a digits-text run trained with --data.classes=0,...,8 (default: train one)")
    p.add_argument("--n", type=int, default=100, help="samples per digit and setting")
    p.add_argument("--steps", type=int, help="sampler steps (default: the run's)")
    p.add_argument("--base-steps", type=int, help="the base's training steps (default: the preset's; fewer only for a "
                   "reduced run, which the JSON records)")
    p.add_argument("--finetune-steps", type=int, help="fine-tuning steps (default: noisecraft finetune's)")
    p.add_argument("--nine-captions", choices=("one", "templates"), default="one",
                   help="the nines' captions: 'a nine' each, or the base's own caption wordings (class_texts) in turn")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a fine-tuning override, e.g. finetune.targets=attention+blocks (repeatable)")
    for name in ("nines", "slant"):
        p.add_argument(f"--{name}-set", action="append", default=[], metavar="KEY=VALUE",
                       help=f"an override of the {name} fine-tuning alone, after --set (repeatable)")
    p.add_argument("--class-base", help="a class-conditional digits run (the quickstart's) to teach the slant too")
    p.add_argument("--nine-seeds", type=int, default=3, help="fine-tune the nines with this many training seeds "
                   "(0, 1, ...; the first is the one timed and judged in full) and judge each: the spread")
    p.add_argument("--quickstart", action="store_true", help="time the digits quickstart first, in the same "
                   "environment, and each fine-tuning as a multiple of it (nothing else should run)")
    p.add_argument("--avx2", action="store_true", help="cap every command's kernels to AVX2")
    p.add_argument("--out", default="benchmarks/results/lora.json")
    p.add_argument("--figure", default="docs/figures/lora/scales.png")
    a = p.parse_args()
    work, env = Path(a.work), capped_env(a.avx2)
    result: dict = {"machine": record("fp32", env), "commit": commit(),
                    "settings": {"base": a.base, "base_steps": a.base_steps, "finetune_steps": a.finetune_steps,
                                 "n": a.n, "sampler_steps": a.steps, "nine_captions": a.nine_captions,
                                 "finetune_overrides": a.set, "nines_overrides": a.nines_set,
                                 "slant_overrides": a.slant_set}}
    if a.quickstart:
        result["quickstart"] = noisecraft("train", "--preset", "digits", "--out", str(work / "quickstart"),
                                          "--overwrite", env=env)
    base = Path(a.base) if a.base else work / "base"
    if not a.base:
        steps = [f"--steps={a.base_steps}"] if a.base_steps else []
        result["base_training"] = noisecraft("train", "--preset", "digits-text", f"--data.classes={NO_NINE}",
                                             "--out", str(base), "--overwrite", *steps, env=env)
    train = load_dataset(DataConfig(), "train")
    others = round_robin(train.labels, range(9), 25)
    upright, labels = train.images[others], train.labels[others]
    sheared = shear(upright)
    slants = tuple(measure_attributes(x)["slant"].mean().item() for x in (sheared, upright))
    nines, style = folders(work, train, sheared, labels, a.nine_captions)
    shared = ([f"--steps={a.finetune_steps}"] if a.finetune_steps else []) + [f"--{kv}" for kv in a.set]
    flags = {name: [*shared, *(f"--{kv}" for kv in own)] for name, own in (("nines", a.nines_set),
                                                                            ("slant", a.slant_set))}
    for name, folder in (("nines", nines), ("slant", style)):
        run = finetune(base, folder, work / name, flags[name], env)
        if a.quickstart:
            run["quickstarts"] = round(run["wall_seconds"] / result["quickstart"]["wall_seconds"], 3)
        result[f"finetune_{name}"] = run
    result.update(judge(base, work, a.n, a.steps, slants))
    result["nine_seeds"] = nine_seeds(base, work, nines, a.nine_seeds, result, flags["nines"], a.n, a.steps, env)
    if a.class_base:
        result["class_style"] = class_style(Path(a.class_base), work, sheared, labels, slants, flags["slant"], a.n,
                                            a.steps, env)
    figure(base, work, a.figure, a.steps)
    Path(a.out).write_text(to_json(result) + "\n")
    print(to_json({k: v for k, v in result.items() if k != "machine"}))


def folders(work: Path, train, sheared: torch.Tensor, labels: torch.Tensor, nine_captions: str) -> tuple[Path, Path]:
    """The two fine-tuning folders: 25 training nines captioned as `nine_captions` says, and the `sheared` digits,
    each captioned by its digit (`labels`)."""
    wordings = class_texts("9", digit=True) if nine_captions == "templates" else ["a nine"]
    nines = write_folder(work / "nines-data", train.images[train.labels == 9][:25],
                         [wordings[i % len(wordings)] for i in range(25)])
    style = write_folder(work / "slant-data", sheared, [class_texts(str(int(d)), digit=True)[0] for d in labels])
    return nines, style


def judge(base: Path, work: Path, n: int, steps: int | None, slants: tuple[float, float]) -> dict:
    from noisecraft.checkpoint import load_checkpoint
    from noisecraft.pipeline import load_pipeline

    pipe = load_pipeline(base, "auto")
    digits = list(range(9))
    plain = judged(pipe, [9, *digits], n, steps)
    pipe.load_lora(work / "nines", name="nines")
    with_nines = judged(pipe, [9, *digits], n, steps)
    pipe.load_lora(work / "slant", name="slant", scale=0.0)
    slant = {}
    for scale in (0.5, 1.0):
        pipe.set_loras({"nines": 0.0, "slant": scale})
        slant[str(scale)] = judged(pipe, digits, n, steps)
    pipe.set_loras({"nines": 1.0, "slant": 1.0})
    both = judged(pipe, [9], n, steps)["9"]
    adapter = work / "nines" / "adapter" / "adapter_model.safetensors"
    ckpt = load_checkpoint(base).path
    sheared, straight = slants
    lean = {s: lean_share(rows, plain_digits(plain), slants) for s, rows in slant.items()}
    return {
        "nine": {"base": plain["9"], "adapter": with_nines["9"], "prompts": held_out(9)},
        "other_digits": {"base": plain_digits(plain), "adapter": plain_digits(with_nines),
                         "base_mean_accuracy": mean(plain_digits(plain), "accuracy"),
                         "adapter_mean_accuracy": mean(plain_digits(with_nines), "accuracy")},
        "adapter_bytes": adapter.stat().st_size, "base_checkpoint_bytes": ckpt.stat().st_size,
        "adapter_share_of_base": round(adapter.stat().st_size / ckpt.stat().st_size, 4),
        "slant": {"training_images": round(sheared, 4), "unsheared": round(straight, 4),
                  "base_samples": mean(plain_digits(plain), "slant"), "samples": slant,
                  "lean_share_of_training": lean,
                  "accuracy_at_1": mean(slant["1.0"], "accuracy")},
        "both_adapters": {"nine_accuracy": both["accuracy"], "nine_slant": both["slant"],
                          "base_nine_slant": plain["9"]["slant"]},
        "n_per_digit": n}


def nine_seeds(base: Path, work: Path, folder: Path, seeds: int, first: dict, flags: list[str], n: int,
               steps: int | None, env: dict) -> dict:
    """The nine fine-tuned again with training seeds 1 .. seeds-1 (seed 0: `first`, the judged run): each judged
    on the nine prompts and the other digits, so the result carries the spread a single run hides."""
    from noisecraft.pipeline import load_pipeline

    nine = [first["nine"]["adapter"]["accuracy"]]
    others = [first["other_digits"]["adapter_mean_accuracy"]]
    pipe = load_pipeline(base, "auto")
    for seed in range(1, seeds):
        run = work / f"nines-seed{seed}"
        finetune(base, folder, run, [*flags, f"--train.seed={seed}"], env)
        pipe.load_lora(run, name="nines")  # in place of the previous seed's
        rows = judged(pipe, list(range(10)), n, steps)
        nine.append(rows["9"]["accuracy"])
        others.append(mean(plain_digits(rows), "accuracy"))
    return {"seeds": list(range(seeds)), "nine_accuracy": nine, "other_digits_mean_accuracy": others}


def class_style(base: Path, work: Path, sheared: torch.Tensor, labels: torch.Tensor, slants: tuple[float, float],
                flags: list[str], n: int, steps: int | None, env: dict) -> dict:
    """The slant taught to a class-conditional run: the same sheared digits in sub-folders named by class; the
    samples' lean at scale 1 as a share of the training images', and each class judged as asked."""
    from PIL import Image

    from noisecraft.pipeline import load_pipeline

    folder = work / "slant-classes"
    for i, (img, d) in enumerate(zip(sheared, labels.tolist())):
        (folder / str(d)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy()).save(folder / str(d) / f"{i:03d}.png")
    run = finetune(base, folder, work / "slant-class", flags, env)
    pipe, digits = load_pipeline(base, "auto"), sorted(set(labels.tolist()))
    plain = judged(pipe, digits, n, steps, by_class=True)
    pipe.load_lora(work / "slant-class")
    adapted = judged(pipe, digits, n, steps, by_class=True)
    return {"base": str(base), "finetune": run, "samples": {"base": plain, "adapter": adapted},
            "lean_share_of_training": lean_share(adapted, plain, slants),
            "accuracy": mean(adapted, "accuracy"), "base_accuracy": mean(plain, "accuracy")}


def plain_digits(rows: dict) -> dict:
    return {k: v for k, v in rows.items() if k != "9"}


def figure(base: Path, work: Path, path: str, steps: int | None) -> None:
    """`noisecraft explain --figures lora`: each adapter at scales 0, 0.5, 1 on prompts naming a nine and a three."""
    out = work / "explain"
    cmd = [sys.executable, "-m", "noisecraft", "explain", "--checkpoint", str(base), "--out", str(out), "--figures",
           "lora", "--lora", str(work / "nines"), "--lora", str(work / "slant"), "--n", "4", "--prompt",
           "a handwritten nine", "--prompt", "the digit 9", "--prompt", "a handwritten three",
           *(["--steps", str(steps)] if steps else [])]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes((out / "lora.png").read_bytes())


def render(r: dict, name: str = "lora.json") -> str:
    """A lora.py result as markdown: each goal's figure beside the base's, and the fine-tunings' times."""
    nine, other, slant, both = r["nine"], r["other_digits"], r["slant"], r["both_adapters"]
    lean = slant["lean_share_of_training"]
    rows = [["prompts naming a nine (wordings no caption holds), judged 9", pct(nine["adapter"]["accuracy"]),
             pct(nine["base"]["accuracy"]), ">= 90%"],
            ["the digits 0-8 judged as asked, mean", pct(other["adapter_mean_accuracy"]),
             pct(other["base_mean_accuracy"]), "within 2 points"],
            ["adapter file / base checkpoint", pct(r["adapter_share_of_base"]), "", "<= 5%"],
            ["slant adapter at 1: share of the training images' lean", pct(lean["1.0"]), "", ">= 80%"],
            ["slant adapter at 0.5: share of the lean", pct(lean["0.5"]), "", "about half of scale 1's"],
            ["slant adapter at 1: digits judged as asked", pct(slant["accuracy_at_1"]), "", ">= 95%"],
            ["both adapters at 1: nines judged 9 (their slant, the base nine's)", f"{pct(both['nine_accuracy'])} "
             f"({both['nine_slant']:.3f}, {both['base_nine_slant']:.3f})", "", ">= 85%, leaning right"]]
    if len(r.get("nine_seeds", {}).get("seeds", [])) > 1:
        k = r["nine_seeds"]
        nines, others = k["nine_accuracy"], k["other_digits_mean_accuracy"]
        rows.append([f"the nine fine-tuned with {len(nines)} seeds: judged 9, mean (lowest-highest); the digits 0-8, "
                     f"mean (lowest)", f"{pct(sum(nines) / len(nines))} ({pct(min(nines))}-{pct(max(nines))}); "
                     f"{pct(sum(others) / len(others))} ({pct(min(others))})", "", ">= 90%; within 2 points"])
    if "class_style" in r:
        c = r["class_style"]
        rows.append(["class-conditional run, slant adapter at 1: share of the lean (digits judged as asked)",
                     f"{pct(c['lean_share_of_training'])} ({pct(c['accuracy'])})", f"({pct(c['base_accuracy'])})",
                     "adapts too"])
    for which in ("nines", "slant"):
        run = r.get(f"finetune_{which}", {})
        if "quickstarts" in run:
            rows.append([f"`noisecraft finetune` ({which}), whole command", f"{run['wall_seconds']:.1f} s = "
                         f"{run['quickstarts']:.2f} quickstarts", f"quickstart {r['quickstart']['wall_seconds']:.1f} s",
                         "<= 0.5 quickstarts" if which == "nines" else ""])
    s = r["settings"]
    own = [f"{w}: {', '.join(s[f'{w}_overrides'])}" for w in ("nines", "slant") if s.get(f"{w}_overrides")]
    captions = "in the base's caption wordings" if s["nine_captions"] == "templates" else "\"a nine\""
    head = (f"`benchmarks/lora.py` on a `digits-text` base trained without nines, {r['n_per_digit']} samples a digit "
            f"and setting, the nines captioned {captions}, fine-tuning overrides "
            f"{'; '.join(s['finetune_overrides'] + own) or 'none'}; measured on {describe(r)}, 1 run; {files(name)}.")
    return head + "\n\n" + table(["measure", "with the adapter", "the base alone", "goal"], rows)


if __name__ == "__main__":
    main()
