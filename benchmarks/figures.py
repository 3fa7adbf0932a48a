"""Every table of measured figures in README.md and docs/, rendered from the result files in benchmarks/results/.

Nothing in a table is typed by hand: each row reads its figures from one or two result files, names them, and
shows the machine they were measured on as the file records it (CPU model, ISA flags, kernel cap, threads,
precision). The docs' pages get the tables when the site is built (`<!-- generated: NAME -->`, docs/hooks.py);
the README's blocks (`<!-- NAME: begin -->` ... `<!-- NAME: end -->`, allowed on any page) are rewritten by

    python benchmarks/figures.py --readme

and tests/test_docs.py fails when a block differs from what its files render or names no table, or when a page of
README.md or docs/ carries a figure in its prose that benchmarks/prose_figures.py does not trace to its file.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from statistics import mean, stdev

from distill_timing import render as render_distill_timing
from editing import render_matrix as render_editing_matrix
from editing import render_table as render_editing
from fewstep import render as render_fewstep
from laptop_presets import render as render_laptop_presets
from lora import render as render_lora
from latent_vs_pixel import render as render_latent_vs_pixel
from posthoc_ema import render as render_posthoc_ema
from prompt_syntax import render as render_prompt_syntax
from recipes_compare import render as render_recipes_compare

from common.machine import describe
from common.pages import README, block, rewrite_blocks
from common.real_avx2 import REAL, real_machine, real_rows, real_wall
from common.results import load
from common.tables import HEADER
from common.tables import files as _file
from common.tables import pct as _pct
from common.tables import runs as _runs
from common.tables import table as _table

README_BLOCKS = ("quickstart", "laptop_presets", "fewstep")  # the README's rendered blocks, in page order


# ---------------------------------------------------------------- the quickstart (README and docs)


def _evaluate_row(name: str) -> list[str]:
    e = load(name)
    what = f"`noisecraft evaluate --n {e['n']}` ({e['sampler']} {e['steps']} steps)"
    if "whole_command_s" in e:  # evaluate_speed.py since issue 23: the command as a user runs it
        fig = (f"{e['whole_command_s']:.1f} s, the whole command ({e['start_up_and_loading_s']:.1f} s of it start-up "
               f"and loading, {e['report_timing_s']['sampling_s']:.1f} s sampling); ran: "
               f"{'; '.join(e['metrics_ran'])}; skipped: {', '.join(e['metrics_skipped']) or 'nothing'}")
        if not e["trained_checkpoint"]:
            what += ", on an untrained checkpoint of the same network (the same speed)"
    else:  # before issue 23: timed in process, the judge loaded before the clock started
        fig = (f"{e['total_s']:.1f} s in process, not the whole command: start-up and loading the judge not timed; "
               f"sampling {e['sampling_s']:.1f} s, offline metrics {e['offline_metrics_s']:.1f} s; Inception "
               f"{e['inception']}")
    return [what, fig + ", 1 run", describe(e), _file(name)]


def _real_quickstart_rows() -> list[list[str]]:
    """The quickstart on a real 2-core AVX2-only CPU (real_avx2.json): its whole command and its quality there."""
    q, m, f = real_rows()["digits"], real_machine(), _file(REAL)
    return [[f"`{q['command'].split(' --out')[0]}` ({q['steps']} steps) on a real AVX2-only CPU, whole command",
             f"{q['wall_s']:g} s ({q['train_seconds']:g} s training loop), 1 run", m, f],
            ["its samples there, judged by a classifier independent of the project's", q["quality"], m, f]]


def quickstart() -> str:
    rows = []
    for kind in ("native", "avx2"):
        q = load(f"quickstart_{kind}.json")
        m, f = describe(q), _file(f"quickstart_{kind}.json")
        rows.append([f"`noisecraft train --preset digits` ({q['steps']} steps of {q['batch_size']}), whole command",
                     (f"{q['wall_seconds']:.1f} s ({q['train_loop_seconds']:.1f} s training loop), "
                     f"{q['train_images_per_s_median']:.1f} images/s (median of the log), 1 run"), m, f])
        j = q["judge"]
        rows.append([f"its samples judged as the digit asked for ({j['ddim50']['n']}), DDIM 50 / DPM-Solver++(2M) 10",
                     f"{_pct(j['ddim50']['accuracy'])} / {_pct(j['dpmpp10']['accuracy'])}", m, f])
    rows += _real_quickstart_rows()
    rows += [_evaluate_row(f"evaluate_speed_{kind}.json") for kind in ("native", "avx2", "avx2_1thread")]
    return _table(HEADER, rows)


# ---------------------------------------------------------------- the quickstart's kernels and recipe (docs)


def quickstart_details() -> str:
    rows = []
    for kind in ("native", "avx2"):
        t = load(f"throughput_{kind}.json")
        s, f = t["setup"], _file(f"throughput_{kind}.json")
        for p, r in t["train"].items():
            m = describe(t, precision=p)
            per_flop = r.get("ratio_per_flop", r["ratio"] * t["train_flops_per_image"]["ours"]
                             / t["train_flops_per_image"]["reference"])
            rows.append([(f"training images/s, noisecraft's loop vs the diffusers-style loop (a UNet2DModel of the same "
                         f"widths, {s['params_reference']:,} vs our {s['params_ours']:,} parameters, per-image PIL "
                         f"transforms), both in {p}"),
                         (f"{r['ours_img_per_s']:.0f} vs {r['reference_img_per_s']:.0f} ({r['ratio']:.2f}x; per "
                         f"training FLOP {per_flop:.2f}x), median of {s['rounds']} rounds of {s['timed_steps']} steps"),
                         m, f])
            best = t["matmul_peak_flops"][p]
            rows.append([(f"FLOP/s of a training step over the best dense-matmul rate measured in the same run "
                         f"({best / 1e9:.0f} GFLOP/s in {p}; a measured rate, not the hardware's ceiling)"),
                         f"noisecraft {r['ours_fraction_of_peak']:.2f}, reference {r['reference_fraction_of_peak']:.2f}",
                         m, f])
    for kind in ("native", "avx2"):
        s = load(f"step_levers_{kind}.json")
        levers = {r["lever"]: r for r in s["levers"]}
        cl, co = levers["channels_last"], levers["compile"]
        rows.append(["kernel levers on the training step (batch 64): channels-last / torch.compile (its warm-up)",
                     (f"{cl['vs_eager']:.2f}x / {co['vs_eager']:.2f}x ({co['warmup_s']:.0f} s) of eager's "
                     f"{levers['eager']['img_per_s']:.0f} images/s, 1 run"), describe(s),
                     _file(f"step_levers_{kind}.json")])
    sh = load("step_levers_avx2.json")["eager_time_shares"]
    rows.append([("where an eager training step's time goes: convolutions forward / backward, matmuls and attention, "
                 "the rest"), (f"{_pct(sh['conv_forward'])} / {_pct(sh['conv_backward'])}, "
                 f"{_pct(sh['matmul_attention'])}, {_pct(sh['other'])}"), describe(load("step_levers_avx2.json")),
                 _file("step_levers_avx2.json")])
    p = load("step_levers_patch.json")
    new, old = _patch_rounds(p)
    rows.append([(f"training images/s of the digits network on 2x2 patches ({new[0]['params']:,} parameters) vs the "
                 f"previous preset's 28x28 U-Net ({old[0]['params']:,}), batch 64, alternating"),
                 (f"{_span(r['img_per_s'] for r in new)} vs {_span(r['img_per_s'] for r in old)} "
                 f"({_span((a['img_per_s'] / b['img_per_s'] for a, b in zip(new, old, strict=True)), '{:.1f}')}x "
                 f"in {_runs(len(new))} of {new[0]['timed_steps']} steps each)"), describe(p),
                 _file("step_levers_patch.json")])
    return _table(HEADER, rows)


def _patch_rounds(p: dict) -> tuple[list[dict], list[dict]]:
    new = [r for r in p["levers"] if r["lever"] == "eager"]
    old = [r for r in p["levers"] if r["lever"] == "previous_28x28"]
    assert len(new) == len(old) > 0
    return new, old


def _span(values, fmt: str = "{:.0f}") -> str:
    v = sorted(values)
    return fmt.format(v[0]) if fmt.format(v[0]) == fmt.format(v[-1]) else f"{fmt.format(v[0])}-{fmt.format(v[-1])}"


def patch_speedup() -> str:
    """The ratio of training images/s, patch network over the previous 28x28 one, round by round, for prose."""
    new, old = _patch_rounds(load("step_levers_patch.json"))
    return _span((a["img_per_s"] / b["img_per_s"] for a, b in zip(new, old, strict=True)), "{:.1f}") + "×"


def sampling_quality() -> str:
    d = load("sampling_quality_digits.json")
    m, f = describe(d), _file("sampling_quality_digits.json")
    rows = [[f"`{r['sampler']}` {r['steps']} steps ({r['nfe']} network calls), {d['n']} samples",
             f"{_pct(r['accuracy'])} judged right, FD-clf {r['frechet']:.2f}, {r['images_per_s']:.1f} images/s",
             m, f] for r in d["rows"]]
    rows.append([f"real held-out digits ({d['real_heldout']['n']})",
                 f"{_pct(d['real_heldout']['accuracy'])} judged right, FD-clf {d['real_heldout']['frechet']:.2f}", m, f])
    return (f"The digits recipe's checkpoint `{Path(d['checkpoint']).parts[-3]}` (step {d['checkpoint_step']}), "
            f"guidance w = {d['guidance']:g} above sigma {d['guidance_interval'][0]:g}:\n\n" + _table(HEADER, rows))


# ---------------------------------------------------------------- latent diffusion at 64x64, previous presets (docs)


def latent_digits64() -> str:
    rows = []
    d = load("latent_digits64.json")
    m, f = describe(d, precision=d["latent_diffusion"]["sampling"]["precision"]), _file("latent_digits64.json")
    on, off, lat = d["autoencoder_disc_on"], d["autoencoder_disc_off"], d["latent_diffusion"]
    e, eo = on["eval"], off["eval"]
    rows += [[f"`train-autoencoder --preset digits64-ae` ({e['step']} steps)",
              f"{on['train_wall']} wall (min:s), {on['train_loop_s']:.1f} s training loop", m, f],
             [f"its reconstructions of {e['n']} held-out digits: PSNR / SSIM / judged right (originals)",
              (f"{e['psnr_db']:.1f} dB / {e['ssim']:.3f} / {_pct(e['judge']['accuracy'])} "
              f"({_pct(e['judge']['originals_accuracy'])})"), m, f],
             ["the same steps without the discriminator: PSNR / FD-clf / variance of the Laplacian",
              (f"{eo['psnr_db']:.1f} dB / {eo['judge']['fd_clf']:.1f} (with it: {e['judge']['fd_clf']:.1f}) / "
              f"{eo['sharpness']['laplacian_variance']:.4f} (with it: {e['sharpness']['laplacian_variance']:.4f}; "
              f"originals {e['sharpness']['originals_laplacian_variance']:.4f})"), m, f],
             ["`train --preset digits64-latent`", (f"{lat['train_wall']} wall (min:s), {lat['train_loop_s']:.1f} s "
              f"training loop"), m, f],
             [f"its {lat['sampling']['n']} class-conditional DDIM-50 samples judged as the digit asked for",
              f"{_pct(lat['class_accuracy'])}", m, f]]
    for name in ("latent_digits64_2core.json", "latent_digits64_avx2.json"):
        d = load(name)
        a, lt = d["autoencoder"], d["latent"]
        m, f = describe(d, precision=lt["sampling"]["precision"]), _file(name)
        rows += [[(f"`train-autoencoder --preset digits64-ae` ({a['eval']['step']} steps): wall; reconstructions "
                  f"PSNR / SSIM / judged right"), (f"{a['train_wall_s']:.1f} s; {a['eval']['psnr_db']:.1f} dB / "
                  f"{a['eval']['ssim']:.3f} / {_pct(a['eval']['judge']['accuracy'])}"), m, f],
                 [(f"`train --preset digits64-latent`: wall; {lt['sampling']['n']} DDIM-50 samples judged right "
                  f"(FD-clf)"), f"{lt['train_wall_s']:.1f} s; {_pct(lt['class_accuracy'])} ({lt['fd_clf']:.1f})", m, f]]
    return _table(HEADER, rows)


# ---------------------------------------------------------------- the laptop presets and latent vs pixel


def laptop_presets() -> str:
    return render_laptop_presets(load("laptop_presets.json"))


def latent_vs_pixel() -> str:
    return render_latent_vs_pixel(load("latent_vs_pixel.json"), load("laptop_presets.json"))


def editing() -> str:
    return render_editing(load("editing.json"))


def editing_matrix() -> str:
    return render_editing_matrix(load("editing.json"))


def fewstep() -> str:
    return render_fewstep(load("fewstep.json")) + "\n\n" + render_distill_timing(load("distill_timing.json"))


def lora() -> str:
    return render_lora(load("lora_recipe_flow.json"), "lora_recipe_flow.json")


def posthoc_ema() -> str:
    return render_posthoc_ema(load("posthoc_ema.json"))


def prompt_syntax() -> str:
    return render_prompt_syntax(load("prompt_syntax.json"))


def recipes_compare() -> str:
    return render_recipes_compare(load("recipes_compare.json"))


# ---------------------------------------------------------------- other measurements (docs)


def other() -> str:
    rows = []
    s = load("stream_overhead.json")
    by = {r["way"]: r for r in s["rows"]}
    rows.append([(f"`Pipeline.stream` vs `generate` ({s['n']} digits, {s['sampler']} {s['steps']}, untrained "
                 f"{s['params']:,}-parameter network): previews off / a preview every step"),
                 (f"{by['stream, previews off']['ratio_to_generate']:.3f}x / "
                 f"{by['stream, preview every step']['ratio_to_generate']:.3f}x the time of generate (medians of "
                 f"{s['rounds']} rounds, 1 run)"), describe(s), _file("stream_overhead.json")])
    v = load("serve_latency.json")
    for r in v["rows"]:
        rows.append([(f"web server, {r['n_per_job']} image(s) a job ({v['sampler']} {v['steps']}, {v['model']}; "
                     f"load average {v['machine']['load_average_1_5_15'][0]:.1f}): first preview after the POST "
                     f"(in process); a job vs `generate`; 8 clients at once vs one client's 8 jobs in turn"),
                     (f"{1000 * r['time_to_first_preview_s']:.0f} ms ({1000 * r['in_process_first_step_s']:.0f} ms); "
                     f"{r['server_job_s']:.2f} s vs {r['generate_s']:.2f} s (x{r['server_overhead_ratio']:.2f}); "
                     f"{r['images_per_s_8_clients']:.1f} vs {r['images_per_s_1_client']:.1f} images/s "
                     f"(x{r['batching_gain']:.2f}); medians of {v['rounds']} rounds, 1 run"), describe(v),
                     _file("serve_latency.json")])
    t = load("text_to_image.json")
    m, f = describe(t), _file("text_to_image.json")
    st = t["step_time"]
    rows += [[(f"the previous `digits-text` preset ({t['train']['steps']} steps, {t['train']['params']:,} "
              f"parameters): `noisecraft train`, whole command; a text step over the class step of the same U-Net"),
              (f"{t['train']['wall_seconds']:.1f} s, 1 run; {st['ratio_median']:.3f}x (median of {st['rounds']} "
              f"rounds)"), m, f],
             [(f"its samples for {t['held_out_paraphrases']['prompts']} held-out paraphrases ("
              f"{t['held_out_paraphrases']['n']} samples, {t['sampling']['sampler']} {t['sampling']['steps']}, "
              f"w = {t['sampling']['guidance']:g})"), (f"{_pct(t['held_out_paraphrases']['accuracy'])} judged as the "
              f"digit named"), m, f],
             ["its attribute pairs at the same seed (bold/thin, leaning right/left, large/small)",
              " / ".join(_pct(t["attribute_pairs"][k]["agreement"]) for k in ("thickness", "slant", "size"))
              + f" in the asked direction ({t['attribute_pairs']['thickness']['pairs']} pairs each)", m, f]]
    for name in ("text_to_image_digits_text.json", "text_to_image_latent.json"):
        t = load(name)
        st = t["step_time"]
        rows.append([f"`{t['preset']}`: a text step over the class step of the same U-Net (batch {st['batch_size']})",
                     f"{st['ratio_median']:.3f}x (median of {st['rounds']} rounds, 1 run)",
                     describe(t), _file(name)])
    r = load("refactor_quickstart_compare.json")
    for k in ("before", "after"):
        q = r[k]
        rows.append([(f"issue 13's refactor, {k}: the digits quickstart of then ({q['steps']} steps, {q['params']:,} "
                     f"parameters), whole command; {q['judge_n']} {q['judge_sampler']} samples judged right"),
                     (f"{q['wall_seconds']:.1f} s, {q['train_images_per_s_median']:.1f} images/s (median), 1 run; "
                     f"{_pct(q['conditional_accuracy'])}"), describe(r, precision=q["precision"]),
                     _file("refactor_quickstart_compare.json")])
    return _table(HEADER, rows)


def _emoji_quality(q: dict) -> str:
    if "psnr_db" in q:
        return f"held-out reconstructions: PSNR {q['psnr_db']:.1f} dB, SSIM {q['ssim']:.3f}"
    if "colour_accuracy" in q:
        return (f"colour words obeyed {_pct(q['colour_accuracy'])} of {q['n']} ({q['seeds_per_prompt']} a prompt; "
                f"emoji in the training split {_pct(q['accuracy_prompts_in_training_split'])}, held out "
                f"{_pct(q['accuracy_prompts_held_out']) if q['accuracy_prompts_held_out'] is not None else 'none'})")
    mem = q.get("memorisation") or {}
    return (f"judged as the group asked {_pct(q['generated']['class_accuracy'])} of {q['n']} (real held-out images "
            f"{_pct(q['real_heldout']['class_accuracy'])}, chance {_pct(q['chance'])}); near-copies {_pct(mem['near_copy_share'])} (held-out "
            f"{_pct(mem['heldout_share'])})" if mem else "")


def emoji_presets() -> str:
    """The emoji presets as measured by benchmarks/emoji_presets.py, one row a run, with its machine."""
    d = load("emoji_presets.json")
    rows = [[f"`{r['command'].split(' --out')[0]}`" + (f" with {', '.join(r['overrides'])}" if r["overrides"]
                                                             else ""),
             f"{r['wall_s']:.1f} s whole command ({r['train_loop_s']:.1f} s training loop, {r['steps']} steps)",
             _emoji_goal(r), _emoji_quality(r["quality"]), describe(r), _file("emoji_presets.json")] for r in d["rows"]]
    return _table(["command", "wall", "issue's goal", "quality", "machine", "file"], rows)


def _emoji_goal(r: dict) -> str:
    """The issue's goals for a row; a time goal with the preset's wall on the real AVX2 CPU where it was measured."""
    g, preset = r["goal"], r["command"].split("--preset ")[1].split()[0]
    parts = []
    if "laptop_s" in g:
        parts.append(f"whole command <= {g['laptop_s']} s on a real 2-core AVX2 CPU; measured there: "
                     f"{real_wall(preset, g['laptop_s'])} (`{REAL}`)" if preset in real_rows()
                     else f"whole command <= {g['laptop_s']} s on a real 2-core AVX2 CPU, not measured there")
    if "colour_words" in g:
        parts.append(f"colour words >= {_pct(g['colour_words'])}")
    return "; ".join(parts) or "none for its time; well above chance, held-out accuracy beside it"


def _offline_quality(off: dict) -> str:
    """`noisecraft evaluate`'s offline figures: FD with both real floors, near-copies, and the class accuracy."""
    f = off["floors"]
    acc = off["generated"].get("class_accuracy")
    said = (f"judged as the class asked {_pct(acc)} (real held-out {_pct(off['real_heldout']['class_accuracy'])}); "
            if acc is not None else "")
    gen, held, unseen = f["generated"], f["real_heldout"], f["real_train_unseen"]
    return (said + f"FD in the judge's features {gen['fd']:.1f} (floors: real held-out {held['fd']:.1f}, real "
            f"training images not in the reference {unseen['fd']:.1f}); near-copies {_pct(gen['near_copy_share'])} "
            f"(real held-out {_pct(held['near_copy_share'])}); {off['generated']['n']} samples")


