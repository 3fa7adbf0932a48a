"""Issue 35's design goals, measured on the tree: read from the sources with `ast` (nothing imported, nothing timed),
so it gives the same answer on any machine and under any load.

    python benchmarks/design_goals.py [--out benchmarks/results]

Writes design_goals.json: the longest function in src/ and every one over 60 lines; `DiffusionTask`'s lines; the
longest file of src/noisecraft/config/; each preset's base presets (at most one, called once); the `sys.path` edits
in benchmarks/; import cycles (strongly connected components of the import graph) among src modules, at module level
and counting imports inside functions too, and among benchmarks modules; run-layout file names spelt outside
rundir.py; and branches on a conditioning kind or on latent-vs-pixel outside the parts that own them (conditioning/,
autoencoder/codec.py, registry.py). Each finding is listed with file:line.
"""
from __future__ import annotations

import argparse
import ast
from pathlib import Path

from common.results import BENCHMARKS, RESULTS, commit, write_result
from common.sources import SRC, benchmark_modules, cycles, import_graph, parse, src_modules, sys_path_edits

ROOT = BENCHMARKS.parent
PACKAGE = SRC / "noisecraft"
MAX_FUNCTION_LINES = 60
MAX_CONFIG_FILE_LINES = 300
MAX_TASK_LINES = 150
# The parts that own conditioning kinds and latent-vs-pixel (issue 35: conditioning/, autoencoder/codec.py, registry).
KIND_OWNERS = ("noisecraft/conditioning/", "noisecraft/autoencoder/codec.py", "noisecraft/registry.py")
KIND_STRINGS = {"text", "class", "unconditional", "latent", "pixel"}  # what a model is conditioned on, where it works
LATENT_NAMES = {"latent", "is_latent", "latents"}  # a branch testing one of these asks "latent or pixel?"
PROMPTISH = ("prompt", "caption", "cond", "label")  # isinstance(prompts, list): "are these prompts?"
# rundir.py's constants that name statuses, log kinds and figure stems, not files or folders
NOT_FILE_NAMES = {"RUN_STATES", "LOG_KINDS", "CHECKPOINT_NAMES", "RUN_FIGURES"}
# Names that are also another format's: listed apart, with what they are, and not counted.
FOREIGN = {("src/noisecraft/autoencoder/codec.py", "config.json"): "a diffusers AutoencoderKL folder's config",
           ("src/noisecraft/conditioning/text.py", "config.json"): "a Hugging Face model folder's config",
           ("src/noisecraft/evaluate/inception.py", "checkpoints"): "torch hub's cache of downloaded weights"}


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _functions_in(path: Path, node: ast.AST, prefix: str = "") -> list[dict]:
    out = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.append({"where": f"{_rel(path)}:{child.lineno}", "name": prefix + child.name,
                        "lines": child.end_lineno - child.lineno + 1})
            out += _functions_in(path, child, f"{prefix}{child.name}.")
        else:
            out += _functions_in(path, child, f"{prefix}{child.name}." if isinstance(child, ast.ClassDef) else prefix)
    return out


def functions(files: list[Path]) -> list[dict]:
    """Every function and method: where, qualified name, lines (def to last line, decorators left out)."""
    return [f for path in files for f in _functions_in(path, parse(path))]


