"""Every measured figure in the prose of README.md and docs/, found by one rule and traced to its result file.

A page's tables of figures are rendered from benchmarks/results/ (figures.py: `<!-- generated: NAME -->` in docs/,
`<!-- NAME: begin/end -->` blocks compared by tests/test_docs.py). What is left is prose, and in prose a number is
a **figure** (a measurement) when it is

* a number or a number word with a unit of time, size, speed, share, ratio or score: `%`, `x`/`×`/`times`, `s`,
  `ms`, `min`, `minutes`, `h`, `hours`, `dB`, `GB`, `MB`, `images/s`, `steps/s`, `points`, ... ("34.7 dB", "9.3x",
  "1.5 times", "five minutes", "a few minutes");
* a number after a metric's name: FD, FD-clf, FID, PSNR, SSIM, KID, IS, loss, accuracy, precision, recall, ΔE
  ("FD 3.98", "loss 0.0268");
* any number with a decimal point ("34.7", "0.05");

in running text, in `inline code` holding only a number (and a unit), or in math (`$...$`, `\\%` and `\\times`
read as `%` and `×`). Everything else is a **setting or a name**, not a measurement: numbers in fenced code blocks
(commands, config, file contents) and in inline code that holds a command, a flag, a `key=value` or a path; whole
numbers without a unit (step counts, batch sizes, seeds, sample counts, years, issue and list numbers, 64×64 shapes,
"4×4 patches" and other products `N×M`); numbers inside a name (AVX-512, CIFAR-10, DPM-Solver++(2M)).

Each figure the rule finds is either listed in FIGURES with the result file and key it comes from (the test reads
the file and compares: the number as shown is the file's value at the shown precision, a share in % from a
fraction; or a worded bound such as "under five minutes" holds for the value), or listed in NOT_MEASURED with why
it is not a measurement (a formula's constant, a setting in words, a licence's version). Nothing else may pass.

    python benchmarks/prose_figures.py     # every figure found, where it comes from, and the count
"""
from __future__ import annotations

import operator
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from common.pages import ROOT, pages
from common.results import load

WORDS = (r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|forty|fifty|"
         r"sixty|a hundred|a few|several|many")
UNIT = (r"%|x|×|times|-?fold|s|ms|sec|seconds?|min|mins|minutes?|h|hrs?|hours?|days?|dB|GB|MB|KB|GiB|MiB|"
        r"images/s|img/s|samples/s|steps/s|it/s|GFLOP/s|TFLOP/s|points?|pp|percent|percentage points?")
NUMBER = r"\d+(?:,\d{3})*(?:\.\d+)?"
METRIC = r"FD-clf|FD|FID|PSNR|SSIM|KID|IS|loss|accuracy|precision|recall|ΔE2000|ΔE"
FIGURE = re.compile(
    rf"(?<![\w.\-/^])(?:{NUMBER}(?:\s?[-–]\s?{NUMBER})?\s?|(?i:\b(?:{WORDS}))\s)(?:{UNIT})(?![\w/])(?!\s*\d)"
    rf"|\b(?:{METRIC})\b(?:\s(?:of|at|is|was|to|from))?\s?[=:~≈]?\s?{NUMBER}"
    rf"|(?<![\w.\-/])\d+\.\d+(?![\w.])")
CODE_SETTING = re.compile(r"--|=|/|[A-Za-z_]{2,}")  # inline code with a flag, a key=value, a path or a name


def _setting(code: str) -> bool:
    """Whether inline code is a setting (a command, flag, key=value, path or name), not a figure and its unit."""
    return bool(CODE_SETTING.search(re.sub(rf"(?<=[\d\s])(?:{UNIT})(?![\w/])", "", code)))


@dataclass(frozen=True)
class Figure:
    page: str  # README.md or docs/...
    text: str  # the phrase on the page that holds the figure, as written
    file: str  # benchmarks/results/FILE
    key: str  # dotted path into it; a number indexes a list, `field=value` picks the record with that field
    claim: str = "="  # "=": the shown number is the value at its precision; "<= N", ">= N", ...: the value's bound


