"""benchmarks/ is a leaf library (common/) and scripts: read from the sources with `ast`, nothing imported."""
import ast
from pathlib import Path

from common.sources import sys_path_edits

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = {p.stem for p in BENCHMARKS.glob("*.py")}
LIBRARY = sorted((BENCHMARKS / "common").glob("*.py"))


def _imported(path: Path) -> set[str]:
    """The top-level names of every module `path` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_nothing_in_benchmarks_touches_sys_path():
    edits = sys_path_edits([*BENCHMARKS.glob("*.py"), *LIBRARY])
    assert edits == []


def test_scripts_import_no_other_script_except_figures():
    crossing = {p.stem: sorted(_imported(p) & SCRIPTS - {p.stem}) for p in BENCHMARKS.glob("*.py")
                if p.stem != "figures"}
    assert {k: v for k, v in crossing.items() if v} == {}
    assert "common" in _imported(BENCHMARKS / "figures.py")


def test_common_imports_no_script():
    assert {p.name: sorted(_imported(p) & SCRIPTS) for p in LIBRARY if _imported(p) & SCRIPTS} == {}
    assert len(LIBRARY) >= 5