def class_size(path: Path, name: str) -> dict:
    """Lines and methods of the class `name` in `path`."""
    cls = next(n for n in ast.walk(parse(path)) if isinstance(n, ast.ClassDef) and n.name == name)
    methods = [n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return {"where": f"{_rel(path)}:{cls.lineno}", "lines": cls.end_lineno - cls.lineno + 1, "methods": len(methods)}


def file_lines(folder: Path) -> list[dict]:
    return sorted(({"file": _rel(p), "lines": len(p.read_text().splitlines())} for p in folder.glob("*.py")),
                  key=lambda d: -d["lines"])


def preset_bases(path: Path) -> list[dict]:
    """Each preset (a function under a `@register("name", ...)`): the presets it calls and how often, and the length
    of its chain of bases (a preset built on one built on another: 2)."""
    tree = parse(path)
    presets = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            names = [d.args[0].value for d in node.decorator_list if isinstance(d, ast.Call)
                     and getattr(d.func, "id", "") == "register" and d.args and isinstance(d.args[0], ast.Constant)]
            if names:
                presets[node.name] = (names[0], node)
    calls = {fn: [c.func.id for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
                  and c.func.id in presets and c.func.id != fn] for fn, (_, node) in presets.items()}

    def chain(fn: str) -> int:
        return 1 + max(map(chain, calls[fn])) if calls[fn] else 0

    return [{"preset": name, "where": f"{_rel(path)}:{node.lineno}",
             "bases": ", ".join(presets[c][0] for c in calls[fn]), "base_calls": len(calls[fn]), "chain": chain(fn)}
            for fn, (name, node) in presets.items()]


# ---------------------------------------------------------------- the run layout


def layout_names() -> set[str]:
    """The file and folder names rundir.py defines as module-level constants (one owner of the layout)."""
    names = set()
    for node in parse(PACKAGE / "rundir.py").body:
        if not isinstance(node, ast.Assign):
            continue
        targets = [t for tgt in node.targets for t in (tgt.elts if isinstance(tgt, ast.Tuple) else [tgt])]
        if any(isinstance(t, ast.Name) and t.id in NOT_FILE_NAMES for t in targets):
            continue
        values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
        names |= {v.value for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str)}
    return names


