"""Reading and writing benchmarks/results/: one JSON file a benchmark, or one JSONL record a variant."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1]
RESULTS = BENCHMARKS / "results"


def load(name: str):
    """benchmarks/results/NAME (a .json, or a .jsonl as a list of records)."""
    path = RESULTS / name
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text())


def write_result(result: dict, out_dir: str | Path, name: str) -> str:
    """Print `result` as strict JSON and write it to `out_dir/name.json`; returns the text."""
    from noisecraft.config import to_json

    text = to_json(result)
    print(text)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(text + "\n")
    return text


def append_record(path: str | Path, record: dict) -> None:
    """Append `record` as one line of the JSONL file `path`."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def loadavg() -> list[float]:
    """The 1, 5 and 15 minutes load average: others share these cores."""
    return [round(v, 2) for v in os.getloadavg()]


def commit() -> str | None:
    """The commit of the code measured (with "+dirty" when src/ differs from it)."""
    def git(*a):
        return subprocess.run(["git", *a], capture_output=True, text=True, cwd=BENCHMARKS, check=False).stdout.strip()
    head = git("rev-parse", "--short", "HEAD")
    return head and head + ("+dirty" if git("status", "--porcelain", "--", "../src") else "")


def json_from_child(code: str, *argv, env: dict | None = None) -> dict:
    """Run `code` in a fresh `python -c` with `argv` and `env` (default: this one's; a kernel cap set there holds
    for the child's kernels) and return the JSON its last line of output prints."""
    text = subprocess.run([sys.executable, "-c", code, *map(str, argv)], check=True, capture_output=True, text=True,
                          env=env).stdout
    return json.loads(text.strip().splitlines()[-1])
