"""The `fewstep` figure of `noisecraft explain`, for distilled students: the same seeds and conditions drawn by the
student in 1, 2 and 4 network calls (consistency sampling) beside the teacher at its own default sampler."""
from __future__ import annotations

import textwrap
from pathlib import Path

from noisecraft.samplers import network_calls
from noisecraft.viz import plot_process

STUDENT_STEPS = (1, 2, 4)


def fewstep_figure(ctx, path: Path) -> dict:
    pipe, o = ctx.pipe, ctx.options
    rows = ctx.rows(o.n)
    columns = [pipe.generate(n=o.n, labels=rows, sampler="consistency", steps=k, guidance=0, seed=o.seed)
               for k in STUDENT_STEPS]
    labels = [f"student, {k} call{'s' if k > 1 else ''}" for k in STUDENT_STEPS]
    teacher = _teacher(pipe)
    if teacher is not None:
        opts = teacher.resolve()
        columns.append(teacher.generate(n=o.n, labels=rows, seed=o.seed))
        guided = " (x2 where guided)" if opts.guidance else ""
        labels.append(f"teacher, {opts.sampler} {opts.steps}\n{network_calls(opts.sampler, opts.steps)} calls"
                      f"{guided}")
    grid = [[col[r] for col in columns] for r in range(o.n)]
    names = [textwrap.fill(n, 16) for n in ctx.row_names(rows)]
    plot_process(grid, labels, "a distilled student in few network calls, beside its teacher", path, names)
    return {"student_steps": list(STUDENT_STEPS), "teacher": None if teacher is None else pipe.config.distill.teacher,
            "rows": ctx.row_names(rows)}


def _teacher(pipe):
    """The teacher's pipeline when its checkpoint is still there (a student samples without it)."""
    from noisecraft.pipeline import load_pipeline

    teacher = pipe.config.distill.teacher
    if not teacher or not Path(teacher).is_file():
        return None
    return load_pipeline(teacher, pipe.device)