def _autoencoder_quality(q: dict) -> str:
    de = q["delta_e2000"]
    judge = q.get("judge") or {}
    said = (f"; reconstructions judged as their class {_pct(judge['accuracy'])} (originals "
            f"{_pct(judge['originals_accuracy'])})" if judge else "")
    if "agreement" in judge:
        said += f", in the judge's finest class of their original {_pct(judge['agreement'])}"
    worst = max(de["by_hue"].items(), key=lambda kv: kv[1]["mean"])
    return (f"held-out reconstructions: PSNR {q['psnr_db']:.1f} dB, SSIM {q['ssim']:.3f}, ΔE2000 mean "
            f"{de['mean']:.2f}, 95th percentile {de['p95']:.1f}, worst hue {worst[0]} (mean {worst[1]['mean']:.2f} "
            f"over {worst[1]['images']} images)" + said)


def _colour_quality(q: dict) -> str:
    """A colour_search row's figures in words: what a person sees, each beside its real-emoji floor."""
    if "psnr_db" in q:
        return _autoencoder_quality(q)
    if "colour_unseen" not in q:
        return (_offline_quality(q["offline"]) + f"; off-white frame {_pct(q['frame_offwhite'])}")
    evaluated = ("; " + _offline_quality(q["evaluate"]["offline"]) + f" from "
                 f"{q['evaluate']['text']['distinct_prompts']} distinct prompts" if "evaluate" in q else "")
    per = " / ".join(f"{c} {_pct(v)}" for c, v in q["colour_unseen_per_colour"].items())
    forms = q["colour_by_form"]
    shapes = " / ".join(f"{s} {_pct(v)}" for s, v in q["shape_per_shape"].items())
    return (f"colour words on prompts no caption holds {_pct(q['colour_unseen'])} ({per}); new word orders "
            f"{_pct(forms['order'])}, synonyms {_pct(forms['synonym'])}, the caption form {_pct(forms['caption'])}; "
            f"the shape asked {_pct(q['shape'])} ({shapes}; real emoji {_pct(q['real_shape'])}); off-white frame "
            f"{_pct(q['frame_offwhite'])} (real held-out emoji {_pct(q['real_frame_offwhite'])}); "
            f"{q['seeds_per_prompt']} seeds a prompt, {q['n']} samples" + evaluated)


