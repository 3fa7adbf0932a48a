"""The documentation: every CLI flag and config field is documented (the reference pages are generated from
them), the pages' shell blocks marked runnable run as shown (on tiny settings), the notebook runs top to bottom,
and nothing in the README or the docs points outside the repository."""
import argparse
import dataclasses
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import TINY
from noisecraft import config
from noisecraft.cli import make_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RUNNABLE = re.compile(r"<!-- runnable -->\s*\n```bash\n(.*?)```", re.DOTALL)


def test_every_cli_command_and_flag_has_help():
    sub = next(a for a in make_parser()._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    missing = [name for name in sub.choices if not (helps.get(name) or "").strip()]
    for name, p in sub.choices.items():
        missing += [f"{name} {a.option_strings or a.dest}" for a in p._actions
                    if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert missing == []


def test_every_config_field_is_documented():
    undocumented = []
    for name, cls in _hooks().config_sections():  # the sections the reference page documents
        docs = config.field_docs(cls)
        undocumented += [f"{name}.{f.name}" for f in dataclasses.fields(cls) if not docs.get(f.name)]
    assert undocumented == []


@dataclass
class _Documented:
    plain: int = 1  # a trailing comment
    # a comment above,
    # on two lines
    above: str = "#not a comment"
    both: float = 0.5  # and one after

    undocumented: bool = False


def test_field_docs_reads_the_comments_above_and_after_a_field():
    assert config.field_docs(_Documented) == {"plain": "a trailing comment", "above": "a comment above, on two lines",
                                              "both": "and one after", "undocumented": ""}


def _tiny(line: str) -> str:
    """A documented command on tiny settings: few steps, a narrow network, few images (a training still draws the
    figures a reader's draws when it ends)."""
    line = re.sub(r"--steps \d+", "--steps 4" if "--resume" in line else "--steps 2", line)
    line = re.sub(r"--n \d+", "--n 10", line)
    if line.startswith("noisecraft train") and "--resume" not in line:
        line += " --steps 2 --no-progress " + " ".join(TINY) + " --train.num_threads=1 --train.final_figures=true"
    elif line.startswith("noisecraft distill") and "--resume" not in line:
        line += " --steps 2 --no-progress --train.num_threads=1"
    elif line.startswith(("noisecraft sample", "noisecraft evaluate", "noisecraft explain")):
        line += " --steps 2"
    return line


def runnable_blocks(page: Path) -> list[str]:
    return [m.group(1) for m in RUNNABLE.finditer(page.read_text())]


PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if runnable_blocks(p))


def test_pages_have_runnable_blocks():
    assert "quickstart.md" in PAGES and len(PAGES) >= 3


SLOW_PAGE = pytest.mark.slow(reason="a page's whole walk-through; the quickstart's runs in the default suite")


@pytest.mark.parametrize("page", [pytest.param(p, marks=() if p == "quickstart.md" else SLOW_PAGE) for p in PAGES])
def test_runnable_blocks_run_as_shown(page, tmp_path, monkeypatch):
    """Every block marked `<!-- runnable -->` on the page, in order, in one fresh directory, with `noisecraft` the
    CLI of this checkout; each command must exit 0. Pages of plain `noisecraft` commands run them in this process
    (the CLI's `main`, as the entry point calls it), saving a Python and torch start per command; others run in
    bash."""
    lines = [_tiny(line.split("  #")[0].strip()) for block in runnable_blocks(DOCS / page)
             for line in block.replace("\\\n", " ").splitlines() if line.strip() and not line.startswith("#")]
    commands = _plain_commands(lines)
    if commands is not None:
        from noisecraft.cli import main

        monkeypatch.chdir(tmp_path)
        for argv in commands:
            assert main(argv) == 0, f"{page}: noisecraft {shlex.join(argv)}"
        return
    script = "set -euo pipefail\nnoisecraft() { \"$PYTHON\" -m noisecraft \"$@\"; }\n" + "\n".join(lines) + "\n"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{page}:\n{script}\n{r.stderr[-3000:]}"


def _plain_commands(lines: list[str]) -> list[list[str]] | None:
    """Each line's arguments after `noisecraft`, when every line is a `noisecraft` command with no shell syntax."""
    if any(re.search(r"[|&;<>$`()*?~]", line) for line in lines):
        return None
    argvs = [shlex.split(line) for line in lines]
    return [a[1:] for a in argvs] if all(a and a[0] == "noisecraft" for a in argvs) else None


def test_notebook_runs_top_to_bottom(tmp_path):
    """examples/quickstart.ipynb, every cell in order, through pytest's nbmake plugin in a child pytest (so the
    kernel gets the tiny settings and this checkout's code from its environment)."""
    pytest.importorskip("nbmake")
    env = {**os.environ, "NOISECRAFT_NOTEBOOK_TINY": "1", "NOISECRAFT_NOTEBOOK_RUN": str(tmp_path / "run"),
           "OMP_NUM_THREADS": "1",  # one thread, as the suite's own processes: its cores run other tests
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "--rootdir",
           str(tmp_path), "--nbmake", "--nbmake-timeout=300", str(ROOT / "examples" / "quickstart.ipynb")]
    result = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert (tmp_path / "run" / "eval" / "report.json").is_file()
    assert (tmp_path / "run" / "explain" / "unet.png").is_file()


LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_links_stay_inside_the_repository():
    """README and docs link only to files of the repository (which exist), never to a URL or a path outside."""
    bad = []
    for page in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        for target in LINK.findall(page.read_text()):
            path = target.split("#")[0]
            if re.match(r"[a-z]+:", target) or (path and not (page.parent / path).resolve().is_relative_to(ROOT)):
                bad.append(f"{page.relative_to(ROOT)}: {target}")
            elif path and not (page.parent / path).exists():
                bad.append(f"{page.relative_to(ROOT)}: {target} (missing)")
    assert bad == []


def _figures():
    import figures  # benchmarks/ is on the path (pytest's pythonpath setting), as for `python benchmarks/X.py`

    return figures


def test_every_rendered_block_is_what_its_result_files_render():
    """Every `<!-- NAME: begin -->` ... `<!-- NAME: end -->` block of README.md and docs/ names a table of
    benchmarks/figures.py and holds what it makes of the result files today: a figure that differs from its file (or
    a file that changed under it) fails here, and so does a block of an unknown name."""
    from common.pages import blocks, pages

    figures = _figures()
    compared, stale = 0, []
    for page in pages():
        for name, body in blocks(page.read_text()):
            assert name in figures.TABLES, f"{page.relative_to(ROOT)}: no table renders the block {name!r}"
            compared += 1
            stale += [f"{page.relative_to(ROOT)}: {name}"] * (body != figures.render(name).strip())
    assert compared >= len(figures.README_BLOCKS)
    assert stale == [], f"run python benchmarks/figures.py --readme ({stale} differ from their result files)"


def test_real_avx2_is_the_copied_measurement_unedited():
    """benchmarks/results/real_avx2.json (measured on a real AVX2 CPU, not by a script here) is byte for byte the
    file its README line names, by the sha256 recorded there."""
    import hashlib

    results = ROOT / "benchmarks" / "results"
    recorded = re.search(r"`real_avx2\.json`.*?sha256\s+`([0-9a-f]{64})`", (results / "README.md").read_text(),
                         re.DOTALL).group(1)
    assert hashlib.sha256((results / "real_avx2.json").read_bytes()).hexdigest() == recorded


def test_every_rendered_row_names_its_machine_and_an_existing_file():
    figures = _figures()
    for name in figures.TABLES:
        if name == "patch_speedup":  # an inline ratio in prose, not a table
            continue
        rows = [line for line in figures.render(name).splitlines()
                if line.startswith("| ") and not line.startswith(("| what", "| command", "| ---"))]
        assert rows, name
        for cited in re.findall(r"`([\w.]+\.jsonl?)`", figures.render(name)):
            assert (ROOT / "benchmarks" / "results" / cited).is_file(), (name, cited)
        if name in ("laptop_presets", "latent_vs_pixel", "editing", "editing_matrix", "fewstep",
                    "posthoc_ema", "recipes_compare", "prompt_syntax", "lora"):  # one machine for the whole table
            assert "Measured by" in figures.render(name) or re.search(r"on (AMD|Intel)", figures.render(name)), name
            continue
        for row in rows:
            assert row.count(".json") >= 1 and re.search(r"thread|cores", row) and re.search(r"fp32|bf16|precision",
                                                                                             row), (name, row)


def _prose_figures():
    import prose_figures

    return prose_figures


@pytest.mark.parametrize("text, figures", [
    ("FD 3.98 and loss 0.032, PSNR 34.7, 1.5 times, five minutes, 2 hours, 3 h, 4 GB, 12 steps/s, 3 points",
     ["FD 3.98", "loss 0.032", "PSNR 34.7", "1.5 times", "five minutes", "2 hours", "3 h", "4 GB", "12 steps/s",
      "3 points"]),
    ("in words: a few minutes, several times; `34.7 dB` and `0.91`; $95\\%$; judged 93.0% (sigma 0.05)",
     ["a few minutes", "several times", "34.7 dB", "0.91", "95 %", "93.0%", "0.05"]),
    ("settings: `--steps 500 --lr 2e-3`, `train.posthoc_ema=0.05`, 650 steps of 32, 64×64, $3 \\times 3$, "
     "AVX-512, CIFAR-10, Song et al. 2023, issue 22, 1. **Patches**, the real ones\n```bash\nsleep 0.5\n```", []),
])
def test_the_figure_rule_sees_measurements_and_passes_settings(text, figures):
    pf = _prose_figures()
    assert [m.group(0) for m in pf.FIGURE.finditer(pf.prose(text))] == figures


def test_every_figure_in_prose_is_traced_to_its_result_file():
    """Outside the rendered tables, every figure of README.md and docs/ (by the rule of benchmarks/prose_figures.py)
    is listed there with its result file and key, and holds against the file, or is listed as not a measurement
    with why; the lists hold no entry that matches nothing."""
    r = _prose_figures().check()
    print(f"{len(r['figures'])} figures in the prose of README.md and docs/, each traced or explained")
    assert r["unlisted"] == [], "render these from benchmarks/results/ or list them in benchmarks/prose_figures.py"
    assert r["wrong"] == []
    assert r["unused"] == []


def test_the_sampling_page_counts_the_guided_steps_of_the_digits_preset_on_its_grid():
    """docs/concepts/sampling.md says how many steps the `digits` preset's guidance interval covers: counted here
    on the sigma grid its sampler walks (the flow's), for 50 DDIM steps and the preset's own."""
    import torch

    from noisecraft.config import preset
    from noisecraft.diffusion.denoiser import Denoiser
    from noisecraft.samplers import get_sigmas

    cfg = preset("digits")
    den = Denoiser(torch.nn.Identity(), cfg.diffusion)
    lo, hi = cfg.sample.guidance_interval

    def guided(sampler: str, steps: int) -> int:
        levels = get_sigmas(den, sampler, steps)[:-1]
        return int(((levels > lo) & (levels <= hi)).sum())

    text = " ".join((DOCS / "concepts" / "sampling.md").read_text().split())
    ddim, own, own_steps = map(int, re.search(r"(\d+) of 50 DDIM steps; (\d+) of the preset's own (\d+)", text).groups())
    assert own_steps == cfg.sample.steps
    assert (ddim, own) == (guided("ddim", 50), guided(cfg.sample.sampler, cfg.sample.steps))


def _hooks():
    sys.path.insert(0, str(DOCS))
    import hooks

    return hooks


def test_every_generated_marker_has_a_generator():
    hooks = _hooks()
    markers = {m for page in DOCS.rglob("*.md") for m in re.findall(r"<!-- generated: (\w+) -->", page.read_text())}
    assert markers and markers <= set(hooks.GENERATORS)
    assert set(_figures().TABLES) <= set(hooks.GENERATORS)
