"""Prompt syntax (issue 37): A1111's own test prompts (the doctests of its modules/prompt_parser.py), the inputs it
refuses with their column, how a `StepConditions` picks each step's condition and how guidance resolves it, for
every sampler. The weights on a real encoder and the pipeline runs are in test_text.py."""
from __future__ import annotations

import re

import pytest
import torch

from noisecraft.conditioning.prompt_syntax import (PromptSyntaxError, final_words, has_syntax, is_scheduled, literal,
                                                   prompt_schedule, weighted_chunks)
from noisecraft.registry import SAMPLERS
from noisecraft.samplers import cfg_denoiser, get_sampler, karras_sigmas
from noisecraft.samplers.common import StepConditions, at_level

# A1111's get_learned_conditioning_prompt_schedules doctests, 10 steps: prompt -> [[end step, prompt], ...]
A1111_SCHEDULES = {
    "test": [[10, "test"]],
    "a [b:3]": [[3, "a "], [10, "a b"]],
    "a [b: 3]": [[3, "a "], [10, "a b"]],
    "a [[[b]]:2]": [[2, "a "], [10, "a [[b]]"]],
    "[(a:2):3]": [[3, ""], [10, "(a:2)"]],
    "a [b : c : 1] d": [[1, "a b  d"], [10, "a  c  d"]],
    "a[b:[c:d:2]:1]e": [[1, "abe"], [2, "ace"], [10, "ade"]],
    "a [b:.5] c": [[5, "a  c"], [10, "a b c"]],
    "a [{b|d{:.5] c": [[5, "a  c"], [10, "a {b|d{ c"]],
    "[a|(b:1.1)]": [[k, "a" if k % 2 else "(b:1.1)"] for k in range(1, 11)],
}
# A1111's parse_prompt_attention doctests: prompt -> [[text, weight], ...]
A1111_ATTENTION = {
    "normal text": [["normal text", 1.0]],
    "an (important) word": [["an ", 1.0], ["important", 1.1], [" word", 1.0]],
    "\\(literal\\]": [["(literal]", 1.0]],
    "(unnecessary)(parens)": [["unnecessaryparens", 1.1]],
}
# A1111 reads these unbalanced doctest prompts anyway (an open bracket closes at the end, a stray one is text);
# strict parsing refuses each at the column of the bracket at fault
A1111_UNBALANCED = {
    "a [unbalanced": (3, "'[' is never closed"),
    "((a][:b:c [d:3]": (4, "']' closes no bracket"),
    "(unbalanced": (1, "'(' is never closed"),
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).": (3, "'(' is never closed"),
}


@pytest.mark.parametrize("prompt", A1111_SCHEDULES)
def test_schedules_of_a1111_doctest_prompts(prompt):
    assert [list(e) for e in prompt_schedule(prompt, 10)] == A1111_SCHEDULES[prompt]


@pytest.mark.parametrize("prompt", A1111_ATTENTION)
def test_weights_of_a1111_doctest_prompts(prompt):
    assert [list(c) for c in weighted_chunks(prompt)] == A1111_ATTENTION[prompt]


@pytest.mark.parametrize("prompt", A1111_UNBALANCED)
def test_unbalanced_a1111_doctest_prompts_are_refused_at_their_column(prompt):
    column, message = A1111_UNBALANCED[prompt]
    with pytest.raises(PromptSyntaxError, match=re.escape(f"column {column}: {message}")):
        weighted_chunks(prompt)
    with pytest.raises(PromptSyntaxError) as e:
        prompt_schedule(prompt, 10)
    assert e.value.column == column


