"""The run directory, the one owner of its layout: where a run keeps its files, how to find the run from any path
inside it, what may be started in it (the resume rules), its typed log and its status. Torch-free, so the server
and the CLI read runs without loading a network.

    <run>/config.json                the resolved config
    <run>/checkpoints/last.safetensors, best.safetensors, step_N.safetensors (+ .json sidecars)
    <run>/log.jsonl, status.json, summary.json, samples/, *.png, eval/
    <run>/DATA_LICENSE.txt           the dataset's licence and attribution, when it has one (emoji: CC BY-SA 4.0)
    <run>/autoencoder/, latents.safetensors, text_embeddings.safetensors   (what a run depends on, kept with it)
    <run>/ema_snapshots/step_N.safetensors   post-hoc EMA profiles at step N (train.posthoc_ema)
    <run>/posthoc_ema/sweep.json     `noisecraft ema --sweep`'s result
    <run>/adapter/, prior.safetensors   a fine-tuning run's LoRA adapter (peft's layout) and prior images

A run directory is either new, or holds a run (its `config.json`). Starting a run where one already is refuses
with an error that names `--resume` and `--overwrite`; `--overwrite` deletes the old run's files first (by name:
nothing else in the folder); `--resume` continues from `checkpoints/last` with the run's saved config (only the
number of steps and the device may change), or starts again from step 0 with a clean log when no checkpoint was
written.

`log.jsonl` holds one strict-JSON record a line, each with a `kind` (train, val, eval) and a `step`.
`status.json` says whether the run is running, finished, interrupted or failed, rewritten atomically as it goes
(a run killed by SIGKILL stays "running" with a pid that no longer exists).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

from noisecraft.config import Config, apply_overrides, json_safe
from noisecraft.errors import UserError
from noisecraft.registry import DATASETS

# The names of what a run holds: no other module spells them (they ask a RunDir, or these constants).
CONFIG_FILE = "config.json"
DATA_LICENSE_FILE = "DATA_LICENSE.txt"  # written when the dataset has a licence to keep (the emoji set's CC BY-SA)
CHECKPOINTS = "checkpoints"
CHECKPOINT_NAMES = ("best", "last")
EMA_SNAPSHOTS = "ema_snapshots"  # snapshots of the post-hoc EMA profiles, one file a step
LOG_FILE, STATUS_FILE, SUMMARY_FILE = "log.jsonl", "status.json", "summary.json"
TRAIN_LOG = "train.log"  # the output of a run the web app started, written before the trainer's own files
SAMPLES, EVAL = "samples", "eval"  # sample grids by step; `noisecraft evaluate`'s default output
FINAL_GRID = "final.png"  # samples/ grid at the end of training (step grids are step_N.png)
REPORT_JSON, REPORT_MD = "report.json", "report.md"  # an evaluation's report, in eval/ or any folder given
AUTOENCODER_COPY = "autoencoder"  # a latent run's copy of its autoencoder, so the run alone samples
LATENTS_FILE = "latents.safetensors"  # a latent run's training set, encoded once
TEXT_EMBEDDINGS_FILE = "text_embeddings.safetensors"  # a text run's cached caption embeddings
POSTHOC_EMA = "posthoc_ema"  # the post-hoc EMA sweep's folder (sweep.json), read by explain
ADAPTER_DIR = "adapter"  # a fine-tuning run's adapter, in peft's layout
PRIOR_FILE = "prior.safetensors"  # a fine-tuning run's prior-preservation images, drawn once
# The figures a run draws at its top level (<name>.png): what --overwrite removes, and nothing else of the user's.
RUN_FIGURES = ("loss", "metrics", "forward_process", "reverse_process", "cross_attention", "reconstructions",
               "gan_losses", "fewstep")
RUN_STATES = ("running", "finished", "interrupted", "failed")
LOG_KINDS = ("train", "val", "eval")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- atomic writes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash at any moment leaves either the old or the new file whole."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def remove_stale_temp_files(directory: Path) -> None:
    """Temp files of atomic writes that a killed process left behind (`.<name>.<random>.tmp`)."""
    for tmp in Path(directory).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def truncate_log(path: Path, step: int) -> None:
    """Keep only the records of `path` (JSON lines) at or before `step`.

    The loop writes a step's records before its checkpoint, so after a crash the log may hold records past the
    checkpoint a resumed run starts from, and its last line may be torn; both are dropped so the resumed curve
    has no duplicates."""
    path = Path(path)
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step:
            kept.append(line)
    atomic_write_bytes(path, "".join(f"{line}\n" for line in kept).encode())


# ---------------------------------------------------------------- finding checkpoints and runs


def resolve_checkpoint(path: str | Path, prefer: str = "best") -> Path:
    """A run directory, a checkpoints/ directory, or a .safetensors/.json file -> the .safetensors file."""
    p = Path(path)
    if p.is_dir():
        for d in (p / CHECKPOINTS, p):
            for name in (prefer, "last", "best"):
                if (d / f"{name}.safetensors").is_file():
                    return d / f"{name}.safetensors"
        raise UserError(f"no checkpoint found in {p} (expected checkpoints/best.safetensors or last.safetensors)")
    if p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    if not p.is_file():
        raise UserError(f"checkpoint not found: {path}")
    return p


def content_hash(files: list[Path]) -> str:
    """sha256 of files' bytes (with their names when there are several: which bytes are which file)."""
    h = hashlib.sha256()
    for f in files:
        if len(files) > 1:
            h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def run_root(path: str | Path) -> Path:
    """The run directory of a path inside it: a run directory itself, its checkpoints/ folder, or a checkpoint
    file in either (a folder holding best.safetensors directly is its own run)."""
    p = Path(path)
    d = p if p.is_dir() else p.parent
    if d.name == CHECKPOINTS and not (d / CONFIG_FILE).is_file():
        return d.parent
    return d