@dataclass(frozen=True)
class NotMeasured:
    page: str
    text: str
    why: str


FIGURES = (
    Figure("README.md", "under five minutes on a 2-core CPU", "real_avx2.json", "rows.1.wall_s", "< 300"),
    Figure("docs/quickstart.md", "under five minutes on a 2-core CPU", "real_avx2.json", "rows.1.wall_s", "< 300"),
    Figure("docs/howto/edit.md", "within 1.5 times that of real digits", "editing.json",
           "inpaint_jumps.jumps=1.seam_ratio", "<= 1.5"),
    Figure("docs/howto/edit.md", "within 1.5 times that of real digits", "editing.json",
           "inpaint_jumps.jumps=0.seam_ratio", "> 1.5"),
    Figure("docs/howto/posthoc-ema.md", "whose sigma_rel is 0.09", "posthoc_ema.json", "fixed_ema.sigma_rel"),
    Figure("docs/howto/posthoc-ema.md", "the reconstruction at 0.09", "posthoc_ema.json",
           "best.class_accuracy.sigma_rel"),
    Figure("docs/howto/posthoc-ema.md", "take 0.05 for a slightly lower loss", "posthoc_ema.json",
           "best.val_loss.sigma_rel"),
    Figure("docs/concepts/network.md", "colour words 57.2%", "colour_search.jsonl", "name=base.quality.colour_unseen"),
    Figure("docs/concepts/network.md", "the shape asked 9.9%", "colour_search.jsonl", "name=base.quality.shape"),
    Figure("docs/howto/emoji.md", "drew the shape asked 48.1%", "colour_search.jsonl",
           "name=latent-base.quality.shape"),
    Figure("docs/howto/emoji.md", "against 9.9% and", "colour_search.jsonl", "name=base.quality.shape"),
    Figure("docs/howto/emoji.md", "the colour word 41.2%", "colour_search.jsonl",
           "name=latent-base.quality.colour_unseen"),
    Figure("docs/howto/emoji.md", "against\n57.2%", "colour_search.jsonl", "name=base.quality.colour_unseen"),
    Figure("docs/howto/distill.md", "drew 96.2%", "fewstep.json", "rows.5.accuracy"),
    Figure("docs/howto/distill.md", "judged right 95.8% of\n500", "real_avx2.json", "rows.2.quality"),
    Figure("docs/howto/distill.md", "(97.0% here", "fewstep.json", "rows.4.accuracy"),
    Figure("docs/howto/distill.md", "97.6% there", "real_avx2.json", "rows.2.quality"),
    Figure("docs/concepts/flow-transformers.md", "judged right 93.0%", "laptop_presets.json",
           "rows.preset=digits-dit.quality.ddim50_accuracy"),
    Figure("docs/concepts/flow-transformers.md", "judged\n>= 93%", "laptop_presets.json",
           "rows.preset=digits-dit.quality_goal"),
    Figure("docs/concepts/flow-transformers.md", "judged right 96.4%", "quickstart_native.json",
           "judge.dpmpp10.accuracy"),
    Figure("docs/concepts/flow-transformers.md", "to 97.6% each", "quickstart_avx2.json", "judge.ddim50.accuracy"),
    Figure("docs/concepts/flow-transformers.md", "judged right 91.0% of 400", "real_avx2.json", "rows.4.quality"),
)