def test_a1111_house_and_sky_doctest_closed_at_the_end_gives_its_weights_exactly():
    closed = "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).)"  # A1111 closes the open '(' there
    assert weighted_chunks(closed) == [("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0),
                                       (" a ", 1.1), ("hill", 0.55), (", sun, ", 1.1), ("sky", 1.4641000000000006),
                                       (".", 1.1)]


def test_break_splits_parts_and_escapes_are_literal():
    assert weighted_chunks("a bold BREAK (seven)") == [("a bold", 1.0), ("BREAK", -1.0), ("seven", 1.1)]
    assert weighted_chunks("a \\(bold\\) seven\\:") == [("a (bold) seven:", 1.0)]
    assert weighted_chunks("(a:-2)[b]") == [("a", -2.0), ("b", 1 / 1.1)]
    assert weighted_chunks("") == [("", 1.0)]
    assert weighted_chunks("ratio 3:4 | x") == [("ratio 3:4 | x", 1.0)]  # ':' and '|' outside brackets are text
    assert not has_syntax("a bold seven, leaning: right") and has_syntax("a BREAK b") and has_syntax("\\(")
    assert is_scheduled("a [b|c]") and is_scheduled("[a:b:3]") and not is_scheduled("(a:1.3) [b]")


@pytest.mark.parametrize("prompt,column,message", [
    ("a (bold:x) seven", 9, "weight 'x' is not a number"),
    ("a (bold:nan)", 9, "weight 'nan' is not a number"),
    ("a (bold:1e999)", 9, "weight must be finite"),
    ("a (bold:10.5)", 9, r"a weight must be in \[-10, 10\], got 10.5"),
    ("a (bold:-11)", 9, r"a weight must be in \[-10, 10\]"),
    ("(bold seven", 1, "'\\(' is never closed"),
    ("a bold) seven", 7, "'\\)' closes no bracket"),
    ("[a three:a seven:soon]", 18, "when .* 'soon' is not a number"),
    ("[a three:a seven:-0.5]", 18, r"when must be a fraction in \[0, 1\) or a step number, got -0.5"),
    ("[a:b:c:0.5]", 5, "too many ':'"),
    ("[a:b|c]", 5, "holds both ':' and '|'"),
    ("[a (b] c)", 6, "'\\]' closes no bracket"),
])
def test_bad_prompts_name_their_column(prompt, column, message):
    with pytest.raises(PromptSyntaxError, match=f"column {column}: {message}"):
        prompt_schedule(prompt, 10)


def test_when_past_the_step_count_is_refused_and_step_numbers_count_steps():
    with pytest.raises(PromptSyntaxError, match="column 18: when = 12 is past the 10 sampling steps"):
        prompt_schedule("[a three:a seven:12]", 10)
    assert prompt_schedule("[a:b:10]", 10) == [(10, "a")]
    assert prompt_schedule("[a:b:0]", 10) == [(10, "b")]
    assert prompt_schedule("[a:b:1]", 4) == [(1, "a"), (4, "b")]
    assert prompt_schedule("[a:b:0.5]", 15) == [(7, "a"), (15, "b")]  # int(0.5 * 15), as A1111


# ---------------------------------------------------------------- conditions that change during sampling


def _recording(seen: list):
    """A denoiser that records, per call, its sigma and the first value of the condition it got."""
    def d(x, sigma, cond=None):
        seen.append((float(torch.as_tensor(sigma).reshape(-1)[0]), cond["context"][:, 0].tolist()))
        return torch.zeros_like(x)
    return d


def test_step_conditions_pick_the_step_a_level_starts():
    levels = karras_sigmas(4, 0.002, 80.0)[:-1]  # (4,)
    table = {"context": torch.tensor([[0.0], [1.0], [2.0]])}  # (3, 1)
    sc = StepConditions(table, torch.tensor([[0, 1], [0, 1], [2, 1], [2, 2]]), levels)  # (S=4, B=2)
    assert [sc.at(s)["context"][:, 0].tolist() for s in levels] == [[0, 1], [0, 1], [2, 1], [2, 2]]
    mid = (levels[1] * levels[2]).sqrt()
    assert sc.at(mid)["context"][:, 0].tolist() == [2, 1]  # between levels: the step starting below
    per_image = torch.stack([levels[0], levels[3]])  # (B,) each image at its own level
    assert sc.at(per_image)["context"][:, 0].tolist() == [0, 2]
    plain = {"context": torch.ones(2, 1)}
    assert at_level(plain, levels[0]) is plain and at_level(None, 1.0) is None


@pytest.mark.parametrize("sampler", SAMPLERS.names())
def test_every_sampler_hands_the_denoiser_each_steps_condition(sampler):
    steps = 5
    sigmas = karras_sigmas(steps, 0.002, 80.0)
    table = {"context": torch.tensor([[10.0], [20.0]]), "context_pooled": torch.zeros(2, 1)}
    rows = torch.tensor([[0], [0], [1], [1], [1]])  # (S, 1): A for steps 1-2, then B
    null = StepConditions({"context": torch.tensor([[-1.0], [-2.0]]), "context_pooled": torch.zeros(2, 1)},
                          torch.tensor([[1], [1], [1], [0], [0]]), sigmas[:-1])
    seen = []
    guided = cfg_denoiser(_recording(seen), 1.0, null)
    x = torch.randn(1, 1, 4, 4) * sigmas[0]
    for _ in get_sampler(sampler)(guided, x, sigmas, StepConditions(table, rows, sigmas[:-1]),
                                  noise=torch.randn_like):
        pass
    levels = sigmas[:-1].tolist()
    for sigma, (cond, null_value) in seen:
        step = sum(level > sigma * (1 + 1e-4) for level in levels)
        assert cond == [10.0, 20.0][int(rows[min(step, steps - 1), 0])], (sampler, sigma)
        assert null_value == [-1.0, -2.0][int(null.rows[min(step, steps - 1), 0])], (sampler, sigma)
    assert {c for _, (c, _) in seen} == {10.0, 20.0} or sampler == "consistency"


def test_final_words_are_what_a_judge_reads():
    assert final_words("a (bold:1.5) seven") == "a bold seven"  # no numerals left for a digit parser to find
    assert final_words("[a three:a \\(big\\) seven:0.5] BREAK (leaning left)") == "a (big) seven leaning left"
    assert final_words("[a three|a seven]") == "a three a seven" and final_words("a 7: tall") == "a 7: tall"


def test_literal_captions_read_as_written():
    for caption in ("a photo (close-up) :)", "x BREAK y [z]", "back\\slash", "a plain seven"):
        assert weighted_chunks(literal(caption)) == [(caption, 1.0)] and final_words(literal(caption)) == caption
    assert literal("a plain seven") == "a plain seven"