def _seed_summary(rows: list[dict]) -> str:
    """Mean ± std over the seeds of each text variant trained more than once: NAME, NAME-seed1, NAME-seed2, ...,
    sampled as NAME was (a run judged twice alike counts once)."""
    out, text_rows, firsts = [], [r for r in rows if "colour_unseen" in r["quality"]], {}
    for r in text_rows:
        firsts.setdefault(r["name"], r)
    for name, base in firsts.items():
        group = {}
        for r in text_rows:
            if (r["name"] == name or r["name"].startswith(f"{name}-seed")) and r["sample"] == base["sample"]:
                group.setdefault(r["run"], r["quality"])
        runs = list(group.values())
        if len(runs) < 2:
            continue
        stat = lambda key: f"{_pct(mean(q[key] for q in runs))} ± {_pct(stdev(q[key] for q in runs))}"  # noqa: E731
        worst = {c: min(q["colour_unseen_per_colour"][c] for q in runs) for c in runs[0]["colour_unseen_per_colour"]}
        out.append(f"`{name}` over {len(runs)} seeds (mean ± std): colour words {stat('colour_unseen')}, the shape "
                   f"asked {stat('shape')}, off-white frame {stat('frame_offwhite')}; each colour at its worst seed: "
                   + " / ".join(f"{c} {_pct(v)}" for c, v in worst.items()) + _worst_by_form(runs) + ".")
    return "\n\n".join(out)