NOT_MEASURED = (
    NotMeasured("docs/howto/grids.md", "1, 4, 7, 10; 0.5, 1, 1.5, 2", "the values a range form expands to"),
    NotMeasured("docs/concepts/lora.md", "scales 0, 0.5 and 1", "a setting: the adapter scales the figure draws"),
    NotMeasured("docs/howto/lora.md", "scales 0, 0.5 and 1", "a setting: the adapter scales the figure draws"),
    NotMeasured("docs/howto/prompt-syntax.md", "weighs 1.1 times as much", "the syntax's rule: ( ) multiplies by 1.1"),
    NotMeasured("docs/howto/prompt-syntax.md", "nested: 1.1 times 1.1", "the syntax's rule: ( ) multiplies by 1.1"),
    NotMeasured("docs/howto/prompt-syntax.md", "weighs 1.5 (any number", "the syntax's example weight"),
    NotMeasured("docs/howto/prompt-syntax.md", "weighs 1 / 1.1", "the syntax's rule: [ ] divides by 1.1"),
    NotMeasured("docs/howto/prompt-syntax.md", "`[A:B:0.5]`", "the syntax's example switch point"),
    NotMeasured("docs/concepts/metrics.md", "scores 100%", "the definition's example: one perfect 7 for every seed"),
    NotMeasured("docs/concepts/metrics.md", "right 99% of the time", "a hypothetical judge, in an argument"),
    NotMeasured("docs/howto/larger.md", "about 5× a 28×28 one", "arithmetic: 64² / 28² pixels"),
    NotMeasured("README.md", "CC BY-SA 4.0", "the licence's version"),
    NotMeasured("docs/howto/emoji.md", "CC BY-SA 4.0", "the licence's version"),
    NotMeasured("docs/concepts/flow-transformers.md", "2×2 patches four times as many",
                "arithmetic: (28/2)² tokens against (28/4)²"),
    NotMeasured("docs/concepts/flow-transformers.md", "MLPs four times the token width", "a setting: mlp_ratio 4"),
    NotMeasured("docs/howto/augment.md", "default EDM's 0.12", "a setting: the default augmentation probability"),
    NotMeasured("docs/howto/augment.md", "2^(0.2 w)", "a constant of EDM's augmentation (the formula)"),
    NotMeasured("docs/howto/augment.md", "trained four times as long", "a setting: 2000 steps against 500"),
    NotMeasured("docs/howto/edit.md", "strength 0.6", "a setting: the strength of the edit shown"),
    NotMeasured("docs/howto/edit.md", "strength 0.3", "a setting: the strength of the edit shown"),
    NotMeasured("docs/howto/edit.md", "Default 0.6", "a setting: the option's default"),
    NotMeasured("docs/howto/edit.md", "costs about 0.3 of", "arithmetic: strength × steps"),
    NotMeasured("docs/howto/emoji.md", "Four times the steps", "a setting: 6000 steps against 1500"),
    NotMeasured("docs/howto/own-data.md", "up to four times an epoch", "a setting: the resampling cap"),
    NotMeasured("docs/howto/posthoc-ema.md", "scored (default: 0.02 to 0.25)", "a setting: the sweep's default"),
    NotMeasured("docs/howto/distill.md", "at least 96% judged", "issue 25's goal for the two-step student"),
    NotMeasured("docs/howto/distill.md", "(93% at one)", "issue 25's goal for the one-step student"),
    NotMeasured("docs/howto/posthoc-ema.md", "stays below 0.995 until step 1791",
                "arithmetic: (1 + t) / (10 + t) < 0.995 for t < 1791"),
)


# ---------------------------------------------------------------- reading the pages


def _blank(m: re.Match) -> str:
    return re.sub(r"[^\n]", " ", m.group(0))  # keep offsets and lines, drop the content


