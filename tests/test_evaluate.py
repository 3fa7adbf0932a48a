"""Evaluation: metric arithmetic against independent references and closed forms, the Inception feature
pipeline on an uninitialised network, the offline classifier, and the evaluate/train-classifier commands."""
import json

import numpy as np
import pytest
import torch

from noisecraft.evaluate.frechet import (
    frechet_distance,
    gaussian_stats,
    inception_score,
    kernel_distance,
    mmd2_unbiased,
    polynomial_kernel,
)
from noisecraft.evaluate.prdc import precision_recall

# ---------------------------------------------------------------- Fréchet distance


def _fid_scipy(mu1, s1, mu2, s2):
    """The pytorch-fid / original TTUR formula: scipy's matrix square root of S1 S2."""
    from scipy import linalg

    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    covmean = covmean.real
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


@pytest.mark.parametrize("dim, n", [(8, 500), (64, 300)])
def test_frechet_distance_matches_scipy_sqrtm(dim, n):
    rng = np.random.default_rng(dim)
    a = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim))
    b = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) * 0.7 + 0.3
    sa, sb = gaussian_stats(a), gaussian_stats(b)
    ref = _fid_scipy(sa.mu, sa.sigma, sb.mu, sb.sigma)
    assert frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(sa.mu, sa.sigma, sa.mu, sa.sigma) == pytest.approx(0, abs=1e-8 * np.trace(sa.sigma))


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    # Diagonal (commuting) covariances: d^2 = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    # Same covariance rotated: a pure mean shift costs exactly |mu1 - mu2|^2.
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    s = q @ np.diag(a) @ q.T
    assert frechet_distance(mu1, s, mu2, s) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-8)
    # Scaled covariance c^2 S: tr(S) + c^2 tr(S) - 2 c tr(S) = (1 - c)^2 tr(S).
    assert frechet_distance(mu1, s, mu1, 4 * s) == pytest.approx(np.trace(s), rel=1e-8)


def test_frechet_of_samples_converges_to_closed_form():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200_000, 3))
    y = rng.normal(size=(200_000, 3)) * np.array([2.0, 1.0, 0.5]) + np.array([1.0, 0, 0])
    expected = 1.0 + (2 - 1) ** 2 + 0 + (0.5 - 1) ** 2
    assert frechet_distance(*_musig(x), *_musig(y)) == pytest.approx(expected, abs=0.03)


def _musig(x):
    s = gaussian_stats(x)
    return s.mu, s.sigma


@pytest.mark.parametrize("n", [2, 10, 40, 100])
def test_frechet_from_fewer_samples_than_dimensions_matches_scipy_and_the_full_covariance(n):
    """The samples'-space route (n <= D) against scipy's sqrtm on the full covariances, and the D x D route (n > D)."""
    from noisecraft.evaluate.frechet import frechet_distance_features

    rng = np.random.default_rng(n)
    d = 64
    ref_feats = rng.normal(size=(300, d)) @ rng.normal(size=(d, d)) * 0.3
    feats = rng.normal(size=(n, d)) * 1.5 + 0.2
    a, ref = gaussian_stats(feats), gaussian_stats(ref_feats)
    want = _fid_scipy(a.mu, a.sigma, ref.mu, ref.sigma)
    assert frechet_distance_features(feats, ref) == pytest.approx(want, rel=1e-6)
    assert frechet_distance_features(torch.from_numpy(feats).float(), ref) == pytest.approx(want, rel=1e-4)
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance_features(feats[:, :10], ref)


def test_frechet_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# ---------------------------------------------------------------- KID and IS


def test_mmd2_unbiased_matches_explicit_sums():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(7, 4)), rng.normal(size=(7, 4)) + 0.5
    k = lambda a, b: (a @ b / 4 + 1) ** 3  # noqa: E731
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    got = mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(x, y), polynomial_kernel(y, y))
    assert got == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_kid_matches_torch_fidelity_and_is_near_zero_for_one_distribution():
    from torch_fidelity.metric_kid import kid_features_to_metric

    rng = np.random.default_rng(3)
    a = torch.from_numpy(rng.normal(size=(300, 16)))
    b = torch.from_numpy(rng.normal(size=(250, 16)) * 1.3 + 0.2)
    ours = kernel_distance(a, b, subsets=20, subset_size=100)
    ref = kid_features_to_metric(a, b, kid_subsets=20, kid_subset_size=100, verbose=False)
    assert ours["mean"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-10)
    assert ours["std"] == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-10)
    same = kernel_distance(a[:150], a[150:], subsets=20, subset_size=100)
    assert abs(same["mean"]) < 3 * same["std"] + 1e-3 < ours["mean"]
    assert kernel_distance(a[:50], b, subsets=2)["subset_size"] == 50  # shrinks to fit small sets