def _worst_by_form(runs: list[dict]) -> str:
    """Each colour at its worst seed on the new word orders alone, where the rows recorded it per form."""
    if not all("colour_per_colour_by_form" in q for q in runs):
        return ""
    order = [q["colour_per_colour_by_form"]["order"] for q in runs]
    return "; on the new word orders alone: " + " / ".join(f"{c} {_pct(min(o[c] for o in order))}" for c in order[0])


def colour_search() -> str:
    """Every variant benchmarks/colour_search.py trained or judged, one row each, with its machine; then the
    spread over seeds of the variants trained more than once."""
    rows = []
    records = load("colour_search.jsonl")
    for r in records:
        posthoc = [f"the post-hoc EMA of sigma_rel {r['posthoc_ema']:g}"] if "posthoc_ema" in r else []
        what = ", ".join(r["overrides"] + r["sample"] + posthoc) or "as the preset"
        wall = (f"{r['train_loop_s']:.0f} s training loop, {r['steps']} steps" if "train_loop_s" in r
                else "judged again, not timed")
        rows.append([f"`{r['name']}`: {r['preset']}, {what}", wall, _colour_quality(r["quality"]), describe(r),
                     _file("colour_search.jsonl")])
    table = _table(["what", "time (one core; rows run side by side compare only roughly)", "quality", "machine",
                    "file"], rows)
    seeds = _seed_summary(records)
    return table + (f"\n\n{seeds}" if seeds else "")


