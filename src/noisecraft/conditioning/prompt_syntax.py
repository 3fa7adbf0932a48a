"""The prompt syntax of AUTOMATIC1111's web UI (its modules/prompt_parser.py is the reference), parsed strictly:

    (words)          weight x 1.1, nested: ((words)) x 1.21
    (words:1.3)      weight x 1.3 (a number in [-10, 10])
    [words]          weight / 1.1
    \\( \\) \\[ \\] \\\\  the character itself (any character after a backslash is taken as it is)
    BREAK            encode what follows as a prompt of its own, its tokens appended
    [from:to:when]   prompt editing: `from` until step `when`, then `to`; [to:when] adds, [from::when] removes
    [a|b|c]          alternation: a at step 1, b at step 2, ... in turn

`when` is a fraction of the steps in [0, 1) or a step number (1 = after the first step). Where A1111 reads a
broken prompt somehow (an unclosed bracket closes at the end, a stray one is text), this parser refuses it with the
column, so a typo never silently changes what the model is asked: `PromptSyntaxError` (a `UserError`: one
`error:` line in the CLI, a 422 in the API).

Two stages, as A1111's: `prompt_schedule(prompt, steps)` resolves editing into the plain-weighted prompt of each
step; `weighted_chunks(prompt)` splits one of those into runs of text with their weights. No torch here: the text
conditioner (`conditioning.text`) applies the weights to the encoder's token states.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from noisecraft.errors import UserError

EMPHASIS = 1.1  # (words) multiplies their weight by this, [words] divides it (A1111's factor)
MAX_WEIGHT = 10.0  # |weight| above this is refused: far past where any encoder's states mean anything
BREAK = "BREAK"
_SYNTAX = re.compile(r"[()\[\]\\]|\bBREAK\b")
_NUMBER = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")
_BREAK = re.compile(r"\s*\bBREAK\b\s*")
_ESCAPE = re.compile(r"\\(.?)", re.DOTALL)


class PromptSyntaxError(UserError):
    """A prompt the syntax refuses; `column` is 1-based."""

    def __init__(self, prompt: str, column: int, message: str):
        self.prompt, self.column = prompt, column
        shown = prompt if len(prompt) <= 80 else prompt[:77] + "..."
        super().__init__(f"prompt syntax, column {column}: {message} (in '{shown}')")


@dataclass
class Text:
    raw: str  # as written, escapes kept (re-parsed after rendering)


@dataclass
class Emphasis:
    children: list
    weight: float
    opening: str  # the brackets as written, to render the node back: "(" and ":1.3)"
    closing: str


@dataclass
class Edit:
    before: list  # empty for [to:when]
    after: list
    when: float  # a fraction of the steps in [0, 1), or a step number
    column: int  # where `when` is written, for errors that need the step count


@dataclass
class Alternation:
    options: list[list]


class _Parser:
    """Recursive descent over the characters; each construct checks its own brackets."""

    def __init__(self, text: str):
        self.s, self.i = text, 0

    def fail(self, pos: int, message: str):
        raise PromptSyntaxError(self.s, pos + 1, message)

    def sequence(self, stops: str) -> list:
        """Nodes up to (not including) a character of `stops` or the end."""
        nodes, start = [], self.i
        while self.i < len(self.s) and self.s[self.i] not in stops:
            c = self.s[self.i]
            if c in ")]":
                self.fail(self.i, f"'{c}' closes no bracket")
            if c not in "([":
                self.i += 2 if c == "\\" else 1
                continue
            if self.i > start:
                nodes.append(Text(self.s[start:self.i]))
            nodes.append(self.paren() if c == "(" else self.bracket())
            start = self.i
        self.i = min(self.i, len(self.s))  # a backslash at the very end
        if self.i > start:
            nodes.append(Text(self.s[start:self.i]))
        return nodes

    def paren(self) -> Emphasis:
        opened = self.i
        self.i += 1
        children = self.sequence("):")
        if self.i >= len(self.s):
            self.fail(opened, "'(' is never closed")
        if self.s[self.i] == ")":
            self.i += 1
            return Emphasis(children, EMPHASIS, "(", ")")
        colon, close = self.i, self.s.find(")", self.i)
        if close < 0:
            self.fail(opened, "'(' is never closed")
        weight = self.number(colon + 1, close, "weight")
        if not abs(weight) <= MAX_WEIGHT:
            self.fail(colon + 1, f"a weight must be in [-{MAX_WEIGHT:g}, {MAX_WEIGHT:g}], got {weight:g}")
        self.i = close + 1
        return Emphasis(children, weight, "(", self.s[colon:close + 1])

    def bracket(self) -> Emphasis | Edit | Alternation:
        opened = self.i
        self.i += 1
        parts, seps = [self.sequence("]:|")], []
        while self.i < len(self.s) and self.s[self.i] != "]":
            seps.append((self.s[self.i], self.i))
            self.i += 1
            parts.append(self.sequence("]:|"))
        if self.i >= len(self.s):
            self.fail(opened, "'[' is never closed")
        self.i += 1
        if not seps:
            return Emphasis(parts[0], 1 / EMPHASIS, "[", "]")
        if all(c == "|" for c, _ in seps):
            return Alternation(parts)
        return self.edit(parts, seps)

    def edit(self, parts: list[list], seps: list[tuple[str, int]]) -> Edit:
        """[to:when] or [from:to:when]; a '|' before the last ':' is text (as A1111 reads it)."""
        last, at = seps[-1]
        if last != ":" or any(not isinstance(n, Text) for n in parts[-1]):
            self.fail(at, "'[' holds both ':' and '|': write [from:to:when] or [a|b]")
        end = at + 1 + sum(len(n.raw) for n in parts[-1])
        when = self.number(at + 1, end, "when (a step fraction or a step number)")
        if not 0 <= when < math.inf:
            self.fail(at + 1, f"when must be a fraction in [0, 1) or a step number, got {when:g}")
        groups = [[]]
        for k, part in enumerate(parts[:-1]):
            groups[-1].extend(part)
            if k < len(parts) - 2:
                c, pos = seps[k]
                if c == ":" and len(groups) == 2:
                    self.fail(pos, "too many ':' in [from:to:when]")
                groups.append([]) if c == ":" else groups[-1].append(Text("|"))
        before, after = ([], groups[0]) if len(groups) == 1 else groups
        return Edit(before, after, when, at + 2)

    def number(self, start: int, end: int, what: str) -> float:
        raw = self.s[start:end]
        if not _NUMBER.fullmatch(raw):
            self.fail(start, f"{what} '{raw.strip()}' is not a number")
        value = float(raw)
        if not math.isfinite(value):
            self.fail(start, f"{what} must be finite, got '{raw.strip()}'")
        return value


def has_syntax(prompt: str) -> bool:
    """Whether a prompt holds any bracket, backslash or BREAK (otherwise it is plain text, read as it is)."""
    return _SYNTAX.search(prompt) is not None


def literal(text: str) -> str:
    """`text` (a training caption, say) as a prompt that reads as it is: brackets and backslashes escaped, and a
    BREAK kept a word."""
    if not has_syntax(text):
        return text
    return re.sub(r"\bBREAK\b", "BREA\\\\K", re.sub(r"([()\[\]\\])", r"\\\1", text))


def syntax_tree(prompt: str) -> list:
    """The syntax tree of a prompt (`Text`, `Emphasis`, `Edit`, `Alternation` nodes); PromptSyntaxError if
    it is malformed."""
    parser = _Parser(prompt)
    return parser.sequence("")


def _walk(nodes: list):
    for n in nodes:
        yield n
        for children in (n.children,) if isinstance(n, Emphasis) else (n.before, n.after) if isinstance(n, Edit) \
                else n.options if isinstance(n, Alternation) else ():
            yield from _walk(children)


def is_scheduled(prompt: str) -> bool:
    """Whether a prompt changes during sampling (prompt editing or alternation)."""
    return has_syntax(prompt) and any(isinstance(n, (Edit, Alternation)) for n in _walk(syntax_tree(prompt)))


def _edit_step(prompt: str, node: Edit, steps: int) -> int:
    step = int(node.when * steps) if node.when < 1 else int(node.when)
    if step > steps:
        raise PromptSyntaxError(prompt, node.column, f"when = {node.when:g} is past the {steps} sampling steps")
    return step


def _render(prompt: str, nodes: list, step: int, steps: int) -> str:
    out = []
    for n in nodes:
        if isinstance(n, Text):
            out.append(n.raw)
        elif isinstance(n, Emphasis):
            out.append(n.opening + _render(prompt, n.children, step, steps) + n.closing)
        elif isinstance(n, Edit):
            out.append(_render(prompt, n.before if step <= _edit_step(prompt, n, steps) else n.after, step, steps))
        else:
            out.append(_render(prompt, n.options[(step - 1) % len(n.options)], step, steps))
    return "".join(out)


def prompt_schedule(prompt: str, steps: int) -> list[tuple[int, str]]:
    """[(last step, prompt)] for a prompt over `steps` sampling steps (1-based, as A1111's
    get_learned_conditioning_prompt_schedules): each prompt holds up to and including its step."""
    tree = syntax_tree(prompt) if has_syntax(prompt) else [Text(prompt)]
    ends = {steps}
    for n in _walk(tree):
        if isinstance(n, Edit):
            ends.add(_edit_step(prompt, n, steps))
        elif isinstance(n, Alternation):
            ends.update(range(1, steps + 1))
    return [(t, _render(prompt, tree, t, steps)) for t in sorted(e for e in ends if e >= 1)]


def _words(nodes: list) -> str:
    out = []
    for n in nodes:
        if isinstance(n, Text):
            out.append(_ESCAPE.sub(r"\1", _BREAK.sub(" ", n.raw)))
        elif isinstance(n, Emphasis):
            out.append(_words(n.children))
        elif isinstance(n, Edit):
            out.append(_words(n.after))
        else:
            out.append(" ".join(_words(option) for option in n.options))
    return "".join(out)


def final_words(prompt: str) -> str:
    """The plain words a prompt asks for by its last step (weights and brackets dropped, an edit's `to`, an
    alternation's options side by side): what a judge of the images should read."""
    return _words(syntax_tree(prompt)) if has_syntax(prompt) else prompt


def _chunks(prompt: str, nodes: list) -> list[list]:
    out = []
    for n in nodes:
        if isinstance(n, Text):
            for k, part in enumerate(_BREAK.split(n.raw)):
                out += [[BREAK, -1.0]] * (k > 0) + [[_ESCAPE.sub(r"\1", part), 1.0]]
        elif isinstance(n, Emphasis):
            inner = _chunks(prompt, n.children)
            for c in inner:
                c[1] = c[1] if c[0] is BREAK else c[1] * n.weight
            out += inner
        else:
            raise PromptSyntaxError(prompt, 1, "prompt editing and alternation need the sampling steps "
                                               "(prompt_schedule)")
    return out


def weighted_chunks(prompt: str) -> list[tuple[str, float]]:
    """A prompt without editing as runs of text and their weights, (BREAK, -1) between parts encoded apart
    (as A1111's parse_prompt_attention: runs of one weight merged, [("", 1.0)] for nothing)."""
    chunks = [c for c in _chunks(prompt, syntax_tree(prompt)) if c[0] or c[0] is BREAK]
    merged = []
    for text, weight in chunks:
        if merged and merged[-1][1] == weight and text is not BREAK and merged[-1][0] is not BREAK:
            merged[-1][0] += text
        else:
            merged.append([text, weight])
    return [(t, w) for t, w in merged] or [("", 1.0)]
