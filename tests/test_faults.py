"""Faults through the CLI: kill -9 and resume, SIGINT/SIGTERM, non-finite steps, a full disk, foreign or
incompatible checkpoints, a corpus of bad image folders and out-of-range flags.

Every bad input must end in one `error:` line with exit code 2 (or, where skipping is the sensible default, a
counted warning), never a traceback. Training subprocesses use a tiny model on a 16x16 image folder.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import noisecraft

SRC = Path(noisecraft.__file__).resolve().parent

# A tiny model on a 16x16 folder: each step takes milliseconds, so a run is mostly interpreter start-up.
TINY_FOLDER = [
    "--dataset", "folder", "--model.unet.base_channels=8", "--model.unet.channel_mult=1,2",
    "--model.unet.num_res_blocks=1", "--model.unet.attn_resolutions=", "--train.batch_size=8", "--train.log_every=2",
    "--train.ckpt_every=2",
    "--train.val_every=6", "--train.sample_every=100000", "--train.warmup_steps=2", "--train.keep_last=2",
    "--data.val_size=4", "--train.precision=fp32", "--train.final_figures=false", "--sample.steps=2", "--no-progress",
]


def write_images(folder: Path, n: int = 10, size=(16, 16), mode: str = "L", seed: int = 0, prefix: str = "img"):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        channels = {"L": 1, "RGB": 3, "RGBA": 4}.get(mode, 1)
        arr = (rng.random((size[1], size[0], channels)) * 255).astype(np.uint8)
        im = Image.fromarray(arr[..., 0] if channels == 1 else arr)
        if mode == "P":
            im = im.convert("RGB").convert("P")
        elif mode == "I;16":
            im = Image.fromarray((arr[..., 0].astype(np.uint16) * 257))
        im.save(folder / f"{prefix}{i:03d}.png")


def image_folder(root: Path, corrupt: bool = False) -> Path:
    """Two classes of ten 16x16 grayscale images (plus, if asked, a corrupt and a truncated file)."""
    for k, name in enumerate(("circle", "square")):
        write_images(root / name, 10, seed=k)
    if corrupt:
        (root / "circle" / "garbage.png").write_bytes(b"this is not a png")
        good = (root / "square" / "img000.png").read_bytes()
        (root / "square" / "truncated.png").write_bytes(good[: len(good) // 2])
    return root


def env() -> dict:
    e = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    e.pop("RANK", None)
    e.pop("WORLD_SIZE", None)
    return e


def train_cmd(out: Path, data: Path, steps: int, *more: str) -> list[str]:
    return [sys.executable, "-m", "noisecraft", "train", "--out", str(out), "--data-root", str(data),
            "--steps", str(steps), *TINY_FOLDER, *more]


def resume_cmd(out: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "noisecraft", "train", "--out", str(out), "--resume", "--steps", str(steps),
            "--no-progress"]


def run(cmd, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout)


def assert_clean_error(code: int, err: str, *needles: str) -> None:
    """Exit 2, one `error:` line naming what is wrong, no traceback."""
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])


def final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "checkpoints" / "last.safetensors"))


def loss_records(run_dir: Path) -> list[dict]:
    """The log without wall-clock fields: what must match between an interrupted and an uninterrupted run."""
    recs = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time", "img_per_s")} for r in recs]


def assert_same_run(a: Path, b: Path) -> None:
    sa, sb = final_state(a), final_state(b)
    assert sa.keys() == sb.keys()
    for k in sa:  # same seed, same steps, same machine: bit-identical on CPU
        assert torch.equal(sa[k], sb[k]), k
    assert loss_records(a) == loss_records(b)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 90) -> None:
    """Until `path` exists and is not empty."""
    t0 = time.time()
    while not (path.exists() and path.stat().st_size > 0):
        if proc.poll() is not None:
            raise AssertionError(f"process ended before {path} appeared: {proc.stderr.read()}")
        if time.time() - t0 > timeout:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.02)


# ---------------------------------------------------------------- crash safety (subprocesses)

STEPS = 24


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return image_folder(tmp_path_factory.mktemp("images") / "shapes", corrupt=True)


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory) -> Path:
    """One uninterrupted run: what every interrupted-and-resumed run must reproduce."""
    out = tmp_path_factory.mktemp("ref") / "run"
    p = run(train_cmd(out, folder, STEPS))
    assert p.returncode == 0, p.stderr
    # The corrupt and the truncated file are skipped with one counted warning line naming them, not a crash.
    warn = [line for line in p.stderr.splitlines() if "unreadable" in line]
    assert all(line.startswith("warning: skipped ") for line in warn), p.stderr
    assert sum(int(line.split()[2]) for line in warn) == 2, p.stderr  # train and val split together
    assert "garbage.png" in p.stderr and "truncated.png" in p.stderr and "Traceback" not in p.stderr
    return out


def kill_and_resume(folder: Path, out: Path, kills: int, seed: int) -> None:
    """Start the run, SIGKILL it at a random moment `kills` times (resuming after each), then let it finish."""
    rng = random.Random(seed)
    cmd = train_cmd(out, folder, STEPS)
    for _ in range(kills):
        proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Kill somewhere in training: once this process has touched the log (it opens or truncates it just
        # before its first step), plus a random delay.
        log, t0 = out / "log.jsonl", time.time()
        while not (log.exists() and log.stat().st_mtime > t0) and proc.poll() is None and time.time() - t0 < 90:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        cmd = resume_cmd(out, STEPS)
    p = run(cmd)
    assert p.returncode == 0, p.stderr
    assert not list((out / "checkpoints").glob(".*.tmp")), "temp files of a killed write were not cleaned up"


def test_kill9_and_resume_matches_uninterrupted_run(folder, reference, tmp_path):
    out = tmp_path / "run"
    kill_and_resume(folder, out, kills=1, seed=1)
    assert_same_run(reference, out)


@pytest.mark.slow(reason="six interpreter start-ups; one kill and resume is the default suite's check")
def test_kill9_five_times_and_resume_matches_uninterrupted_run(folder, reference, tmp_path):
    out = tmp_path / "run"
    kill_and_resume(folder, out, kills=5, seed=5)
    assert_same_run(reference, out)


def test_sigterm_saves_last_checkpoint_and_resume_matches(folder, reference, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(out, folder, STEPS), env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for(out / "log.jsonl", proc)  # the first record: the loop is running and handles the signal
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM at step" in err and "--resume" in err and "Traceback" not in err
    stopped_at = int(err.split("stopped by SIGTERM at step ")[1].split(":")[0])
    meta = json.loads((out / "checkpoints" / "last.json").read_text())
    assert meta["step"] == stopped_at < STEPS  # saved where it stopped, even between scheduled checkpoints
    p = run(resume_cmd(out, STEPS))
    assert p.returncode == 0, p.stderr
    assert_same_run(reference, out)


def test_sigint_saves_last_checkpoint(cli, tmp_path, monkeypatch):
    """Ctrl-C in the middle of step 3: the step finishes, `last` is saved at step 3, exit code 130."""
    import noisecraft.train.task as train_mod

    data = image_folder(tmp_path / "shapes")
    calls = {"n": 0}
    real_update = train_mod.ema_update

    def ema_update(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real_update(*args, **kwargs)

    monkeypatch.setattr(train_mod, "ema_update", ema_update)
    # Whatever handler was there before (SIG_IGN when pytest runs as a background job) must be back after.
    before = signal.getsignal(signal.SIGINT)
    code, _, err = cli("train", "--out", tmp_path / "run", "--data-root", data, "--steps", 20, *TINY_FOLDER)
    assert code == 130, err
    assert "stopped by SIGINT at step 3" in err
    assert json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())["step"] == 3
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_resume_before_first_checkpoint_restarts_from_step_0(cli, tmp_path):
    data = image_folder(tmp_path / "shapes")
    out = tmp_path / "run"
    code, _, err = cli("train", "--out", out, "--data-root", data, "--steps", 2, *TINY_FOLDER)
    assert code == 0, err
    # As if killed before the first checkpoint: config.json and a torn log line exist, no checkpoint.
    for f in (out / "checkpoints").iterdir():
        f.unlink()
    (out / "log.jsonl").write_text('{"step": 2, "loss": 0.5}\n{"step": 4, "lo')
    with pytest.warns(UserWarning, match="no checkpoint yet"):
        code, _, err = cli("train", "--out", out, "--resume", "--no-progress")
    assert code == 0, err
    assert [r["step"] for r in loss_records(out) if "loss" in r] == [2]  # the run's own record, nothing stale


def test_resume_truncates_log_past_the_checkpoint(tmp_path):
    from noisecraft.rundir import truncate_log

    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 2, "loss": 1}\n{"step": 4, "val_loss": 1}\n{"step": 6, "loss": 1}\n{"step": 8, "lo')
    truncate_log(log, 4)
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [2, 4]


# ---------------------------------------------------------------- numerical faults


def _nan_at(monkeypatch, bad_steps: set[int]):
    """Make the training loss NaN at the given (0-based) steps."""
    import noisecraft.train.diffusion as train_mod

    real = train_mod.diffusion_loss
    calls = {"n": 0}

    def loss(*args, **kwargs):
        value = real(*args, **kwargs)
        step, calls["n"] = calls["n"], calls["n"] + 1
        return value * float("nan") if step in bad_steps else value

    monkeypatch.setattr(train_mod, "diffusion_loss", loss)


def test_nonfinite_steps_are_skipped_with_a_warning(cli, tmp_path, monkeypatch):
    data = image_folder(tmp_path / "shapes")
    _nan_at(monkeypatch, {1, 4})
    with pytest.warns(RuntimeWarning, match=r"skipped 1 step\(s\) with a non-finite loss"):
        code, _, err = cli("train", "--out", tmp_path / "run", "--data-root", data, "--steps", 6, *TINY_FOLDER)
    assert code == 0, err
    recs = loss_records(tmp_path / "run")
    assert sum(r.get("nonfinite_steps", 0) for r in recs) == 2
    assert all(np.isfinite(r["loss"]) for r in recs if "loss" in r)
    state = final_state(tmp_path / "run")
    assert all(torch.isfinite(v).all() for v in state.values())


def test_repeated_nonfinite_steps_stop_and_keep_last_good_checkpoint(cli, tmp_path, monkeypatch):
    data = image_folder(tmp_path / "shapes")
    _nan_at(monkeypatch, set(range(4, 1000)))
    code, _, err = cli("train", "--out", tmp_path / "run", "--data-root", data, "--steps", 40,
                       "--train.max_nonfinite_steps=3", *TINY_FOLDER)
    # Stopped at the first log interval with 3 bad steps in a row (step 8); the checkpoint at step 6 holds the
    # weights of step 4, the last good step, since skipped steps change nothing.
    assert_clean_error(code, err, "diverged", "up to step 8", "last.safetensors (step 6)")
    from safetensors.torch import load_file

    state = final_state(tmp_path / "run")
    good = load_file(str(tmp_path / "run" / "checkpoints" / "step_00000004.safetensors"))
    assert all(torch.isfinite(v).all() for v in state.values())
    assert all(torch.equal(state[k], good[k]) for k in state if k.startswith(("net.", "optimizer.net.")))


def test_non_finite_weights_never_reach_a_checkpoint(cli, tmp_path, monkeypatch):
    """Weights that overflow (here: one set to inf during step 3) stop the run before the next checkpoint;
    the checkpoint on disk stays the last finite one."""
    import noisecraft.train.task as train_mod

    data = image_folder(tmp_path / "shapes")
    real_update, calls = train_mod.ema_update, {"n": 0}

    def ema_update(ema, model, decay):
        calls["n"] += 1
        if calls["n"] == 3:
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = float("inf")
        return real_update(ema, model, decay)

    monkeypatch.setattr(train_mod, "ema_update", ema_update)
    code, _, err = cli("train", "--out", tmp_path / "run", "--data-root", data, "--steps", 20, *TINY_FOLDER)
    assert_clean_error(code, err, "diverged", "not finite at step 4", "last.safetensors (step 2)")
    assert json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())["step"] == 2
    assert all(torch.isfinite(v).all() for v in final_state(tmp_path / "run").values())


def test_guarded_step_skips_fused_adamw_on_device():
    """The no-sync path (fused AdamW, as on GPUs): a non-finite step changes no weight, moment or counter."""
    from noisecraft.faults import grad_norm, guarded_step

    p = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.AdamW([p], lr=0.1, fused=True)
    p.grad = torch.ones(4)
    guarded_step(opt, torch.isfinite(grad_norm([p], 1.0)))
    before = (p.detach().clone(), opt.state[p]["exp_avg"].clone(), opt.state[p]["step"].clone())
    p.grad = torch.tensor([1.0, float("inf"), 1.0, 1.0])
    guarded_step(opt, torch.isfinite(grad_norm([p], 1.0)))
    after = (p.detach(), opt.state[p]["exp_avg"], opt.state[p]["step"])
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


# ---------------------------------------------------------------- disk and output directory


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 4-step run made in-process (checkpoints at steps 2 and 4)."""
    from noisecraft.cli import main

    root = tmp_path_factory.mktemp("trained")
    data = image_folder(root / "shapes")
    assert main(["train", "--out", str(root / "run"), "--data-root", str(data), "--steps", "4", *TINY_FOLDER]) == 0
    return root / "run"


