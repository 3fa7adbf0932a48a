"""Image folders with transparency, grey images among colour ones, and images smaller than the model's size:
composited on data.background, replicated into RGB, upscaled, each with one counted warning per split."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from noisecraft.config import DataConfig
from noisecraft.data import FolderStream, load_dataset
from noisecraft.errors import UserError


def folder_cfg(root, **kw) -> DataConfig:
    return DataConfig(dataset="folder", data_root=str(root), val_size=0, **kw)  # val_size=0: every image trains


def load(root, **kw):
    """Every image of the folder (the train split, in its fixed random order) and the warnings' texts."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(folder_cfg(root, **kw), "train")
    return data, [str(w.message) for w in caught]


def rgb(root, name: str, colour=(10, 120, 200), size: int = 8):
    Image.new("RGB", (size, size), colour).save(root / name)


def half_transparent(root, name: str = "a.png", size: int = 8) -> np.ndarray:
    """RGBA: left half alpha 0 over black, right half (200, 100, 0) at alpha 128."""
    a = np.zeros((size, size, 4), np.uint8)
    a[:, size // 2:] = (200, 100, 0, 128)
    Image.fromarray(a).save(root / name)  # mode RGBA
    return a


def pixels(data, i: int) -> np.ndarray:
    return data.images[i].permute(1, 2, 0).numpy()  # (H, W, C)


def blend(c, alpha: int, bg: int) -> int:
    a = alpha / 255
    return int(np.round(np.float32(c) * np.float32(a) + np.float32(bg) * np.float32(1 - a)))


def test_transparent_pixels_are_composited_on_white(tmp_path):
    half_transparent(tmp_path)
    for i in range(4):
        rgb(tmp_path, f"b{i}.png")
    data, msgs = load(tmp_path)
    idx = [i for i in range(len(data)) if (pixels(data, i) != (10, 120, 200)).any()]
    assert len(idx) == 1
    px = pixels(data, idx[0])
    assert (px[:, :4] == 255).all()  # alpha 0 over black: exactly white, not black
    assert tuple(px[0, 6]) == (blend(200, 128, 255), blend(100, 128, 255), blend(0, 128, 255))
    assert [m for m in msgs if "transparency" in m] == [
        f"train split of {tmp_path}: 1 of 5 images had transparency: composited on white (data.background)"]


def test_a_given_background_is_honoured(tmp_path):
    half_transparent(tmp_path, size=4)
    data, msgs = load(tmp_path, background="#336699")
    px = pixels(data, 0)
    assert (px[:, :2] == (0x33, 0x66, 0x99)).all()
    assert tuple(px[0, 3]) == (blend(200, 128, 0x33), blend(100, 128, 0x66), blend(0, 128, 0x99))
    assert any("composited on #336699 (data.background)" in m for m in msgs)


def test_an_opaque_alpha_band_is_not_counted(tmp_path):
    Image.new("RGBA", (8, 8), (1, 2, 3, 255)).save(tmp_path / "a.png")
    data, msgs = load(tmp_path)
    assert tuple(pixels(data, 0)[0, 0]) == (1, 2, 3)
    assert not [m for m in msgs if "transparency" in m]


def test_grey_with_alpha_in_a_grey_folder_stays_grey(tmp_path):
    la = np.zeros((8, 8, 2), np.uint8)
    la[:, 4:] = (100, 128)
    Image.fromarray(la, "LA").save(tmp_path / "a.png")
    Image.new("L", (8, 8), 50).save(tmp_path / "b.png")
    data, msgs = load(tmp_path)
    assert data.channels == 1
    i = int(data.images[:, 0, 0, 0].eq(255).nonzero()[0])  # the LA image: transparent left half on white
    assert (data.images[i, 0, :, :4] == 255).all() and (data.images[i, 0, :, 4:] == blend(100, 128, 255)).all()
    assert any("1 of 2 images had transparency" in m for m in msgs)
    assert not [m for m in msgs if "greyscale" in m]


def test_palette_with_a_transparent_index(tmp_path):
    p = Image.new("P", (8, 8), 0)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.paste(1, (4, 0, 8, 8))  # right half red, left half index 0 (black, transparent)
    p.info["transparency"] = 0
    p.save(tmp_path / "a.png", transparency=0)
    data, msgs = load(tmp_path, background="black")
    assert (pixels(data, 0)[:, 4:] == (255, 0, 0)).all() and (pixels(data, 0)[:, :4] == 0).all()
    data, _ = load(tmp_path)
    assert (pixels(data, 0)[:, :4] == 255).all() and (pixels(data, 0)[:, 4:] == (255, 0, 0)).all()
    assert any("1 of 1 images had transparency: composited on black" in m for m in msgs)


def test_grey_images_in_an_rgb_folder_are_replicated(tmp_path):
    rgb(tmp_path, "a.png")
    Image.new("L", (8, 8), 77).save(tmp_path / "b.png")
    Image.new("1", (8, 8), 1).save(tmp_path / "c.png")
    Image.fromarray(np.full((8, 8), 100 * 257, np.uint16)).save(tmp_path / "d.png")  # I;16
    data, msgs = load(tmp_path)
    assert data.channels == 3
    colours = sorted(tuple(pixels(data, i)[0, 0]) for i in range(len(data)))
    assert colours == sorted([(10, 120, 200), (77, 77, 77), (255, 255, 255), (100, 100, 100)])
    assert [m for m in msgs if "greyscale" in m] == [
        f"train split of {tmp_path}: 3 of 4 images are greyscale in an RGB folder: converted to RGB"]


def test_small_images_are_upscaled_with_a_warning(tmp_path):
    for i in range(3):
        rgb(tmp_path, f"a{i}.png", size=16)
    rgb(tmp_path, "small.png", colour=(90, 90, 90), size=6)
    data, msgs = load(tmp_path, image_size=16)
    assert data.images.shape == (4, 3, 16, 16)
    assert (data.images == 90).all(dim=1).all(dim=(1, 2)).sum() == 1  # a flat colour stays flat when upscaled
    assert [m for m in msgs if "upscaled" in m] == [
        f"train split of {tmp_path}: 1 image(s) smaller than 16x16 were upscaled (bicubic); the model sees blurred "
        f"copies"]
    with pytest.raises(UserError, match="different sizes"):  # without --image-size: an error, as before
        load(tmp_path)


def test_a_bad_background_names_the_field(tmp_path):
    rgb(tmp_path, "a.png")
    for bad in ("not-a-colour", "#12345", ""):
        with pytest.raises(UserError, match=r"data\.background must be a CSS colour name or #rrggbb"):
            load(tmp_path, background=bad)
    with pytest.raises(UserError, match=r"data\.background"):
        FolderStream(folder_cfg(tmp_path, background="nope"))


def test_the_stream_warns_and_decodes_as_the_in_memory_loader(tmp_path):
    half_transparent(tmp_path)
    Image.new("L", (8, 8), 77).save(tmp_path / "b.png")
    rgb(tmp_path, "c.png", size=6)
    for i in range(3):
        rgb(tmp_path, f"d{i}.png")
    with pytest.warns(UserWarning) as caught:
        stream = FolderStream(folder_cfg(tmp_path, image_size=8, background="navy"))
    msgs = [str(w.message) for w in caught]
    where = f"train split of {tmp_path}"
    assert f"{where}: 1 of 6 images have an alpha channel or a transparent colour: composited on navy " \
           f"(data.background)" in msgs
    assert f"{where}: 1 of 6 images are greyscale in an RGB folder: converted to RGB" in msgs
    assert f"{where}: 1 image(s) smaller than 8x8 were upscaled (bicubic); the model sees blurred copies" in msgs
    assert len(msgs) == 3
    data, _ = load(tmp_path, image_size=8, background="navy")
    assert all((stream[i][0] == data.images[i]).all() for i in range(len(stream)))
    x = stream[[p.name for p in stream.files].index("a.png")][0]
    assert (x[:, :, :4] == torch.tensor([0, 0, 128])[:, None, None]).all()  # navy
