"""The rendered blocks of README.md and docs/: `<!-- NAME: begin -->` ... `<!-- NAME: end -->`, each holding what
a table of benchmarks/figures.py renders from the result files."""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from common.results import BENCHMARKS

ROOT = BENCHMARKS.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"<!-- (\w+): begin -->(.*?)<!-- \1: end -->", re.DOTALL)


def block(name: str) -> re.Pattern:
    return re.compile(rf"<!-- {name}: begin -->(.*?)<!-- {name}: end -->", re.DOTALL)


def blocks(text: str) -> list[tuple[str, str]]:
    """A page's rendered blocks, whatever their name: (name, what is between its begin and end markers, stripped)."""
    return [(m.group(1), m.group(2).strip()) for m in BLOCK.finditer(text)]


def pages() -> list[Path]:
    """README.md and every page of docs/ (any may hold `<!-- NAME: begin/end -->` blocks and figures in prose)."""
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def rewrite_blocks(render: Callable[[str], str], known) -> None:
    """Rewrite every block of every page with `render(name)`; a block whose name is not in `known` is an error."""
    for page in pages():
        text = page.read_text()
        for name, _ in blocks(text):
            if name not in known:
                raise SystemExit(f"{page}: no table renders the block {name!r} (one of {sorted(known)})")
            text = block(name).sub(lambda _, n=name: f"<!-- {n}: begin -->\n\n{render(n)}\n\n<!-- {n}: end -->",
                                   text)
        page.write_text(text)
