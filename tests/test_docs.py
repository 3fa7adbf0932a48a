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
    for section in dataclasses.fields(config.Config):
        cls = getattr(config, section.type) if isinstance(section.type, str) else section.type
        docs = config.field_docs(cls)
        undocumented += [f"{section.name}.{f.name}" for f in dataclasses.fields(cls) if not docs.get(f.name)]
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
    """A documented command on tiny settings: few steps, a narrow network, few images."""
    line = re.sub(r"--steps \d+", "--steps 4" if "--resume" in line else "--steps 2", line)
    line = re.sub(r"--n \d+", "--n 10", line)
    if line.startswith("noisecraft train") and "--resume" not in line:
        line += " --steps 2 --no-progress " + " ".join(TINY) + " --train.num_threads=1"
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


@pytest.mark.parametrize("page", [pytest.param(p, marks=() if p == "quickstart.md" else pytest.mark.slow)
                                  for p in PAGES])
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
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import figures

    return figures


def test_the_readmes_figures_are_rendered_from_their_result_files():
    """Every rendered block of the README is what benchmarks/figures.py makes of the result files today: a figure
    that differs from its file (or a file that changed under it) fails here."""
    figures = _figures()
    blocks = figures.readme_blocks((ROOT / "README.md").read_text())
    assert sorted(blocks) == sorted(figures.README_BLOCKS)
    stale = [name for name in figures.README_BLOCKS if blocks[name] != figures.render(name).strip()]
    assert stale == [], f"run python benchmarks/figures.py --readme ({stale} differ from their result files)"


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
                    "posthoc_ema", "recipes_compare"):  # one machine for the whole table
            assert "Measured by" in figures.render(name) or re.search(r"on (AMD|Intel)", figures.render(name)), name
            continue
        for row in rows:
            assert row.count(".json") >= 1 and re.search(r"thread|cores", row) and re.search(r"fp32|bf16|precision",
                                                                                             row), (name, row)


# A measured figure: a number with a unit of time, speed, share or ratio.
FIGURE = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?:\s?[-–]\s?\d+(?:\.\d+)?)?\s?"
                    r"(?:s|ms|min|minutes?|seconds?|%|x|×|dB|images/s|img/s|samples/s|GFLOP/s)(?![\w/])")
# Numbers with units that are not measurements, each with why.
NOT_MEASURED = {
    ("docs/concepts/metrics.md", "100%"): "the definition's example: a model that draws one perfect 7 scores 100%",
    ("docs/concepts/metrics.md", "99%"): "a hypothetical judge's accuracy, in an argument about resolution",
    ("docs/howto/larger.md", "5×"): "arithmetic: 64² / 28² pixels",
}


def _prose(text: str) -> str:
    """A page without what is rendered from result files (README blocks, generated markers), is code, or is math
    ($...$, $$...$$: a formula's numbers are not measurements)."""
    text = re.sub(r"<!-- (\w+): begin -->.*?<!-- \1: end -->", "", text, flags=re.DOTALL)
    text = re.sub(r"<!-- generated: \w+ -->", "", text)
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    text = re.sub(r"\$\$.*?\$\$", "", text, flags=re.DOTALL)
    return re.sub(r"\$(?!\s)[^$\n]+?(?<!\s)\$", "", text)  # arithmatex's rule: no space inside the dollars


def test_prose_leaves_out_code_and_math_but_not_figures():
    page = "took 5 s; `sleep 2s`; $\\sigma = 2 s$ and\n$$\nc = 1000 x\n$$\nat 3% (`$HOME` costs 4 s)"
    assert [m.group(0) for m in FIGURE.finditer(_prose(page))] == ["5 s", "3%", "4 s"]


def test_no_figure_in_readme_or_docs_is_typed_by_hand():
    """Outside the blocks rendered from benchmarks/results/, README.md and docs/ hold no measured figure: every
    number with a unit there is rendered from its file at build time (docs) or by figures.py --readme (README),
    or is listed above as not a measurement."""
    found = []
    for page in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        rel = page.relative_to(ROOT).as_posix()
        found += [(rel, m.group(0)) for m in FIGURE.finditer(_prose(page.read_text()))]
    assert [f for f in found if f not in NOT_MEASURED] == [], "render these from benchmarks/results/ (figures.py)"
    assert sorted(set(found)) == sorted(NOT_MEASURED)  # the list holds nothing stale


def test_every_generated_marker_has_a_generator():
    sys.path.insert(0, str(DOCS))
    import hooks

    markers = {m for page in DOCS.rglob("*.md") for m in re.findall(r"<!-- generated: (\w+) -->", page.read_text())}
    assert markers and markers <= set(hooks.GENERATORS)
    assert set(_figures().TABLES) <= set(hooks.GENERATORS)