def test_disk_full_while_checkpointing_keeps_previous_checkpoint(cli, trained, tmp_path, monkeypatch):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    before = (run_dir / "checkpoints" / "last.safetensors").read_bytes()
    real_fsync = os.fsync

    def fsync(fd):  # the disk fills up while the weights are written
        if ".safetensors" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    code, _, err = cli("train", "--out", run_dir, "--resume", "--steps", 8, "--no-progress")
    assert_clean_error(code, err, "could not write checkpoint", "No space left on device",
                       "kept the last checkpoint", "last.safetensors (step 4)")
    assert (run_dir / "checkpoints" / "last.safetensors").read_bytes() == before
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))


def test_file_size_limit_while_checkpointing_through_the_real_cli(trained, tmp_path):
    """The kernel refuses the write (RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC) in a real process."""
    import resource
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    before = (run_dir / "checkpoints" / "last.safetensors").read_bytes()

    def limit():  # in the child: files may not grow past 64 KiB (the log and config fit, a checkpoint does not)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    p = subprocess.run(resume_cmd(run_dir, 8), env=env(), capture_output=True, text=True, timeout=120,
                       preexec_fn=limit)
    assert_clean_error(p.returncode, p.stderr, "could not write checkpoint", "File too large",
                       "kept the last checkpoint", "(step 4)")
    assert (run_dir / "checkpoints" / "last.safetensors").read_bytes() == before
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))


