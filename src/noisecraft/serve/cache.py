"""Loaded pipelines, one per checkpoint file, kept while they fit a memory budget (least recently used dropped).

A checkpoint is keyed by its path and modification time: a run that writes a new `best` is loaded again on the
next request, and the old weights go. Two requests for a model not yet loaded load it once.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from noisecraft.rundir import resolve_checkpoint
from noisecraft.pipeline import Pipeline, load_pipeline

Key = tuple[str, int]  # (checkpoint path, mtime in ns)


def pipeline_bytes(pipe: Pipeline) -> int:
    """Memory the pipeline's weights and buffers hold."""
    module = getattr(pipe.denoiser, "net", pipe.denoiser)
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


class PipelineCache:
    def __init__(self, max_bytes: int, device: str = "auto",
                 loader: Callable[[str, str], Pipeline] = lambda path, device: load_pipeline(path, device)):
        self.max_bytes, self.device, self.loader = max_bytes, device, loader
        self._items: OrderedDict[Key, tuple[Pipeline, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[Key, threading.Lock] = {}

    @staticmethod
    def key(run_dir: Path) -> Key:
        """Which checkpoint of a run is served (`best`, else `last`), as a cache key. Raises UserError."""
        ckpt = resolve_checkpoint(run_dir, "best")
        return str(ckpt), ckpt.stat().st_mtime_ns

    def get(self, run_dir: Path) -> tuple[Key, Pipeline]:
        key = self.key(run_dir)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return key, self._items[key][0]
            load_lock = self._loading.setdefault(key, threading.Lock())
        with load_lock:  # one load per checkpoint; other models stay servable meanwhile
            with self._lock:
                if key in self._items:
                    return key, self._items[key][0]
            pipe = self.loader(key[0], self.device)
            with self._lock:
                self._insert(key, pipe)
                self._loading.pop(key, None)
        return key, pipe

    def _insert(self, key: Key, pipe: Pipeline) -> None:
        for old in [k for k in self._items if k[0] == key[0]]:  # the same file, rewritten since
            del self._items[old]
        self._items[key] = (pipe, pipeline_bytes(pipe))
        while len(self._items) > 1 and self.used_bytes() > self.max_bytes:
            self._items.popitem(last=False)  # jobs still sampling with it keep their reference

    def used_bytes(self) -> int:
        return sum(size for _, size in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Key) -> bool:
        return key in self._items
