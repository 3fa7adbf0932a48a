"""data.balance=colour: images of rare dominant colours are drawn more often, each epoch exactly repeats[i] times."""
import pytest
import torch

from noisecraft.config import Config, DataConfig
from noisecraft.data import ImageData, draw_repeats, make_batcher
from noisecraft.errors import UserError


def coloured(counts: dict) -> ImageData:
    """Images filled with one colour each: `counts` maps an RGB triple to how many."""
    images = torch.cat([torch.tensor(rgb, dtype=torch.uint8).view(1, 3, 1, 1).repeat(n, 1, 8, 8)
                        for rgb, n in counts.items()])
    return ImageData(images, None, [], "test")


def test_rare_colours_repeat_by_the_square_root_of_their_rarity_capped():
    data = coloured({(230, 30, 30): 36, (30, 60, 230): 9, (30, 200, 40): 1})  # red, blue, green
    repeats = draw_repeats(data, "colour")
    assert repeats[:36].eq(1).all()  # the commonest colour: once
    assert repeats[36:45].eq(2).all()  # 4 times rarer: sqrt(4) = 2
    assert repeats[45:].eq(4).all()  # 36 times rarer: sqrt(36) = 6, capped at 4
    assert draw_repeats(data, "none") is None


def test_an_epoch_draws_each_image_its_repeats_and_resumes_exactly():
    data = coloured({(230, 30, 30): 12, (30, 60, 230): 3})
    repeats = draw_repeats(data, "colour")
    batcher = make_batcher(data, 6, torch.device("cpu"), seed=3, repeats=repeats)
    draws = torch.cat([batcher.indices(s) for s in range(3)])  # 12 + 3 * 2 = 18 draws = one epoch
    assert torch.bincount(draws, minlength=15).tolist() == repeats.tolist()
    again = make_batcher(data, 6, torch.device("cpu"), seed=3, repeats=repeats)
    assert torch.equal(again.indices(2), batcher.indices(2))  # a pure function of (seed, step)


def test_balance_refuses_grey_images_and_unknown_names():
    grey = ImageData(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), None, [], "test")
    with pytest.raises(UserError, match="colour images"):
        draw_repeats(grey, "colour")
    with pytest.raises(UserError, match="data.balance"):
        Config(data=DataConfig(balance="hue")).validate()


def test_balance_refuses_a_folder_streamed_from_disk(tmp_path):
    from PIL import Image

    from noisecraft.data import FolderStream

    for i in range(6):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / f"{i}.png")
    stream = FolderStream(DataConfig(dataset="folder", data_root=str(tmp_path), val_size=1))
    with pytest.raises(UserError, match="streamed from disk"):
        draw_repeats(stream, "colour")
    with pytest.raises(UserError, match="streamed from disk"):
        make_batcher(stream, 2, torch.device("cpu"), repeats=torch.ones(len(stream), dtype=torch.long))