def test_unwritable_output_directory(cli, tmp_path):
    data = image_folder(tmp_path / "shapes")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, _, err = cli("train", "--out", blocker / "run", "--data-root", data, "--steps", 2, *TINY_FOLDER)
    assert_clean_error(code, err, "cannot write to run directory", str(blocker / "run"))
    code, _, err = cli("sample", "--checkpoint", tmp_path / "nothing", "--out", blocker / "s")
    assert_clean_error(code, err, "checkpoint not found")


def test_sample_into_unwritable_directory(cli, trained, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, _, err = cli("sample", "--checkpoint", trained, "--out", blocker / "s", "--n", 2, "--steps", 2)
    assert_clean_error(code, err, "cannot create output directory")


# ---------------------------------------------------------------- checkpoints that are not ours


def _foreign_files(trained: Path, d: Path) -> dict[str, Path]:
    from safetensors.torch import load_file, save_file

    d.mkdir()
    good = trained / "checkpoints" / "last.safetensors"
    tensors = load_file(str(good))
    meta = json.loads((trained / "checkpoints" / "last.json").read_text())
    files = {}

    def put(name, data: bytes):
        files[name] = d / f"{name}.safetensors"
        files[name].write_bytes(data)

    put("random_bytes", os.urandom(4096))
    put("empty", b"")
    put("truncated", good.read_bytes()[:5000])
    save_file({"w": torch.zeros(2)}, str(d / "no_meta.safetensors"))
    files["no_meta"] = d / "no_meta.safetensors"
    save_file({"w": torch.zeros(2)}, str(d / "bad_json.safetensors"), metadata={"noisecraft": "{not json"})
    files["bad_json"] = d / "bad_json.safetensors"
    model = meta["config"]["model"]
    wrong_type = dict(meta, config=dict(meta["config"],
                                        model=dict(model, unet=dict(model["unet"], base_channels="wide"))))
    save_file(tensors, str(d / "bad_config.safetensors"), metadata={"noisecraft": json.dumps(wrong_type)})
    files["bad_config"] = d / "bad_config.safetensors"
    wider = dict(meta, config=dict(meta["config"], model=dict(model, unet=dict(model["unet"], base_channels=16))))
    save_file(tensors, str(d / "other_width.safetensors"), metadata={"noisecraft": json.dumps(wider)})
    files["other_width"] = d / "other_width.safetensors"
    return files


EXPECTED = {
    "random_bytes": "not a readable safetensors checkpoint",
    "empty": "not a readable safetensors checkpoint",
    "truncated": "not a readable safetensors checkpoint",
    "no_meta": "not a noisecraft checkpoint",
    "bad_json": "not a noisecraft checkpoint",
    "bad_config": "model.unet.base_channels expects an integer",
    "other_width": "weights do not match",
}


def test_foreign_and_incompatible_checkpoints(cli, trained, tmp_path):
    files = _foreign_files(trained, tmp_path / "ckpts")
    for name, path in files.items():
        code, _, err = cli("sample", "--checkpoint", path, "--out", tmp_path / "s", "--n", 1, "--steps", 1)
        assert_clean_error(code, err, EXPECTED[name], str(path))
    for name in ("random_bytes", "bad_config"):
        code, _, err = cli("info", "--checkpoint", files[name])
        assert_clean_error(code, err, EXPECTED[name])


def test_resume_from_foreign_checkpoint(cli, trained, tmp_path):
    import shutil

    files = _foreign_files(trained, tmp_path / "ckpts")
    for name in ("truncated", "other_width"):
        run_dir = tmp_path / f"run_{name}"
        shutil.copytree(trained, run_dir)
        shutil.copyfile(files[name], run_dir / "checkpoints" / "last.safetensors")
        code, _, err = cli("train", "--out", run_dir, "--resume", "--steps", 6, "--no-progress")
        assert_clean_error(code, err, EXPECTED[name])


def test_pickle_is_never_loaded(cli, tmp_path):
    """A pickle that would run code when unpickled is refused as a checkpoint, and the code never runs."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "model.safetensors"
    evil.write_bytes(pickle.dumps(Payload()))
    pt = tmp_path / "model.pt"
    torch.save({"state": Payload()}, pt)
    for path in (evil, pt):
        code, _, err = cli("sample", "--checkpoint", path, "--out", tmp_path / "s", "--n", 1)
        assert_clean_error(code, err, "not a readable safetensors checkpoint")
    assert not marker.exists()
    # Nothing in the package unpickles: no pickle.load(s), no numpy allow_pickle, and torch.load only with
    # weights_only=True (its restricted unpickler).
    for f in SRC.rglob("*.py"):
        text = f.read_text()
        for bad in ("pickle.load", "allow_pickle=True"):
            assert bad not in text, f"{f} uses {bad}"
        for call in text.split("torch.load(")[1:]:
            assert "weights_only=True" in call[:300], f"{f} calls torch.load without weights_only=True"


# ---------------------------------------------------------------- bad image folders


def test_bad_image_corpus(cli, tmp_path):
    base = ["train", "--steps", 2, *TINY_FOLDER]

    def train_on(folder: Path, *more):
        return cli(*base, "--out", tmp_path / f"run_{folder.name}", "--data-root", folder, *more)

    # Errors: one line naming the folder or the value.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_clean_error(*train_on(empty)[::2], "no images", str(empty))
    no_images = tmp_path / "no_images"
    (no_images / "cls").mkdir(parents=True)
    (no_images / "cls" / "notes.txt").write_text("hello")
    assert_clean_error(*train_on(no_images)[::2], "no images")
    all_bad = tmp_path / "all_bad"
    all_bad.mkdir()
    for i in range(3):
        (all_bad / f"x{i}.png").write_bytes(os.urandom(100))
    with pytest.warns(UserWarning, match="skipped 3 unreadable"):
        assert_clean_error(*train_on(all_bad)[::2], "none of the images", str(all_bad))
    sizes = tmp_path / "sizes"
    write_images(sizes, 6, size=(16, 16))
    write_images(sizes, 6, size=(24, 24), prefix="big")
    assert_clean_error(*train_on(sizes)[::2], "different sizes", "--image-size")
    code, _, err = train_on(sizes, "--image-size", 16)
    assert code == 0, err
    wide = tmp_path / "wide"
    write_images(wide, 6, size=(24, 16))
    assert_clean_error(*train_on(wide)[::2], "not square", "--image-size")
    tiny = tmp_path / "tiny"
    write_images(tiny, 3)
    assert_clean_error(*train_on(tiny)[::2], "at least 5 images")
    assert_clean_error(*train_on(tmp_path / "missing")[::2], "image folder not found")
    a_file = tmp_path / "a_file.png"
    a_file.write_text("")
    assert_clean_error(*train_on(a_file)[::2], "is not a folder")

    # Mixed modes at one size: everything becomes RGB, 16-bit grayscale is scaled rather than clipped.
    mixed = tmp_path / "mixed"
    for mode in ("L", "RGB", "RGBA", "P", "I;16"):
        write_images(mixed, 2, mode=mode, prefix=mode.replace(";", ""))
    code, _, err = train_on(mixed)
    assert code == 0, err
    assert json.loads((tmp_path / "run_mixed" / "config.json").read_text())["model"]["in_channels"] == 3

    # One class folder: a warning, then unconditional training.
    one = tmp_path / "one_class"
    write_images(one / "only", 8)
    with pytest.warns(UserWarning, match="one class folder"):
        code, _, err = train_on(one)
    assert code == 0, err
    assert json.loads((tmp_path / "run_one_class" / "config.json").read_text())["model"]["num_classes"] == 0


def test_sixteen_bit_grayscale_is_scaled(tmp_path):
    from noisecraft.config import DataConfig
    from noisecraft.data import load_dataset

    write_images(tmp_path / "i16", 10, mode="I;16")
    data = load_dataset(DataConfig(dataset="folder", data_root=str(tmp_path / "i16"), val_size=2), "train")
    assert data.channels == 1 and 100 < float(data.images.float().mean()) < 155  # not clipped to 255


# ---------------------------------------------------------------- out-of-range flags


@pytest.mark.parametrize("argv, needle", [
    (["--steps", "-5"], "train.steps must be > 0"),
    (["--steps", "0"], "train.steps must be > 0"),
    (["--steps", "ten"], "invalid int value"),
    (["--train.foo=1"], "unknown config key 'train.foo'"),
    (["--train.lr=abc"], "train.lr expects a number"),
    (["--train.lr=nan"], "train.lr must be in (0, 10]"),
    (["--train.lr=1e38"], "train.lr must be in (0, 10]"),
    (["--train.grad_clip=nan"], "train.grad_clip must be >= 0"),
    (["--train.batch_size=1.5"], "train.batch_size expects an integer"),
    (["--train.log_every=0"], "train.log_every must be > 0"),
    (["--train.ckpt_every=-1"], "train.ckpt_every must be > 0"),
    (["--train.keep_last=-1"], "train.keep_last must be >= 0"),
    (["--train.hflip=maybe"], "unknown config key"),
    (["--data.hflip=maybe"], "data.hflip expects true/false"),
    (["--image-size", "4"], "data.image_size must be >= 8"),
    (["--preset", "nope"], "invalid choice"),
    (["--train.precision=fp8"], "train.precision must be one of"),
    (["--model.unet.channel_mult=1,0"], "channel_mult"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--train.lr"], "needs a value"),
    (["stray"], "unexpected argument 'stray'"),
])
def test_bad_train_flags(cli, tmp_path, argv, needle):
    code, _, err = cli("train", "--out", tmp_path / "run", "--dataset", "folder", "--data-root", tmp_path, *argv)
    assert_clean_error(code, err, needle)
    assert not (tmp_path / "run").exists()


def test_bad_resume_flags(cli, trained, tmp_path):
    assert_clean_error(*cli("train", "--out", tmp_path / "nothing", "--resume")[::2], "nothing to resume")
    assert_clean_error(*cli("train", "--out", trained, "--resume", "--seed", 3)[::2], "not --seed")
    assert_clean_error(*cli("train", "--out", trained, "--resume", "--train.lr=1")[::2], "not --train.lr=1")
    assert_clean_error(*cli("train", "--out", trained, "--resume", "--steps", 2)[::2], "below the step")
    assert_clean_error(*cli("train", "--out", trained, "--steps", 8)[::2], "already holds a run")


@pytest.mark.parametrize("argv, needle", [
    (["--n", "0"], "n must be > 0"),
    (["--n", "-3"], "n must be > 0"),
    (["--steps", "-1"], "steps must be > 0"),
    (["--batch-size", "0"], "batch_size must be > 0"),
    (["--sampler", "bogus"], "invalid choice"),
    (["--guidance", "nan"], "guidance must be a finite number"),
    (["--guidance-interval", "5,1"], "guidance_interval must be two noise levels"),
    (["--guidance-interval", "inf,inf"], "guidance_interval must be two noise levels"),
    (["--guidance-interval", "x"], "expects a number"),
    (["--precision", "fp8"], "invalid choice"),
    (["--class", "99"], "class 99 is out of range"),
    (["--device", "tpu"], "unknown device"),
    (["--extra", "1"], "unexpected argument"),
])
def test_bad_sample_flags(cli, trained, tmp_path, argv, needle):
    code, _, err = cli("sample", "--checkpoint", trained, "--out", tmp_path / "s", "--steps", 2, *argv)
    assert_clean_error(code, err, needle)


# ---------------------------------------------------------------- reproducibility


def test_same_seed_same_samples_whatever_batch_size_or_n(cli, trained, tmp_path):
    from PIL import Image

    def images(out, *argv):
        code, _, err = cli("sample", "--checkpoint", trained, "--out", tmp_path / out, "--steps", 3,
                           "--sampler", "ddpm", "--class", 0, *argv)
        assert code == 0, err
        return [np.asarray(Image.open(p)) for p in sorted((tmp_path / out).glob("0*.png"))]

    a = images("a", "--seed", 7, "--n", 5, "--batch-size", 2)
    b = images("b", "--seed", 7, "--n", 5, "--batch-size", 2)
    c = images("c", "--seed", 7, "--n", 3, "--batch-size", 3)
    d = images("d", "--seed", 8, "--n", 5, "--batch-size", 5)
    assert (len(a), len(b), len(c), len(d)) == (5, 5, 3, 5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))  # same seed: bit-identical
    assert all(np.array_equal(x, y) for x, y in zip(a[:3], c, strict=True))  # image i: whatever batch size or n
    assert all(np.array_equal(x, y) for x, y in zip(a[1:], d[:4], strict=True))  # seed 8 image 0 is seed 7 image 1