def colour_encoder() -> str:
    """What the frozen text encoder knows of colour words (colour_encoder.py): per prompt form, how often its pooled
    embedding is nearest the caption prompt of the colour asked."""
    d = load("colour_encoder.json")
    rows = []
    for form, r in d.items():
        if not isinstance(r, dict) or "nearest" not in r:
            continue
        words = d["synonyms"] if form == "synonym" else {c: c for c in r["nearest"]["heart"]}
        hearts = ", ".join(f"{words[c]}: {n}" for c, n in r["nearest"]["heart"].items())
        rows.append([f"`{r['template']}`", _pct(r["nearest_right"]), hearts, describe(d), _file("colour_encoder.json")])
    return (f"The frozen text encoder ({d['encoder']}) on its own, each prompt against the caption prompts "
            f"\"a {{colour}} {{shape}}\" of the six colours:\n\n"
            + _table(["what (prompt form)", "nearest is the colour asked", "nearest caption colour, hearts", "machine",
                      "file"], rows))


def colour_timing(name: str = "colour_timing.json") -> str:
    """The colour presets' whole commands as multiples of the quickstart timed just before them (colour_timing.py)."""
    d = load(name)
    rows = []
    for r in d["rows"]:
        budget = f"<= {r['budget_quickstarts']}x" if r["budget_quickstarts"] else "the unit"
        rows.append([f"`{r['command'].split(' --out')[0]}`", f"{r['wall_s']:.1f} s ({r['train_loop_s']:.1f} s "
                     f"training loop, {r['steps']} steps)", f"{r['quickstarts']:.2f}x", budget, describe(d),
                     _file(name)])
    return _table(["command", "whole command, 1 run", "quickstarts", "the issue's budget", "machine", "file"], rows)


