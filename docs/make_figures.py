"""Make every picture of the documentation from real runs, so the pages stay true when the code changes.

    python docs/make_figures.py                  # trains small runs under runs/docs/, writes docs/figures/
    python docs/make_figures.py --steps 40 --text-steps 0 --latent-steps 0 --flow-steps 40 --figures /tmp/f  # smoke
    python docs/make_figures.py --only flow      # only the flow and transformer page's figures
    python docs/make_figures.py --only quickstart   # only the digits run's own figures and its explain figures
    python docs/make_figures.py --only grid      # only the comparison grid of the grids how-to
    python docs/make_figures.py --only text      # only the digits-text run's figures (cross-attention, prompts)

It trains the quickstart's `digits` preset (minutes on a CPU), with the text extra installed the `digits-text`
preset, and a latent pair: `digits64-ae` (the autoencoder) then `digits64-latent` in its latent space, both for
fewer steps than their presets; `digits-v` and `digits-dit` for the flow and transformer page; copies the
figures training writes (loss curve, sample grid, forward and reverse
process); draws samples as `noisecraft sample` does; and runs `noisecraft explain` on every run.
`docs/figures/figures.json` records what made them: the runs' configs, steps, noisecraft's version, the CPU and
the wall time. A run directory that already holds a finished run is reused (--retrain to train again).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # document this checkout's code
sys.path.insert(0, str(ROOT / "benchmarks"))  # common.machine: what every result records about the CPU

from noisecraft import __version__
from common.machine import cpu_info
from noisecraft.config import apply_overrides, preset

RUN_FIGURES = {"loss.png": "loss.png", "samples/final.png": "samples_final.png",
               "forward_process.png": "forward_process.png", "reverse_process.png": "reverse_process.png"}


def train_run(name: str, steps: int | None, out: Path, retrain: bool, **overrides) -> dict:
    """Train preset `name` (with config `overrides`) for `steps` steps (None: the preset's) into `out`, unless a
    finished run of those steps is there; returns what its status.json says about it."""
    from datetime import datetime

    from noisecraft.train import train

    status = out / "status.json"
    done = status.is_file() and json.loads(status.read_text()).get("state") == "finished"
    cfg = apply_overrides(preset(name), {"train.steps": steps or preset(name).train.steps, **overrides})
    steps = cfg.train.steps
    if retrain or not done or json.loads((out / "config.json").read_text())["train"]["steps"] != steps:
        train(cfg, out, overwrite=True, progress=False)
    st = json.loads(status.read_text())
    wall = datetime.fromisoformat(st["updated"]) - datetime.fromisoformat(st["started"])
    return {"preset": name, "steps": steps, "train_wall_s": round(wall.total_seconds(), 1),
            "images_per_s": round(st.get("images_per_s", 0.0), 1), "trained": st["started"][:10]}


def quickstart_figures(run: Path, out: Path) -> None:
    """The files training wrote, and a `noisecraft sample --class 7`-style grid."""
    from noisecraft.pipeline import load_pipeline
    from noisecraft.viz import save_grid

    out.mkdir(parents=True, exist_ok=True)
    for src, dst in RUN_FIGURES.items():
        shutil.copy(run / src, out / dst)
    pipe = load_pipeline(run)
    save_grid(pipe.generate(n=16, class_index=7, seed=0), out / "sample_seven.png", nrow=8)


def digits_figures(args, run: Path, figures: Path) -> None:
    """The quickstart run's own figures (its training files, a sample grid) and every `explain` figure of it."""
    from noisecraft.explain import ExplainOptions, explain

    quickstart_figures(run, figures / "quickstart")
    explain(run, figures / "explain", ExplainOptions(n=3, steps=args.explain_steps))


def editing_figures(run: Path, out: Path) -> dict:
    """The editing how-to's pictures, made by the commands it shows (`noisecraft edit` on a held-out digit saved
    as a PNG), the `explain` editing figure, and the strength curve of benchmarks/results/editing.json."""
    from editing import draw_curve

    from noisecraft.cli import main as cli
    from noisecraft.data import load_dataset
    from noisecraft.explain import ExplainOptions, explain
    from noisecraft.pipeline import load_pipeline
    from noisecraft.viz import to_pil

    out.mkdir(parents=True, exist_ok=True)
    val = load_dataset(load_pipeline(run, "cpu").config.data, "val")
    to_pil(val.images[0]).save(out / "digit.png")  # held out: never trained on
    commands = {"img2img": ["--strength", "0.6", "--class", "3"], "inpaint": ["--mask-half", "bottom", "--class", "7"],
                "variations": ["--strength", "0.3", "--n", "8"]}
    for name, flags in commands.items():
        argv = ["edit", "--checkpoint", str(run), "--image", str(out / "digit.png"), "--out", str(out / name),
                "--device", "cpu", *flags]
        assert cli(argv) == 0, argv
        shutil.copy(out / name / "before_after.png", out / f"{name}.png")
        shutil.rmtree(out / name)
    explain(run, out, ExplainOptions(figures=("editing",)))
    draw_curve(out=out / "strength_curve.png")
    return {name: " ".join(["noisecraft edit --checkpoint RUN --image digit.png", *flags])
            for name, flags in commands.items()}


GRID_COMMAND = ["--x", "steps=5,10,20", "--y", "guidance=0-3 [4]", "--class", "3", "--n", "16"]


def grid_figures(run: Path, out: Path) -> dict:
    """The grids how-to's picture: the command it shows (`noisecraft grid`, a 3x4 grid of 16 images a cell)."""
    from noisecraft.cli import main as cli

    out.mkdir(parents=True, exist_ok=True)
    argv = ["grid", "--checkpoint", str(run), *GRID_COMMAND, "--device", "cpu", "--out", str(out / "steps_guidance")]
    assert cli(argv) == 0, argv
    shutil.copy(out / "steps_guidance" / "grid.png", out / "steps_guidance.png")
    shutil.rmtree(out / "steps_guidance")
    return {"steps_guidance": " ".join(["noisecraft grid --checkpoint RUN", *GRID_COMMAND])}


def flow_figures(args, runs: Path, out: Path) -> dict:
    """The flow and transformer page's figures: the sampling paths of a digits-v run (diffusion) beside those of the
    digits run (rectified flow, the quickstart) from the same noise, and a digits-dit run's network diagram and
    samples."""
    from noisecraft.explain import ExplainOptions, explain

    record = {}
    for name in ("digits-v", "digits-dit"):
        record[name] = train_run(name, args.flow_steps, runs / name, args.retrain)
    for name, run in (("diffusion", runs / "digits-v"), ("flow", runs / "digits")):
        explain(run, out / name, ExplainOptions(figures=("trajectories",), n=3, steps=args.explain_steps))
    explain(runs / "digits-dit", out / "dit", ExplainOptions(figures=("dit", "reverse"), n=3, steps=args.explain_steps))
    shutil.copy(runs / "digits-dit" / "samples" / "final.png", out / "dit" / "samples_final.png")
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=None, help="training steps of the digits run (default: the preset's)")
    p.add_argument("--text-steps", type=int, default=None, help="training steps of the digits-text run (default: "
                   "the preset's); 0: skip it")
    p.add_argument("--ae-steps", type=int, default=600, help="training steps of the digits64-ae autoencoder")
    p.add_argument("--latent-steps", type=int, default=500, help="training steps of digits64-latent; 0: skip both")
    p.add_argument("--flow-steps", type=int, default=None, help="steps of the digits-v and digits-dit runs "
                   "(default: their presets')")
    p.add_argument("--runs", default=str(ROOT / "runs" / "docs"), help="where the runs are trained")
    p.add_argument("--figures", default=str(ROOT / "docs" / "figures"), help="where the figures go")
    p.add_argument("--explain-steps", type=int, default=50, help="sampler steps of the explain figures")
    p.add_argument("--retrain", action="store_true", help="train again even if the runs are there")
    p.add_argument("--only", choices=["quickstart", "editing", "grid", "flow", "text"],
                   help="redraw one group of figures from its "
                   "runs (trained if missing), keeping figures.json's other records")
    args = p.parse_args(argv)
    if args.only:
        return only(args)

    runs, figures, start = Path(args.runs), Path(args.figures), time.perf_counter()
    import torch

    record = {"noisecraft": __version__, "cpu": cpu_info()["cpu"], "torch_threads": torch.get_num_threads(),
              "runs": {}}
    record["runs"]["digits"] = train_run("digits", args.steps, runs / "digits", args.retrain)
    digits_figures(args, runs / "digits", figures)
    if args.text_steps != 0:
        record["runs"].update(text_figures(args, runs, figures))
    if args.latent_steps > 0:
        record["runs"].update(latent_figures(args, runs, figures))
    record["editing"] = editing_figures(runs / "digits", figures / "editing")
    record["grid"] = grid_figures(runs / "digits", figures / "grid")
    record["runs"].update(flow_figures(args, runs, figures / "flow"))
    record["wall_s"] = round(time.perf_counter() - start, 1)
    (figures / "figures.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


def text_figures(args, runs: Path, figures: Path) -> dict:
    """The `digits-text` run's figures (cross-attention and guidance, prompt editing); returns its record."""
    from noisecraft.explain import ExplainOptions, explain

    record = train_run("digits-text", args.text_steps, runs / "digits-text", args.retrain)
    explain(runs / "digits-text", figures / "text", ExplainOptions(
        figures=("cross-attention", "guidance"), n=3, steps=args.explain_steps,
        prompts=["a bold seven leaning to the right", "a thin two", "a small three"]))
    explain(runs / "digits-text", figures / "prompts", ExplainOptions(figures=("prompt-editing",),
                                                                     prompts=["a three", "a seven"]))
    return {"digits-text": record}


def latent_figures(args, runs: Path, figures: Path) -> dict:
    """The latent pair's figures: the autoencoder first, then diffusion in its latent space; returns their records."""
    from noisecraft.explain import ExplainOptions, explain

    ae, ldm = runs / "digits64-ae", runs / "digits64-latent"
    record = {"digits64-ae": train_run("digits64-ae", args.ae_steps, ae, args.retrain),
              "digits64-latent": train_run("digits64-latent", args.latent_steps, ldm, args.retrain,
                                           **{"autoencoder.path": str(ae)})}
    explain(ldm, figures / "latent", ExplainOptions(figures=("latents", "reverse"), n=3, steps=args.explain_steps))
    return record


def only(args) -> int:
    """`--only quickstart | editing | grid | flow | text`: one group of figures, with the digits run it starts
    from (text: the `digits-text` run alone)."""
    runs, figures = Path(args.runs), Path(args.figures)
    index = figures / "figures.json"
    record = json.loads(index.read_text()) if index.is_file() else {"runs": {}}
    if args.only == "text":
        record["runs"].update(text_figures(args, runs, figures))
    else:
        record["runs"]["digits"] = train_run("digits", args.steps, runs / "digits", args.retrain)
    if args.only == "quickstart":
        digits_figures(args, runs / "digits", figures)
    elif args.only == "editing":
        record["editing"] = editing_figures(runs / "digits", figures / "editing")
    elif args.only == "grid":
        record["grid"] = grid_figures(runs / "digits", figures / "grid")
    elif args.only == "flow":
        record["runs"].update(flow_figures(args, runs, figures / "flow"))
    index.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