def prose(text: str) -> str:
    """The page with what is not prose blanked out (same length, so offsets hold): rendered blocks and generated
    markers, fenced code, inline code that is a setting, link targets; math kept, `\\%` and `\\times` read as
    `%` and `×`."""
    text = re.sub(r"<!-- (\w+): begin -->.*?<!-- \1: end -->", _blank, text, flags=re.DOTALL)
    text = re.sub(r"<!-- generated: \w+ -->", _blank, text)
    text = re.sub(r"```.*?```", _blank, text, flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", lambda m: _blank(m) if _setting(m.group(0)) else m.group(0), text)
    text = re.sub(r"\]\([^)\s]*\)", _blank, text)
    text = text.replace("\\%", " %").replace("\\times", "×     ")
    return text


def found(page: Path) -> list[tuple[int, str]]:
    """(offset, match) of every figure the rule finds in the page's prose."""
    return [(m.start(), m.group(0)) for m in FIGURE.finditer(prose(page.read_text()))]


def _covering(page_rel: str, text: str, at: int, entries) -> list:
    """The entries of `page_rel` whose phrase occurs in `text` over offset `at`."""
    out = []
    for e in entries:
        if e.page != page_rel:
            continue
        for m in re.finditer(re.escape(e.text), text):
            if m.start() <= at < m.end():
                out.append(e)
    return out


# ---------------------------------------------------------------- comparing with the files


def value(file: str, key: str):
    d = load(file)
    for part in key.split("."):
        if "=" in part:
            field, want = part.split("=", 1)
            d = next(r for r in d if str(r.get(field)) == want)
        else:
            d = d[int(part)] if isinstance(d, list) else d[part]
    return d


OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def holds(f: Figure) -> bool:
    """Whether the phrase's figure is the file's value (at the shown precision) or its bound holds."""
    v = value(f.file, f.key)
    if isinstance(v, str):  # a file that states its figures in words: the phrase's figure is one of them
        return re.search(r"\d+(?:\.\d+)?%?", f.text).group(0) in v
    if f.claim != "=":
        op, bound = f.claim.split()
        return OPS[op](v, float(bound))
    shown = re.search(r"\d+(?:\.\d+)?(?=\s?%)|\d+\.\d+|\d+", f.text.replace(",", ""))
    digits = len(shown.group(0).split(".")[1]) if "." in shown.group(0) else 0
    if "%" in f.text[shown.end():shown.end() + 2] and abs(v) <= 1:
        v = 100 * v
    return f"{v:.{digits}f}" == shown.group(0)


def check() -> dict:
    """Every figure of every page, with what covers it; the unlisted, the wrong, and the entries found nowhere."""
    out = {"figures": [], "unlisted": [], "wrong": [], "unused": []}
    used = set()
    for page in pages():
        rel, text = page.relative_to(ROOT).as_posix(), prose(page.read_text())
        for at, fig in found(page):
            figs = _covering(rel, text, at, FIGURES)
            nots = _covering(rel, text, at, NOT_MEASURED)
            used.update(figs + nots)
            line = text.count("\n", 0, at) + 1
            out["figures"].append((rel, line, fig, [f"{f.file}: {f.key} {f.claim}" for f in figs]
                                   or [f"not measured: {n.why}" for n in nots]))
            if not figs and not nots:
                out["unlisted"].append(f"{rel}:{line}: {fig}")
            out["wrong"] += [f"{rel}:{line}: {f.text!r} against {f.file} {f.key} = {value(f.file, f.key)!r}"
                             for f in figs if not holds(f)]
    out["unused"] = [e for e in FIGURES + NOT_MEASURED if e not in used]
    return out


def main() -> None:
    r = check()
    for rel, line, fig, what in r["figures"]:
        print(f"{rel}:{line}: {fig!r} <- {'; '.join(what) or 'NOT LISTED'}")
    listed = sum(1 for *_, what in r["figures"] if what and not what[0].startswith("not measured"))
    print(f"{len(r['figures'])} figures in prose: {listed} traced to a result file, "
          f"{len(r['figures']) - listed - len(r['unlisted'])} not measurements, {len(r['unlisted'])} unlisted, "
          f"{len(r['wrong'])} differing from their file, {len(r['unused'])} entries matching nothing")
    sys.exit(1 if r["unlisted"] or r["wrong"] or r["unused"] else 0)


if __name__ == "__main__":
    main()