def _pm(s: dict, digits: int = 1, pct: bool = False) -> str:
    """mean ± std (over seeds) of a summary entry."""
    if pct:
        return f"{_pct(s['mean'])} ± {_pct(s['std'])}"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def _shape(r: dict, slant: str, size: str, ks: str) -> str:
    return (f"slant {r[slant + 'mean']:+.3f} (std {r[slant + 'std']:.3f}, KS {r[slant + ks]:.3f}); size "
            f"{r[size + 'mean']:.2f} px (std {r[size + 'std']:.2f}, KS {r[size + ks]:.3f})")


def augment(name: str = "augment.json") -> str:
    """Non-leaking augmentation on a 500-image digits subset (benchmarks/augment.py): FD-clf and the leak check,
    augmentation off and on, mean ± std over seeds, with the real-digit references; for a file that validated
    during training, the best checkpoints by validation loss too."""
    d = load(name)
    st, f = d["setup"], _file(name)
    side_by_side = "side by side" in (d.get("pinned") or "")  # --parallel: each run on its own core
    m = describe(d, precision=d["runs"]["off"][0]["precision"],
                threads="1 thread per run, two runs side by side" if side_by_side else None)
    heldout = "fd_clf_heldout" in d["summary"]["off"]  # files before it had the train split's FD only
    rows = []
    for which, ckpt in (("summary", f"step {st['steps']}"), ("summary_best", "best by validation loss")):
        if which in d:  # summary_best: only where the runs validated during training
            rows += [_augment_row(d, which, setting, ckpt, heldout) + [m, f] for setting in ("off", "on")]
    for key, label in (("real_heldout", "real held-out digits (no leak looks like this)"),
                       ("real_augmented_labels_dropped",
                        "real digits augmented as in training, labels dropped (a full leak)")):
        r = d["references"][key]
        flat = {f"{a}_{s}": r[a][s] for a in ("slant", "size") for s in ("mean", "std", "ks_vs_real")}
        rows.append([label, ""] + [""] * heldout + ["", "", _shape(flat, "slant_", "size_", "ks_vs_real"), m, f])
    for key, label in (("training_subset", f"the {st['subset']} training digits themselves (a perfect copier)"),
                       ("other_train_images", f"{st['subset']} other training digits (a perfect model)")):
        if key in d.get("fd_heldout_floor", {}):
            rows.append([label, "", f"{d['fd_heldout_floor'][key]:.2f}", "", "", "", m, f])
    table = _table(["what", "FD-clf vs the train split"] + ["FD-clf vs the held-out split"] * heldout +
                   ["judged right", "near-copies of the 500",
                    "slant and size of the samples (KS vs the real digits)", "machine", "file"], rows)
    return (f"{table}\n\nEach run: `noisecraft train --preset {st['preset']}` on the first {st['subset']} training "
            f"digits for {st['steps']} steps of {st['batch_size']}, {st['samples_judged']} class-balanced samples at "
            f"the preset's sampler; whole benchmark {d['wall_s'] / 60:.0f} min." + _augment_val_loss(d) +
            _augment_verdicts(d, heldout))