class RunDir:
    """Paths of a run directory, and the files only the main process writes (the others get no-ops)."""

    def __init__(self, root: str | Path, main: bool = True):
        self.root = Path(root)
        self.main = main
        self.config = self.root / CONFIG_FILE
        self.ckpt_dir = self.root / CHECKPOINTS
        self.last = self.ckpt_dir / "last.safetensors"
        self.best = self.ckpt_dir / "best.safetensors"
        self.log_path = self.root / LOG_FILE
        self.status_path = self.root / STATUS_FILE
        self.summary_path = self.root / SUMMARY_FILE
        self.train_log = self.root / TRAIN_LOG
        self.samples = self.root / SAMPLES
        self.eval_dir = self.root / EVAL
        self.snapshot_dir = self.root / EMA_SNAPSHOTS
        self.autoencoder_copy = self.root / AUTOENCODER_COPY
        self.latents = self.root / LATENTS_FILE
        self.text_embeddings = self.root / TEXT_EMBEDDINGS_FILE
        self.posthoc_ema = self.root / POSTHOC_EMA
        self.adapter = self.root / ADAPTER_DIR
        self.prior = self.root / PRIOR_FILE
        self._log = None
        self._status: dict = {}

    def grid(self, step: int | None = None) -> Path:
        """The sample grid of `step` (samples/step_N.png), or the final one."""
        return self.samples / (f"step_{step:08d}.png" if step is not None else FINAL_GRID)

    def figure(self, name: str) -> Path:
        """A figure the run draws at its top level (one of RUN_FIGURES)."""
        if name not in RUN_FIGURES:
            raise ValueError(f"{name} is not one of the run's figures ({', '.join(RUN_FIGURES)})")
        return self.root / f"{name}.png"

    def step_ckpt(self, step: int) -> Path:
        return self.ckpt_dir / f"step_{step:08d}.safetensors"

    def snapshot(self, step: int) -> Path:
        return self.snapshot_dir / f"step_{step:08d}.safetensors"

    def snapshots(self) -> list[tuple[int, Path]]:
        """The post-hoc EMA snapshots as (step, file), in step order."""
        found = []
        for f in self.snapshot_dir.glob("step_*.safetensors"):
            try:
                found.append((int(f.stem[len("step_"):]), f))
            except ValueError:
                continue
        return sorted(found)

    def holds_run(self) -> bool:
        return self.config.is_file() or self.last.is_file()

    # ------------------------------------------------------------ what may start here

    def prepare(self, cfg: Config, resume: bool, overwrite: bool) -> tuple[Config, bool]:
        """The config to run and whether to resume from `last`, by the rules in the module docstring.
        With `overwrite`, the old run is deleted here (main process only)."""
        if resume and overwrite:
            raise UserError("pass either --resume (continue the run) or --overwrite (start it again), not both")
        if resume:
            if self.last.is_file():
                return cfg, True
            if not self.config.is_file():
                raise UserError(f"nothing to resume: {self.last} does not exist")
            # Stopped before its first checkpoint: run it again from step 0 with its saved config.
            warnings.warn(f"{self.root} has no checkpoint yet: starting it again from step 0", stacklevel=4)
            saved = Config.load(self.config)
            saved.train.steps = cfg.train.steps
            return saved, False
        if self.holds_run():
            if not overwrite:
                raise UserError(f"{self.root} already holds a run; pass --resume to continue it, --overwrite to "
                                f"delete it and start again, or choose another --out")
            if self.main:
                removed = self.clear()
                print(f"--overwrite: removed {', '.join(removed)} from {self.root}", file=sys.stderr)
        return cfg, False

    def resume_config(self, changed: list[str], steps: int | None, device: str | None, default: Config) -> Config:
        """The config a `--resume` continues with: the run's saved one (`default` when it saved none; `prepare`
        then says what may happen), with only `steps` and `device` changed. `changed` names the other options the
        user gave (refused)."""
        if changed:
            raise UserError(f"--resume continues the run with its saved config; only --steps and --device may "
                            f"change, not {changed[0]}")
        saved = Config.load(self.config) if self.config.is_file() else default
        return apply_overrides(saved, {k: v for k, v in (("train.steps", steps), ("train.device", device))
                                       if v is not None})

    @staticmethod
    def resumed(saved: Config, saved_step: int, steps: int) -> Config:
        """A checkpoint's config, trained on to `steps` (the one thing a resume may change besides the device)."""
        if steps < saved_step:
            raise UserError(f"--steps {steps} is below the step of the checkpoint ({saved_step})")
        saved.train.steps = steps
        return saved

    def clear(self) -> list[str]:
        """Delete what a run writes, by name (its folders, caches, the autoencoder copy, its config, log, status,
        summary and figures), nothing else: --out may name a directory that also holds the user's own files (a
        folder of images, a metadata.jsonl). Returns the names removed."""
        removed = []
        for d in (self.ckpt_dir, self.samples, self.eval_dir, self.snapshot_dir, self.autoencoder_copy,
                  self.posthoc_ema, self.adapter):
            if d.is_dir():
                shutil.rmtree(d)
                removed.append(d.name + "/")
        files = [self.config, self.log_path, self.status_path, self.summary_path, self.latents, self.text_embeddings,
                 self.prior, self.root / DATA_LICENSE_FILE, self.train_log,
                 *(self.figure(name) for name in RUN_FIGURES)]
        for f in files:
            if f.is_file():
                f.unlink()
                removed.append(f.name)
        return sorted(removed)

    def start(self, cfg: Config, start_step: int) -> None:
        """Create the directory, save the resolved config, drop log records past `start_step` (a crash may leave
        some, and temp files) and mark the run as running."""
        if not self.main:
            self._log = open(os.devnull, "w")
            return
        try:
            for d in (self.root, self.ckpt_dir, self.samples):
                d.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write_test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise UserError(f"cannot write to run directory {self.root}: {e.strerror}") from None
        cfg.save(self.config)
        self._write_data_license(cfg)
        truncate_log(self.log_path, start_step)
        remove_stale_temp_files(self.ckpt_dir)
        self._drop_snapshots_after(start_step)
        self._log = open(self.log_path, "a")
        self._status = {"state": "running", "step": start_step, "total_steps": cfg.train.steps,
                        "started": _now(), "pid": os.getpid(), "task": cfg.train.task}
        self.status()

    def _drop_snapshots_after(self, step: int) -> None:
        """Post-hoc EMA snapshots a crashed run wrote past the checkpoint it resumes from (written again as the
        run gets there), and torn temp files."""
        if self.snapshot_dir.is_dir():
            remove_stale_temp_files(self.snapshot_dir)
            for s, f in self.snapshots():
                if s > step:
                    f.unlink(missing_ok=True)

    def _write_data_license(self, cfg: Config) -> None:
        """DATA_LICENSE.txt: the licence and attribution of a dataset that has them (registry.DATASETS), which
        samples of a model trained on it may carry."""
        facts = DATASETS.get(cfg.data.dataset, "data.dataset").facts
        if "license" in facts:
            text = (f"This run was trained on the '{cfg.data.dataset}' dataset.\n{facts['attribution']}\n"
                    f"Licence: {facts['license']} ({facts['license_url']})\n")
            (self.root / DATA_LICENSE_FILE).write_text(text)

    # ------------------------------------------------------------ records

    def log(self, kind: str, step: int, **values) -> None:
        """Append one record `{"kind", "step", ...}` to log.jsonl (strict JSON: non-finite numbers as strings)."""
        if kind not in LOG_KINDS:
            raise ValueError(f"log kind must be one of {', '.join(LOG_KINDS)}, got {kind}")
        self._log.write(json.dumps(json_safe({"kind": kind, "step": step, **values}), allow_nan=False) + "\n")
        self._log.flush()

    def status(self, state: str | None = None, **fields) -> None:
        """Rewrite status.json with `state` and `fields` (step, images_per_s, error) updated."""
        if not self.main or not self._status:
            return
        if state is not None:
            if state not in RUN_STATES:
                raise ValueError(f"run state must be one of {', '.join(RUN_STATES)}, got {state}")
            self._status["state"] = state
        self._status.update(fields, updated=_now())
        try:
            atomic_write_bytes(self.status_path, (json.dumps(json_safe(self._status), indent=2) + "\n").encode())
        except OSError:
            pass  # the status is advisory: a full disk is reported by the checkpoint that matters

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # ------------------------------------------------------------ checkpoint files

    def keep_step_checkpoint(self, step: int, keep: int) -> None:
        """Hard-link `last` as step_N (no extra write) and drop all but the newest `keep` step checkpoints."""
        if keep <= 0:
            return
        target = self.step_ckpt(step)
        for suffix in (".safetensors", ".json"):
            src, dst = self.last.with_suffix(suffix), target.with_suffix(suffix)
            dst.unlink(missing_ok=True)
            try:
                os.link(src, dst)
            except OSError:  # file systems without hard links
                shutil.copyfile(src, dst)
        for old in sorted(self.ckpt_dir.glob("step_*.safetensors"))[:-keep]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)


def read_log(path: str | Path, kind: str | None = None) -> list[dict]:
    """The records of a log.jsonl (of one `kind` if given). Logs written before records had kinds are read by
    their keys: `val_loss` is val, `fd_clf` eval, anything else train."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
        if isinstance(rec, dict):
            rec.setdefault("kind", "val" if "val_loss" in rec else "eval" if "fd_clf" in rec else "train")
            records.append(rec)
    return [r for r in records if kind is None or r["kind"] == kind]
