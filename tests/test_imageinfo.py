"""The `parameters` PNG text chunk: written as the diffusion web UIs write it, read back exactly, printed by
`noisecraft info IMAGE.png`."""
from __future__ import annotations

from PIL import Image

from noisecraft.imageinfo import format_parameters, parse_parameters, png_info, read_parameters


def test_parameters_text_follows_the_web_ui_convention_and_parses_back():
    s = {"prompt": "a seven, bold: leaning \"right\"", "negative_prompt": "blurry", "steps": 20, "sampler": "dpmpp-2m",
         "guidance": 1.5, "guidance_interval": "2.0,inf", "seed": 7, "index": 2, "image_seed": 9, "size": "28x28",
         "model": "runs/digits, v2", "model_step": 800}
    text = format_parameters(s)
    assert text.splitlines()[0] == s["prompt"] and text.splitlines()[1] == "Negative prompt: blurry"
    assert text.splitlines()[2].startswith('Steps: 20, Sampler: dpmpp-2m, Guidance: 1.5, Guidance interval: "2.0,inf"')
    assert parse_parameters(text) == s


def test_png_chunk_round_trips_unicode_and_noisecraft_info_prints_it(tmp_path, cli):
    s = {"prompt": "ein Vogel 🐦 — 鳥", "steps": 4, "seed": 0, "index": 0}
    path = tmp_path / "x.png"
    Image.new("L", (4, 4)).save(path, pnginfo=png_info(s))
    assert parse_parameters(read_parameters(path)) == s
    code, out, _ = cli("info", path)
    assert code == 0 and out == format_parameters(s) + "\n"


def test_info_on_a_png_without_parameters_or_not_a_png_is_a_one_line_error(tmp_path, cli):
    Image.new("L", (4, 4)).save(tmp_path / "plain.png")
    (tmp_path / "fake.png").write_text("not an image")
    assert read_parameters(tmp_path / "plain.png") is None
    for name, needle in (("plain.png", "no `parameters` text chunk"), ("fake.png", "cannot read"),
                         ("missing.png", "cannot read")):
        code, _, err = cli("info", tmp_path / name)
        assert code == 2 and needle in err and err.count("\n") == 1, err