def _augment_row(d: dict, which: str, setting: str, ckpt: str, heldout: bool) -> list[str]:
    """One setting's row: FD-clf (each seed's too), judged share, near-copies and shape, mean ± std over seeds."""
    st, s = d["setup"], d[which][setting]
    runs = [r if which == "summary" else r["best"] for r in d["runs"][setting]]
    label = "off" if setting == "off" else f"on: {', '.join(st['augment'])}, p = {st['augment_p']}"
    if which == "summary_best":
        ckpt += f" (steps {', '.join(str(r['step']) for r in runs)})"
    fds = [f"{_pm(s[k], digits=2)} ({_runs(len(runs))}: {', '.join(f'{r[k]:.2f}' for r in runs)})"
           for k in ("fd_clf", "fd_clf_heldout")[:1 + heldout]]
    what = f"augmentation {label}" + (f", {ckpt}" if "summary_best" in d else "")
    return [what, *fds, _pm(s["class_accuracy"], pct=True), _pm(s["near_copy_share"], pct=True),
            _shape(s, "slant_", "size_", "ks_vs_real")]


def _augment_val_loss(d: dict) -> str:
    """Validation loss (held-out digits) at the end and at its lowest, mean over seeds, where the file kept it."""
    if "val_loss" not in d["runs"]["off"][0]:
        return ""
    parts = []
    for setting in ("off", "on"):
        curves = [[v for _, v in r["val_loss"]] for r in d["runs"][setting]]
        end, low = [c[-1] for c in curves], [min(c) for c in curves]
        parts.append(f"{setting} {mean(end):.4f} ± {stdev(end):.4f} at the end, {mean(low):.4f} ± {stdev(low):.4f} "
                     f"at its lowest")
    return f" Validation loss on the held-out digits, mean ± std over seeds: {'; '.join(parts)}."