def _string_parts(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    return []


def _docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _layout_hit(text: str, joined: bool, names: set[str]) -> str | None:
    """The layout name a code literal spells: a file name (`config.json`), a component of a path (`checkpoints/last`,
    the `/log.jsonl` of an f-string), or a folder name joined onto a path (`run / "samples"`). Literals with spaces
    are prose (messages, help), not names."""
    if not text or any(c.isspace() for c in text):
        return None
    if text in names and ("." in text or joined):
        return text
    return next((part for part in text.split("/") if part in names), None) if "/" in text else None


def layout_literals(files: list[Path]) -> tuple[list[dict], list[dict]]:
    """String literals outside rundir.py that spell a run-layout name (see `_layout_hit`; docstrings left out):
    those counted, and those that are another format's name (FOREIGN)."""
    names = layout_names()
    counted, foreign = [], []
    for path in files:
        if path.name == "rundir.py":
            continue
        tree = parse(path)
        docs, joined = _docstrings(tree), set()
        for node in ast.walk(tree):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                joined |= {id(side) for side in (node.left, node.right)}
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("joinpath", "with_name"):
                joined |= {id(a) for a in node.args}
        for node in ast.walk(tree):
            if id(node) in docs:
                continue
            hit = next((h for text in _string_parts(node) if (h := _layout_hit(text, id(node) in joined, names))),
                       None)
            if hit:
                row = {"where": f"{_rel(path)}:{node.lineno}", "name": hit}
                what = FOREIGN.get((_rel(path), hit))
                (foreign if what else counted).append({**row, "what": what} if what else row)
    return sorted(counted, key=_order), sorted(foreign, key=_order)


def _order(row: dict) -> tuple[str, int]:
    file, _, line = row["where"].rpartition(":")
    return file, int(line)


# ---------------------------------------------------------------- kind branches


def _names_in(node: ast.AST) -> set[str]:
    return {n.attr if isinstance(n, ast.Attribute) else n.id for n in ast.walk(node)
            if isinstance(n, (ast.Attribute, ast.Name))}


def _tests(tree: ast.Module) -> list[ast.AST]:
    """The conditions code branches on: if/elif/while/ternary/assert tests and comprehension filters."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.If, ast.IfExp, ast.While, ast.Assert)):
            out.append(node.test)
        elif isinstance(node, ast.comprehension):
            out += node.ifs
    return out


def _kind_branches_in(path: Path) -> list[dict]:
    tree, found = parse(path), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.ops[0], (ast.Eq, ast.NotEq, ast.In, ast.NotIn)):
            strings = {s for side in [node.left, *node.comparators] for c in ast.walk(side) for s in _string_parts(c)}
            if strings & KIND_STRINGS:
                found.setdefault(node.lineno, (node, "kind string"))
    for test in _tests(tree):
        if _names_in(test) & LATENT_NAMES:
            found.setdefault(test.lineno, (test, "latent or pixel"))
        for call in ast.walk(test):
            if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "isinstance" and len(call.args) == 2 \
                    and "list" in _names_in(call.args[1]) \
                    and any(w in name.lower() for name in _names_in(call.args[0]) for w in PROMPTISH):
                found.setdefault(call.lineno, (call, "prompts by type"))
    return [{"where": f"{_rel(path)}:{line}", "branch": why, "code": ast.unparse(node)[:80]}
            for line, (node, why) in found.items()]


def kind_branches(files: list[Path]) -> list[dict]:
    """Branches outside the parts on a conditioning kind or latent-vs-pixel: a comparison with a kind string
    (`== "text"`, `in ("class", ...)`), a condition testing a `latent` attribute or name, or an `isinstance(...,
    list)` on prompts, captions or labels."""
    rows = [r for path in files if not any(owner in path.as_posix() for owner in KIND_OWNERS)
            for r in _kind_branches_in(path)]
    return sorted(rows, key=_order)


# ---------------------------------------------------------------- the report


def measure() -> dict:
    mods, bench = src_modules(), benchmark_modules()
    src, bench_files = list(mods.values()), list(bench.values())
    funcs = functions(src)
    longest = max(funcs, key=lambda f: f["lines"])
    config_files = file_lines(PACKAGE / "config")
    task = class_size(PACKAGE / "train" / "diffusion.py", "DiffusionTask")
    result = {
        "what": "issue 35's design goals on the tree, read from the sources with ast (no timings)",
        "machine": "any: a static reading of the sources",
        "commit": commit(),
        "longest_function": longest,
        "functions_over_60_lines": sorted((f for f in funcs if f["lines"] > MAX_FUNCTION_LINES),
                                          key=lambda f: -f["lines"]),
        "diffusion_task": task,
        "longest_config_file": config_files[0],
        "presets": preset_bases(PACKAGE / "config" / "presets.py"),
        "sys_path_edits_in_benchmarks": sys_path_edits(bench_files),
        "import_cycles": {
            "src_module_level": cycles(import_graph(mods, module_level=True)),
            "src_with_imports_in_functions": cycles(import_graph(mods, module_level=False)),
            "benchmarks": cycles(import_graph(bench, module_level=False)),
        },
        "kind_branches_outside_the_parts": kind_branches(src),
    }
    result["run_layout_literals_outside_rundir"], result["other_formats_names"] = layout_literals(src)
    cyc = result["import_cycles"]
    result["goals"] = {
        "no_function_over_60_lines": not result["functions_over_60_lines"],
        "diffusion_task_under_150_lines": task["lines"] < MAX_TASK_LINES,
        "no_config_file_over_300_lines": config_files[0]["lines"] <= MAX_CONFIG_FILE_LINES,
        "every_preset_calls_at_most_one_preset_once": all(r["base_calls"] <= 1 for r in result["presets"]),
        "no_sys_path_edits_in_benchmarks": not result["sys_path_edits_in_benchmarks"],
        "no_import_cycle_src_module_level": not cyc["src_module_level"],
        "no_import_cycle_src_with_imports_in_functions": not cyc["src_with_imports_in_functions"],
        "no_import_cycle_benchmarks": not cyc["benchmarks"],
        "run_layout_literals_outside_rundir": len(result["run_layout_literals_outside_rundir"]),
        "kind_branches_outside_the_parts": len(result["kind_branches_outside_the_parts"]),
    }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(RESULTS), help="folder for design_goals.json")
    args = ap.parse_args()
    write_result(measure(), args.out, "design_goals")


if __name__ == "__main__":
    main()
