"""What keeps a long training run alive: graceful stop on SIGINT/SIGTERM, skipping steps whose gradients are
not finite, a log that a resumed run continues without duplicates, and disk errors turned into one clear line.

The trainer calls these between steps; none of them syncs the device every step.
"""
from __future__ import annotations

import errno
import signal
import threading
import warnings

import torch

from noisecraft.errors import UserError

# OSErrors that mean "the disk or its permissions", not a bug: reported as `error:` lines, exit code 2.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


class GracefulStop:
    """SIGINT and SIGTERM set `signum` instead of killing the process, so the training loop can finish its
    step, save `last` and exit; a checkpoint is never half-taken. A second SIGINT (Ctrl-C twice) raises
    KeyboardInterrupt at once; atomic writes still leave the previous checkpoint intact.

    Used as a context manager (which always restores the previous handlers) around `arm()` ... `release()`,
    the span of the training loop: before and after it the signals act as usual. Handlers can only be
    installed from the main thread; elsewhere this is a no-op."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def arm(self) -> None:
        if threading.current_thread() is threading.main_thread() and not self._previous:
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)

    def release(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def __enter__(self) -> "GracefulStop":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""


def grad_norm(parameters, max_norm: float) -> torch.Tensor:
    """Total L2 norm of the gradients (a device scalar), clipping them to `max_norm` when it is > 0."""
    params = [p for p in parameters if p.grad is not None]
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    if not params:
        return torch.zeros(())
    norms = torch._foreach_norm([p.grad.detach() for p in params])
    return torch.linalg.vector_norm(torch.stack(norms))


def guarded_step(optimizer: torch.optim.Optimizer, finite: torch.Tensor) -> None:
    """`optimizer.step()` unless `finite` (a device bool scalar) is False, in which case nothing changes: not
    the weights, not the moments, not the step count.

    Fused Adam/AdamW skip on the device through `found_inf` (the mechanism `torch.amp.GradScaler` uses), so a
    GPU run needs no host sync here; other optimizers read the flag on the host, which costs nothing on CPU.
    Under DDP the gradients are already all-reduced, so every rank takes the same decision."""
    if all(group.get("fused") for group in optimizer.param_groups):
        optimizer.found_inf = (~finite).to(torch.float32)
        optimizer.step()
    elif bool(finite):
        optimizer.step()


class NonFiniteMonitor:
    """Counts steps skipped for a non-finite loss or gradient, on the device (no per-step sync). `check`
    (called at log and checkpoint time, where the trainer syncs anyway) warns with the count and raises a
    UserError once `patience` consecutive steps were bad."""

    def __init__(self, patience: int, device: torch.device):
        self.patience = patience
        self.count = torch.zeros((), dtype=torch.long, device=device)  # bad steps since the last check
        self.streak = torch.zeros((), dtype=torch.long, device=device)  # consecutive bad steps now
        self.longest = torch.zeros((), dtype=torch.long, device=device)  # longest streak since the last check
        self.total = 0

    def update(self, finite: torch.Tensor) -> None:
        bad = (~finite).long()
        self.count += bad
        self.streak.add_(1).mul_(bad)
        torch.maximum(self.longest, self.streak, out=self.longest)

    def check(self, step: int, last_good: str) -> int:
        """The number of bad steps since the last check; warns when there were any."""
        count, longest = int(self.count), int(self.longest)
        self.count.zero_()
        self.longest.copy_(self.streak)
        if not count:
            return 0
        self.total += count
        if longest >= self.patience:
            raise UserError(
                f"training diverged: {longest} consecutive steps up to step {step} had a non-finite loss or "
                f"gradient; stopped, keeping the last good checkpoint ({last_good}); try a lower --train.lr, "
                f"--train.grad_clip=1 or --train.precision=fp32")
        warnings.warn(f"skipped {count} step(s) with a non-finite loss or gradient up to step {step} "
                      f"({self.total} in this run)", RuntimeWarning, stacklevel=2)
        return count


def all_finite(*modules: torch.nn.Module) -> bool:
    """True when every parameter of `modules` is finite (one host sync; called before writing a checkpoint)."""
    flags = [torch.isfinite(p).all() for m in modules for p in m.parameters()]
    return bool(torch.stack(flags).all()) if flags else True


def disk_error(e: OSError, what: str) -> UserError | None:
    """A UserError for out-of-space / read-only / permission errors, None for anything else (a real bug)."""
    if e.errno not in DISK_ERRNOS:
        return None
    where = f" ({e.filename})" if e.filename else ""
    return UserError(f"{what}{where}: {e.strerror or e}")