def _augment_verdicts(d: dict, heldout: bool) -> str:
    """The goal (FD lower by more than twice the larger seed std) for each reference and checkpoint."""
    out = []
    for label, ckpt in (("", "the last checkpoints"), ("_best", "the best checkpoints")):
        for ref, name in (("", "the train split"), ("_heldout", "the held-out split"))[:1 + heldout]:
            if f"fd_gap_off_minus_on{ref}{label}" not in d:
                continue
            gap, noise = d[f"fd_gap_off_minus_on{ref}{label}"], d[f"fd_seed_std_max{ref}{label}"]
            verdict = "met" if d[f"goal_fd_lower_beyond_seed_noise{ref}{label}"] else "not met"
            out.append(f"{ckpt}, FD-clf against {name}: off minus on {gap:.2f}, the larger seed std {noise:.2f}, "
                       f"**{verdict}**")
    return (" The goal (augmentation's FD lower by more than twice the seeds' std): " + "; ".join(out) + "."
            if out else "")


TABLES = {"augment": augment, "augment_2000": lambda: augment("augment_2000.json"),
          "augment_flow": lambda: augment("augment_flow.json"),
          "augment_flow_12000": lambda: augment("augment_flow_12000.json"),
          "quickstart": quickstart, "quickstart_details": quickstart_details, "sampling_quality": sampling_quality,
          "latent_digits64": latent_digits64, "laptop_presets": laptop_presets, "latent_vs_pixel": latent_vs_pixel,
          "other_measurements": other, "patch_speedup": patch_speedup, "editing": editing,
          "editing_matrix": editing_matrix, "fewstep": fewstep, "emoji_presets": emoji_presets,
          "colour_search": colour_search, "colour_timing": colour_timing, "colour_encoder": colour_encoder,
          "colour_timing_emoji32_text": lambda: colour_timing("colour_timing_emoji32_text.json"),
          "posthoc_ema": posthoc_ema, "recipes_compare": recipes_compare, "prompt_syntax": prompt_syntax, "lora": lora}


def render(name: str) -> str:
    return TABLES[name]()


# ---------------------------------------------------------------- the pages' rendered blocks


def rewrite_readme(readme: Path = README) -> None:
    """Rewrite the README's blocks (which must all be there), and any other page's, from the result files."""
    text = readme.read_text()
    for name in README_BLOCKS:
        if not block(name).search(text):
            raise SystemExit(f"{readme} has no <!-- {name}: begin --> ... <!-- {name}: end --> block")
    rewrite_blocks(render, TABLES)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readme", action="store_true",
                    help="rewrite the README's blocks (and any page's `<!-- NAME: begin/end -->` block) from the files")
    ap.add_argument("name", nargs="?", choices=sorted(TABLES), help="print one table")
    args = ap.parse_args()
    if args.readme:
        rewrite_readme()
    elif args.name:
        print(render(args.name))
    else:
        ap.print_help()


if __name__ == "__main__":
    main()
