"""The prompt syntax (`conditioning.prompt_syntax`) applied to a text model's conditioning:

* weights as A1111 applies them to CLIP's token states: each token's state times the weight of the text it stands
  for, then all of them rescaled to the size they had. A1111 restores their mean, which suits CLIP's states (a mean
  far from 0); the mean of all-MiniLM-L6-v2's states is near 0, so the same ratio swings wildly and can flip their
  sign (benchmarks/prompt_syntax.py measures it), and the size restored here is their root mean square, the same
  scale-keeping step on a statistic that stays put. The pooled embedding of an encoder that
  pools by the mean of its tokens (all-MiniLM-L6-v2) is that mean over the weighted states, so a weight reaches it
  as the encoder itself would pool them; an encoder whose pooled embedding is a state of its own (CLIP's end token)
  keeps it, as A1111 keeps SDXL's;
* BREAK: each part encoded alone and their tokens put one after the other (up to the model's token count), as
  A1111 encodes each part as a chunk of its own;
* prompt editing and alternation: every distinct prompt of the schedule embedded once, and a `StepConditions`
  saying which one each image takes at each step of the sampling grid.

The encoder reads a prompt's plain text (the syntax taken out) and the token states are weighted after, so the
`TextEmbeddings` cache keeps holding plain prompts only: a prompt whose weights are all 1 is the plain prompt's
conditioning bit for bit, and a training caption written with weights still comes from the run's cache.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from noisecraft.conditioning.prompt_syntax import BREAK, has_syntax, is_scheduled, prompt_schedule, weighted_chunks
from noisecraft.errors import UserError
from noisecraft.samplers.common import StepConditions


def _parts(chunks: list[tuple[str, float]]) -> list[tuple[str, list[tuple[int, int, float]]]]:
    """Weighted chunks -> per BREAK-separated part, its plain text and its runs (start, end, weight) in it."""
    parts = [("", [])]
    for text, weight in chunks:
        if text is BREAK:
            parts.append(("", []))
            continue
        plain, runs = parts[-1]
        parts[-1] = (plain + text, runs + [(len(plain), len(plain) + len(text), weight)])
    return parts


def _token_weights(spans: list[tuple[int, int]], runs: list[tuple[int, int, float]]) -> torch.Tensor:
    """(T,) the weight of the run each token starts in; special tokens ((0, 0) spans) weigh 1."""
    return torch.tensor([next((w for lo, hi, w in runs if a != b and lo <= a < hi), 1.0) for a, b in spans])


def weighted_condition(text, prompt: str) -> dict[str, torch.Tensor]:
    """The conditioning (1, ...) of a prompt without editing, on the CPU, with its weights and BREAKs applied
    to the cached states of its plain text (`text`: a `TextEmbeddings`)."""
    parts = _parts(weighted_chunks(prompt))
    if len(parts) == 1 and all(w == 1 for _, _, w in parts[0][1]):
        return text([parts[0][0]], "cpu")  # the plain prompt itself, bit for bit
    states, weights, pooled = [], [], []
    for plain, runs in parts:
        row = text([plain], "cpu")
        n = int(row["context_mask"].sum())
        states.append(row["context"][0, :n])  # (n, D) its real tokens
        weights.append(_token_weights(text.token_spans(plain)[:n], runs))
        pooled.append(row["context_pooled"])
    z, w = torch.cat(states), torch.cat(weights)  # (T, D), (T,)
    if len(z) > text.max_tokens:
        warnings.warn(f"the parts of '{prompt}' hold {len(z)} tokens together; the model reads the first "
                      f"{text.max_tokens}", stacklevel=3)
        z, w = z[:text.max_tokens], w[:text.max_tokens]
    weighted = z * w[:, None].to(z.dtype)
    weighted = weighted * restore_ratio(z, weighted)
    context = torch.zeros(1, text.max_tokens, z.shape[-1])
    context[0, :len(z)] = weighted
    if text.pooling.startswith("mean"):
        pool = weighted.mean(0, keepdim=True)  # (1, D)
        pool = F.normalize(pool, dim=-1) if text.pooling == "mean-normalized" else pool
    else:
        pool = pooled[0]
    return {"context": context, "context_mask": torch.arange(text.max_tokens)[None] < len(z),
            "context_pooled": pool}


def restore_ratio(states: torch.Tensor, weighted: torch.Tensor) -> torch.Tensor:
    """The factor that gives weighted token states (T, D) the root mean square the unweighted ones had."""
    return states.pow(2).mean().sqrt() / weighted.pow(2).mean().sqrt().clamp(min=1e-12)


def _schedule(prompt: str, steps: int | None) -> list[tuple[int, str]]:
    if steps is not None:
        return prompt_schedule(prompt, steps) if has_syntax(prompt) else [(steps, prompt)]
    if is_scheduled(prompt):
        raise UserError(f"'{prompt}' changes during sampling (prompt editing or alternation): it needs a sampling "
                        f"run, not a single conditioning")
    return [(1, prompt)]


def prompt_condition(text, prompts: list[str], device, sigmas: torch.Tensor | None = None
                     ) -> dict[str, torch.Tensor] | StepConditions:
    """The conditioning of a batch of prompts in the prompt syntax: a dict of (B, ...) tensors, or where a prompt
    changes during sampling, `StepConditions` over the grid `sigmas` (steps + 1 levels ending in 0)."""
    if not any(has_syntax(p) for p in prompts):
        return text(prompts, device)
    steps = None if sigmas is None else len(sigmas) - 1
    schedules = [_schedule(p, steps) for p in prompts]
    distinct = list(dict.fromkeys(t for s in schedules for _, t in s))
    text.rows_of([t for t in distinct if not has_syntax(t)])  # the plain ones encoded in one call
    embedded = [weighted_condition(text, t) for t in distinct]
    table = {k: torch.cat([e[k] for e in embedded]).to(device) for k in embedded[0]}
    index = {t: i for i, t in enumerate(distinct)}
    if all(len(s) == 1 for s in schedules):
        rows = torch.tensor([index[s[0][1]] for s in schedules], device=device)
        return {k: v[rows] for k, v in table.items()}
    rows = [[index[next(t for end, t in s if step <= end)] for s in schedules] for step in range(1, steps + 1)]
    return StepConditions(table, torch.tensor(rows, device=device), sigmas[:-1].to(device))


def check_prompt_steps(prompts: list[str], steps: int) -> None:
    """Every `when` of every prompt within the `steps` sampling steps (PromptSyntaxError naming the column)."""
    for p in dict.fromkeys(prompts):
        if has_syntax(p):
            prompt_schedule(p, steps)