def test_inception_score_closed_forms_and_torch_fidelity():
    from torch_fidelity.metric_isc import isc_features_to_metric

    # Uniform predictions: KL = 0, IS = 1.
    assert inception_score(torch.zeros(100, 10))["mean"] == pytest.approx(1.0)
    # Confident, balanced over K classes: p(y) uniform, KL = log K, IS = K.
    confident = torch.full((200, 8), -50.0)
    confident[torch.arange(200), torch.arange(200) % 8] = 50.0
    assert inception_score(confident, splits=5, shuffle=False)["mean"] == pytest.approx(8.0, rel=1e-6)
    logits = torch.randn(500, 20, generator=torch.Generator().manual_seed(0)) * 3
    ref = isc_features_to_metric(logits, splits=10)
    ours = inception_score(logits)
    assert ours["mean"] == pytest.approx(ref["inception_score_mean"], rel=1e-10)
    assert ours["std"] == pytest.approx(ref["inception_score_std"], rel=1e-10)


# ---------------------------------------------------------------- precision / recall


def test_precision_recall_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(60, 5, generator=g), torch.randn(40, 5, generator=g) * 1.5 + 0.5

    def reference(r, f, k=3):
        def radii(s):
            return torch.tensor([sorted(float((s[i] - s[j]).norm()) for j in range(len(s)))[k] for i in range(len(s))])

        def cover(m, rad, q):
            return np.mean([any(float((q[i] - m[j]).norm()) <= rad[j] for j in range(len(m))) for i in range(len(q))])

        return cover(r, radii(r), f), cover(f, radii(f), r)

    p, r = reference(real, fake)
    got = precision_recall(real, fake)
    assert got["precision"] == pytest.approx(p) and got["recall"] == pytest.approx(r)
    assert 0 < got["precision"] < 1 and 0 < got["recall"] < 1


def test_precision_recall_extremes():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(100, 4, generator=g)
    assert precision_recall(x, x) == {"precision": 1.0, "recall": 1.0, "k": 3}
    far = precision_recall(x, x + 100)
    assert far["precision"] == 0.0 and far["recall"] == 0.0
    # Mode collapse: all fakes near one real point -> precise but no recall.
    collapsed = precision_recall(x, x[:1] + 0.001 * torch.randn(50, 4, generator=g))
    assert collapsed["precision"] == 1.0 and collapsed["recall"] < 0.1


# ---------------------------------------------------------------- Inception pipeline (no weights)


@pytest.fixture(scope="module")
def random_inception():
    """torch-fidelity's InceptionV3, uninitialised, re-initialised so activations do not vanish."""
    from noisecraft.evaluate.inception import build_inception

    torch.manual_seed(0)
    net = build_inception(False)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net


def test_inception_features_shapes_and_batch_size_independence(random_inception):
    from noisecraft.evaluate.inception import inception_features

    g = torch.Generator().manual_seed(0)
    gray = torch.randint(0, 256, (3, 1, 28, 28), generator=g, dtype=torch.uint8)
    f2 = inception_features(random_inception, gray, batch_size=2)
    f3 = inception_features(random_inception, gray, batch_size=3)
    assert f2["pool"].shape == (3, 2048) and f2["logits"].shape == (3, 1008)
    assert f2["pool"].abs().mean() > 1e-3  # a real signal, so the comparison below means something
    torch.testing.assert_close(f2["pool"], f3["pool"], rtol=1e-4, atol=1e-6)
    # Grayscale is the same image repeated over RGB.
    rgb = inception_features(random_inception, gray[:1].repeat(1, 3, 1, 1))
    torch.testing.assert_close(rgb["pool"], f2["pool"][:1], rtol=1e-4, atol=1e-6)


