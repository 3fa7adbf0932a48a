"""The documentation: every CLI flag and config field is documented (the reference pages are generated from
them), the pages' shell blocks marked runnable run as shown (on tiny settings), the notebook runs top to bottom,
and nothing in the README or the docs points outside the repository."""
import argparse
import json
import dataclasses
import os
import re
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
RUNNABLE = re.compile(r"<!-- runnable -->\s*\n```bash\n(.*?)```", re.S)


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
def test_runnable_blocks_run_as_shown(page, tmp_path):
    """Every block marked `<!-- runnable -->` on the page, in order, in one fresh directory, with `noisecraft` the
    CLI of this checkout; each command must exit 0."""
    lines = [_tiny(line.split("  #")[0].strip()) for block in runnable_blocks(DOCS / page)
             for line in block.replace("\\\n", " ").splitlines() if line.strip() and not line.startswith("#")]
    script = "set -euo pipefail\nnoisecraft() { \"$PYTHON\" -m noisecraft \"$@\"; }\n" + "\n".join(lines) + "\n"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{page}:\n{script}\n{r.stderr[-3000:]}"


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


def test_the_readmes_laptop_preset_figures_are_rendered_from_their_result_file():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from laptop_presets import RESULT, render

    result = json.loads(RESULT.read_text())
    assert render(result) in (ROOT / "README.md").read_text(), "run python benchmarks/laptop_presets.py --readme"
    assert [r["preset"] for r in result["rows"]] == ["digits64-ae", "digits64-latent", "digits64-text-latent",
                                                     "digits-text"]
