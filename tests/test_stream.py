"""An image folder too large for memory streams through DataLoader workers and gives the very batches the
in-memory path gives (same indices, same flips), so training does not depend on which path was taken."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from noisecraft.config import DataConfig
from noisecraft.data import DeviceBatcher, FolderStream, StreamBatcher, load_dataset, load_train_data, make_batcher


def _folder(root, n_per_class=12, size=(20, 16)):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(n_per_class):  # not square: both paths resize and center-crop the same way
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_folder_gives_the_in_memory_batches(tmp_path, workers):
    cfg = DataConfig(dataset="folder", data_root=str(_folder(tmp_path)), image_size=12, val_size=4, hflip=True)
    memory = load_train_data(cfg)
    stream = load_train_data(DataConfig(**{**cfg.__dict__, "max_memory_mb": 0}))
    assert isinstance(stream, FolderStream) and not isinstance(memory, FolderStream)
    assert (stream.channels, stream.image_size, stream.num_classes, len(stream)) == (3, 12, 2, len(memory))
    a = DeviceBatcher(memory, 8, torch.device("cpu"), hflip=True, seed=5)
    b = make_batcher(stream, 8, torch.device("cpu"), hflip=True, seed=5, num_workers=workers)
    assert isinstance(b, StreamBatcher)
    for step in (0, 1, 2, 3, 7, 8):  # 20 images / 8: epochs wrap; the jump 3 -> 7 restarts the workers
        (xa, ya), (xb, yb) = a.batch(step), b.batch(step)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_rank_slices_of_a_streamed_batch_make_the_global_batch(tmp_path):
    stream = FolderStream(DataConfig(dataset="folder", data_root=str(_folder(tmp_path)), image_size=8, val_size=4))
    whole = StreamBatcher(stream, 8, torch.device("cpu"), num_workers=0).batch(3)[0]
    parts = [StreamBatcher(stream, 8, torch.device("cpu"), rank=r, world_size=2, num_workers=0).batch(3)[0]
             for r in range(2)]
    assert torch.equal(torch.cat(parts), whole)


def test_a_dropped_stream_batcher_ends_its_workers_at_once(tmp_path):
    """No reference cycle through the DataLoader: the workers end when the batcher goes, without waiting for the
    cyclic garbage collector (whose shutdown of a worker waits 5 s)."""
    import gc
    import multiprocessing

    stream = FolderStream(DataConfig(dataset="folder", data_root=str(_folder(tmp_path)), image_size=8, val_size=4))
    b = StreamBatcher(stream, 8, torch.device("cpu"), num_workers=1)
    before = set(multiprocessing.active_children())
    gc.disable()
    try:
        b.batch(0)
        workers = set(multiprocessing.active_children()) - before
        assert len(workers) == 1
        del b
        assert not any(w.is_alive() for w in workers)
    finally:
        gc.enable()


def test_training_on_a_streamed_folder(tmp_path, cli, tiny_args):
    root = _folder(tmp_path / "data", size=(16, 16))
    code, out, err = cli("train", "--dataset", "folder", "--data-root", root, "--out", tmp_path / "run", "--steps", 2,
                         "--data.max_memory_mb=0", "--data.num_workers=1", "--train.final_figures=false",
                         "--no-progress", *tiny_args)
    assert code == 0, err
    assert json.loads(out)["steps"] == 2
    # the held-out split is still loaded in memory for the validation loss
    assert len(load_dataset(DataConfig(dataset="folder", data_root=str(root), val_size=16), "val")) == 4