def test_inception_weights_from_a_file_and_missing_weights(random_inception, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from noisecraft.errors import UserError
    from noisecraft.evaluate.inception import InceptionUnavailable, build_inception, find_weights

    path = tmp_path / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in random_inception.state_dict().items()}, str(path))
    loaded = build_inception(path)
    for (k, a), b in zip(random_inception.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(UserError, match="not found"):
        find_weights(tmp_path / "nope.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("NOISECRAFT_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(InceptionUnavailable, match="--inception-weights"):
        build_inception(None)


# ---------------------------------------------------------------- offline classifier


def test_random_shift_moves_pixels_exactly():
    from noisecraft.evaluate.classifier import random_shift

    x = torch.zeros(64, 1, 9, 9)
    x[:, :, 4, 4] = 1
    y = random_shift(x, 2, torch.Generator().manual_seed(0))
    pos = y[:, 0].flatten(1).argmax(1)
    rows, cols = pos // 9, pos % 9
    assert y.sum() == 64 and rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 2 and cols.max() <= 6
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 10  # shifts vary per image


def test_classifier_cache_roundtrip(tmp_path, monkeypatch):
    from noisecraft.evaluate.classifier import (
        Classifier,
        SmallCNN,
        classifier_path,
        judge_key,
        load_classifier_file,
        save_classifier,
    )

    monkeypatch.setenv("NOISECRAFT_CACHE", str(tmp_path))
    path = classifier_path("digits")  # the dataset's name, then a hash of the judge's recipe
    assert path == tmp_path / "classifiers" / f"{judge_key('digits')}.safetensors" and path.name.startswith("digits-")
    torch.manual_seed(0)
    net = SmallCNN(1, 10, width=4, feature_dim=8).eval()
    meta = {"format": "noisecraft-classifier", "version": 1, "dataset": "digits", "image_shape": [1, 28, 28],
            "num_classes": 10, "heldout_accuracy": 0.5, "config": {"width": 4, "feature_dim": 8}}
    save_classifier(Classifier(net, meta), path)
    assert json.loads(path.with_suffix(".json").read_text())["heldout_accuracy"] == 0.5
    clf = load_classifier_file(path)
    x = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    logits, feats = clf.predict(x)
    torch.testing.assert_close(logits, net(x.float() / 127.5 - 1))
    assert feats.shape == (5, 8)
    assert clf.predict(torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8))[0].shape == (2, 10)  # resized
    path.write_bytes(b"garbage")
    from noisecraft.errors import UserError

    with pytest.raises(UserError, match="delete it to retrain"):
        load_classifier_file(path)


def test_repeated_metrics_read_and_fingerprint_the_judge_once_per_file_version(tmp_path, monkeypatch):
    import os

    from noisecraft.config import DataConfig
    from noisecraft.evaluate import classifier
    from noisecraft.evaluate.report import classifier_metrics

    monkeypatch.setenv("NOISECRAFT_CACHE", str(tmp_path))
    path = classifier.classifier_path("digits")
    meta = {"format": "noisecraft-classifier", "version": 1, "dataset": "digits", "data_key": "digits",
            "image_shape": [1, 28, 28], "num_classes": 10, "heldout_accuracy": 0.5, "train_size": 1,
            "heldout_size": 1, "config": {"width": 4, "feature_dim": 8}}
    torch.manual_seed(0)
    classifier.save_classifier(classifier.Classifier(classifier.SmallCNN(1, 10, 4, 8).eval(), meta), path)
    calls = {"load": 0, "fingerprint": 0}

    def counting(name, real):
        def counted(*a, **k):
            calls[name] += 1
            return real(*a, **k)
        return counted

    monkeypatch.setattr(classifier, "load_classifier_file", counting("load", classifier.load_classifier_file))
    monkeypatch.setattr(classifier, "fingerprint", counting("fingerprint", classifier.fingerprint))
    images, labels = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8), torch.arange(20) % 10
    first = classifier_metrics(images, labels, DataConfig(), perfect=False)
    assert classifier_metrics(images, labels, DataConfig(), perfect=False) == first  # as training evaluates
    assert calls == {"load": 1, "fingerprint": 1}
    classifier.save_classifier(classifier.Classifier(classifier.SmallCNN(1, 10, 4, 8).eval(), meta), path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a retrained judge: read again
    classifier_metrics(images, labels, DataConfig(), perfect=False)
    assert calls == {"load": 2, "fingerprint": 2}


def test_train_classifier_cli_rejects_unlabelled_or_missing_data(cli, tmp_path):
    code, _, err = cli("train-classifier", "--dataset", "mnist")
    assert code == 2 and "--data-root" in err
    flat = tmp_path / "flat"
    flat.mkdir()
    from PIL import Image

    for i in range(10):
        Image.new("L", (8, 8), color=i * 20).save(flat / f"{i}.png")
    code, _, err = cli("train-classifier", "--dataset", "folder", "--data-root", flat)
    assert code == 2 and "no class labels" in err


# ---------------------------------------------------------------- evaluate end to end


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 4-step digits run and, in a private cache, an untrained tiny classifier (training the real one takes
    ~40 s; the slow test below does that)."""
    from conftest import TINY

    from noisecraft.cli import main
    from noisecraft.evaluate.classifier import Classifier, SmallCNN, classifier_path, save_classifier

    root = tmp_path_factory.mktemp("eval")
    mp = pytest.MonkeyPatch()
    mp.setenv("NOISECRAFT_CACHE", str(root / "cache"))
    torch.manual_seed(0)
    meta = {"format": "noisecraft-classifier", "version": 1, "dataset": "digits", "data_key": "digits",
            "image_shape": [1, 28, 28], "num_classes": 10, "class_names": [str(i) for i in range(10)],
            "train_size": 4500, "heldout_size": 500, "heldout_accuracy": 0.1,
            "config": {"width": 4, "feature_dim": 8}}
    save_classifier(Classifier(SmallCNN(1, 10, width=4, feature_dim=8).eval(), meta), classifier_path("digits"))
    out = root / "run"
    assert main(["train", "--preset", "digits", "--out", str(out), "--steps", "2", "--no-progress", *TINY,
                 "--train.final_figures=false"]) == 0
    yield out
    mp.undo()


def test_evaluate_writes_report_with_offline_metrics_and_perfect_row(cli, tiny_run, tmp_path):
    code, out, err = cli("evaluate", "--checkpoint", tiny_run, "--n", "30", "--steps", "2", "--out", tmp_path / "r",
                         "--no-progress")
    assert code == 0, err
    assert "FID/KID/IS skipped" in err and "--inception-weights" in err  # one line, and the rest still ran
    from conftest import strict_json

    report = strict_json((tmp_path / "r" / "report.json").read_text())
    assert strict_json(out)["offline"] == report["offline"]
    from noisecraft.config import preset
    from noisecraft.precision import use_bf16

    defaults = preset("digits").sample  # what the run was trained with; --steps overrides its steps
    assert report["sampling"] == {"n": 30, "sampler": defaults.sampler, "steps": 2, "guidance": defaults.guidance,
                                  "guidance_interval": [2.0, "inf"], "seed": 0,
                                  "precision": "bf16" if use_bf16("cpu", "auto") else "fp32", "class_balanced": True}
    off = report["offline"]
    assert off["classifier"]["heldout_accuracy"] == 0.1
    # every figure is the judge's on the saved samples (and on the real held-out split), recomputed here: class
    # accuracy and the class histogram by hand, FD with scipy's sqrtm (precision/recall's arithmetic is checked
    # against brute force above; here, that it was given these features)
    import numpy as np
    import scipy.linalg

    from noisecraft.config import DataConfig
    from noisecraft.data import load_dataset
    from noisecraft.evaluate.classifier import get_classifier
    from noisecraft.evaluate.report import feature_metrics

    saved = np.load(tmp_path / "r" / "samples.npz")
    images, labels = torch.from_numpy(saved["images"]), torch.from_numpy(saved["labels"])
    assert len(images) == 30 and sorted(labels.tolist()) == sorted([i % 10 for i in range(30)])  # class-balanced
    clf = get_classifier("digits")
    train, val = load_dataset(DataConfig(), "train"), load_dataset(DataConfig(), "val")
    train_feats = clf.predict(train.images)[1]

    def fd(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a.double().numpy(), b.double().numpy()
        ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        covmean = scipy.linalg.sqrtm(ca @ cb).real
        return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * covmean))

    for row, x, y in (("generated", images, labels), ("real_heldout", val.images, val.labels)):
        logits, feats = clf.predict(x)
        pred = logits.argmax(1)
        assert off[row]["n"] == len(x)
        assert off[row]["class_accuracy"] == pytest.approx((pred == y).double().mean().item(), abs=1e-6)
        assert off[row]["fd"] == pytest.approx(fd(feats, train_feats), rel=1e-3, abs=1e-3)
        pr = feature_metrics(feats, train_feats)
        assert (off[row]["precision"], off[row]["recall"]) == pytest.approx((pr["precision"], pr["recall"]))
        if row == "generated":
            assert off[row]["predicted_class_counts"] == torch.bincount(pred, minlength=10).tolist()
    assert off["real_heldout"]["n"] == 500  # the classifier's held-out split, whatever the run's val_size
    assert "skipped" in report["inception"] and report["timing"]["samples_per_s"] > 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "real held-out (perfect)" in md and "![samples](samples.png)" in md
    from PIL import Image

    assert Image.open(tmp_path / "r" / "samples.png").size == (10 * 30 + 2, 3 * 30 + 2)  # 3 per class, 10 rows
    saved = np.load(tmp_path / "r" / "samples.npz")  # the samples behind the numbers, for other judges
    assert saved["images"].shape == (30, 1, 28, 28) and saved["images"].dtype == np.uint8
    assert saved["labels"].tolist() == [i % 10 for i in range(30)]
    # The same seed gives the same samples, whatever the batch size.
    code, _, err = cli("evaluate", "--checkpoint", tiny_run, "--n", "30", "--steps", "2", "--out", tmp_path / "b",
                       "--batch-size", "7", "--no-progress", "--no-inception")
    assert code == 0, err
    again = json.loads((tmp_path / "b" / "report.json").read_text())["offline"]
    counts = again["generated"].pop("predicted_class_counts")
    assert counts == off["generated"].pop("predicted_class_counts")
    assert again["generated"] == pytest.approx(off["generated"])


def test_training_time_metrics_are_logged_plotted_and_pick_best(cli, tiny_run, tmp_path):
    from conftest import TINY

    out = tmp_path / "run"
    code, _, err = cli("train", "--out", out, "--steps", "4", "--no-progress", *TINY, "--train.final_figures=false",
                       "--train.eval_every=2", "--train.eval_n=20", "--train.eval_steps=2",
                       "--train.best_metric=fd_clf")
    assert code == 0, err
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    evals = [r for r in records if "fd_clf" in r]
    assert [r["step"] for r in evals] == [2, 4] and all(r["eval_n"] == 20 and "class_accuracy" in r for r in evals)
    assert (out / "metrics.png").is_file()
    best = json.loads((out / "checkpoints" / "best.json").read_text())
    assert best["best_score"] == min(r["fd_clf"] for r in evals)
    assert best["step"] == min(evals, key=lambda r: r["fd_clf"])["step"]
    code, _, err = cli("train", "--out", tmp_path / "bad", "--train.best_metric=recall")
    assert code == 2 and "needs train.eval_every > 0" in err


def test_evaluate_user_errors(cli, tiny_run, tmp_path):
    code, _, err = cli("evaluate", "--checkpoint", tmp_path / "missing")
    assert code == 2 and "checkpoint not found" in err
    code, _, err = cli("evaluate", "--checkpoint", tiny_run, "--n", "1", "--out", tmp_path / "x")
    assert code == 2 and "--n must be at least 2" in err
    code, _, err = cli("evaluate", "--checkpoint", tiny_run, "--n", "4", "--out", tmp_path / "x",
                       "--inception-weights", tmp_path / "nope.pth", "--no-progress")
    assert code == 2 and "Inception weights not found" in err


def test_inception_metrics_with_weights_file_and_cached_reference(random_inception, tmp_path, monkeypatch):
    """The FID/KID/IS path end to end on a tiny stand-in dataset (the real one would take minutes on a CPU)."""
    from safetensors.torch import save_file

    import noisecraft.data
    from noisecraft.config import DataConfig
    from noisecraft.data import ImageData
    from noisecraft.evaluate.report import inception_metrics, inception_reference

    monkeypatch.setenv("NOISECRAFT_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in random_inception.state_dict().items()}, str(weights))
    g = torch.Generator().manual_seed(0)
    calls = []

    def fake_load(cfg, split):
        calls.append(split)
        n = 8 if split == "train" else 3
        return ImageData(torch.randint(0, 256, (n, 1, 16, 16), generator=g, dtype=torch.uint8), None, [], "fake")

    monkeypatch.setattr(noisecraft.data, "load_dataset", fake_load)
    gen = torch.randint(0, 256, (10, 1, 16, 16), generator=g, dtype=torch.uint8)
    m = inception_metrics(gen, DataConfig(dataset="digits"), str(weights), batch_size=8)
    assert m["generated"]["n"] == 10 and m["real_heldout"]["n"] == 3
    assert m["generated"]["fid"] > 0 and m["generated"]["kid_subset_size"] == 8 and m["generated"]["is_mean"] >= 1
    assert (tmp_path / "cache" / "inception" / "digits.safetensors").is_file()
    ref = inception_reference(random_inception, DataConfig(dataset="digits"), m["weights_id"], 8, "cpu", False)
    assert calls == ["train", "val"]  # reference statistics computed once, then read from the cache
    assert ref["train"].n == 8 and ref["val_pool"].shape == (3, 2048)


@pytest.mark.slow(reason="trains the default judge on all the digits (half a minute); the suite uses a tiny one")
def test_digits_classifier_reaches_97_percent_heldout(tmp_path, monkeypatch):
    from noisecraft.evaluate.classifier import train_classifier

    clf = train_classifier("digits")
    assert clf.heldout_accuracy >= 0.97
