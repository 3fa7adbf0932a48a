"""What colour samples are judged by, on the pixels: both main colours of an image, the background's frame, and the
shape drawn (evaluate.shapes), checked on images whose answer is known by construction and on the real emoji."""
import pytest
import torch

from noisecraft.captions import COLOURS, dominant_colour, second_colour
from noisecraft.evaluate.shapes import ShapeJudge, frame_offwhite_share

RED, BLUE, WHITE = (230, 30, 30), (30, 60, 230), (255, 255, 255)


def canvas(n=1, size=32, colour=WHITE) -> torch.Tensor:
    return torch.tensor(colour, dtype=torch.uint8).view(1, 3, 1, 1).repeat(n, 1, size, size)


def paint(x: torch.Tensor, mask: torch.Tensor, colour) -> torch.Tensor:
    x = x.clone()
    x[:, :, mask] = torch.tensor(colour, dtype=torch.uint8).view(1, 3, 1)
    return x


def disc(size=32, r=12) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 <= r * r


def square(size=32, half=12) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.bool)
    m[size // 2 - half:size // 2 + half, size // 2 - half:size // 2 + half] = True
    return m


def test_second_colour_names_the_other_half_and_none_for_one_colour():
    left = torch.zeros(32, 32, dtype=torch.bool)
    left[4:28, 4:16] = True
    right = torch.zeros_like(left)
    right[4:28, 16:24] = True  # two thirds red, one third blue
    two = paint(paint(canvas(), left, RED), right, BLUE)
    one = paint(canvas(), left | right, RED)
    assert dominant_colour(two).tolist() == [COLOURS.index("red")]
    assert second_colour(two).tolist() == [COLOURS.index("blue")]
    assert second_colour(one).tolist() == [-1]
    tiny = torch.zeros_like(left)
    tiny[4:28, 16:18] = True  # blue on 2 of 14 columns of ink: under the second colour's share
    assert second_colour(paint(paint(canvas(), left, RED), tiny, BLUE)).tolist() == [-1]


def test_two_coloured_emoji_get_a_caption_naming_both():
    from noisecraft.emoji import caption_texts

    record = {"name": "tram car", "colour": "red", "second_colour": "blue", "subgroup": "transport-ground",
              "group": "Travel & Places"}
    assert "a red and blue tram car" in caption_texts(record)
    assert not any("blue" in t for t in caption_texts({**record, "second_colour": None}))


def test_colour_synonyms_add_one_caption_only_when_asked():
    from noisecraft.emoji import caption_texts

    record = {"name": "red heart", "colour": "red", "second_colour": None, "subgroup": "heart",
              "group": "Smileys & Emotion"}
    assert caption_texts(record, synonyms=True) == caption_texts(record) + ["a scarlet heart emoji"]


def test_frame_share_counts_only_the_border_pixels_off_white():
    x = canvas(2)
    x[0, :, 0, :] = 0  # image 0: its whole top row black (32 of the frame's 348 pixels)
    x[1, :, 16, 16] = 0  # image 1: a centre pixel, outside the frame
    assert frame_offwhite_share(x, width=3) == pytest.approx(32 / (2 * (32 * 32 - 26 * 26)))
    x[1, :, 31, 31] = 250  # 5 levels off white: within the tolerance
    assert frame_offwhite_share(x, width=3, tol=8) == pytest.approx(32 / (2 * (32 * 32 - 26 * 26)))


def test_shape_judge_names_drawn_shapes_and_refuses_noise():
    judge = ShapeJudge.from_examples({"circle": paint(canvas(3), disc(), RED),
                                      "square": paint(canvas(3), square(), BLUE)})
    drawn = torch.cat([paint(canvas(), disc(r=11), BLUE), paint(canvas(), square(half=11), RED)])
    assert judge.judge(drawn) == ["circle", "square"]
    noise = torch.randint(0, 256, (1, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    assert judge.judge(noise) == [None]  # every pixel drawn: overlaps neither outline enough
    assert judge.judge(canvas()) == [None]  # nothing drawn


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_real_hearts_circles_and_squares_pass_the_shape_judge(openmoji):
    from noisecraft.config import preset
    from noisecraft.emoji import shape_examples

    examples = shape_examples(preset("emoji32-text").data)
    judge = ShapeJudge.from_examples(examples)
    for shape, images in examples.items():
        assert len(images) >= 5
        assert judge.judge(images) == [shape] * len(images)
