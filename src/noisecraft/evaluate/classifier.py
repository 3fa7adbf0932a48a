"""A small per-dataset classifier: the offline quality judge (no download needed).

Inception-v3 weights cannot be fetched on every machine, so noisecraft trains a small CNN on the training split
of a dataset, keeps it in a user cache (safetensors + JSON, never pickle) and uses it to judge samples:

* class-conditional accuracy: the share of samples classified as the class they were asked for;
* a Fréchet distance in its penultimate feature space (as FID does with Inception pool features);
* improved precision/recall (Kynkäänniemi et al. 2019) in the same space.

The classifier reports its own held-out accuracy (on the dataset's `val` split, never seen in training), so a
user knows how far to trust it.

Finer labels. Where a dataset has a finer label than its runs' classes (`FINER_LABELS`: the emoji's Unicode
subgroups, about 100, under its 8-9 groups), the judge always learns the finer one: a group is a mixed bag (hearts
and faces are both "Smileys & Emotion"), a subgroup is one kind of picture, so "judged as the class asked" means
more. A run whose classes are the coarser ones is judged in its own classes by one rule: the probability of a group
is the sum of its subgroups' probabilities (each subgroup belongs to one group); `predict` returns the log of that,
so class accuracy, class balance and the held-out accuracy are in the run's classes. One head, one judge file for
both kinds of run; the judge's accuracy on its own labels is reported beside.

Colour. Augmentation is small translations (and flips where the dataset flips), never a colour change: colour is
what it must see. Labels alone do not make features keep colour (a subgroup or group judge trained long learns
shapes, and colour-swapped images move little against its floor), so on colour sets (`RECIPES`) a second loss asks
the features for the colour word measured on each image's pixels (`ClassifierConfig.colour_weight`).

The cache key carries the whole recipe (`judge_key`): the ClassifierConfig, the label kind, flips and the data
selection, so changing any of them trains a new judge instead of reusing a stale one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from noisecraft.config import DataConfig
from noisecraft.data import cache_dir, load_dataset, to_model_range
from noisecraft.errors import UserError

FORMAT = "noisecraft-classifier"
VERSION = 1
RECIPE = 2  # bump when training changes in a way ClassifierConfig does not show: cached judges are then retrained

# Datasets whose judge learns a finer label than their runs' classes: (data field, finer value, coarser value).
FINER_LABELS = {"emoji": ("emoji_label", "subgroup", "group")}
# Per-dataset recipe defaults: ~1,300 emoji in ~90 subgroups need more passes than 4,500 digits in 10 classes.
RECIPES = {"emoji": {"epochs": 60, "colour_weight": 1.0}, "folder": {"colour_weight": 1.0}}


@dataclass
class ClassifierConfig:
    """Training recipe. Defaults reach ~98-99% held-out accuracy on the embedded digits in well under a minute."""

    epochs: int = 8
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    max_shift: int = 2  # light augmentation: random translations of up to this many pixels
    width: int = 16  # channels of the first conv (then 2x, 4x)
    feature_dim: int = 128
    seed: int = 0
    # RGB data: weight of a second loss, on the colour word measured on each image's pixels (captions.dominant_colour),
    # through a head dropped after training: the features must keep colour to predict it. 0: off.
    colour_weight: float = 0.0


class SmallCNN(nn.Module):
    """conv(w) -> pool -> conv(2w) x2 -> pool -> conv(4w) -> 4x4 average pool -> feature layer -> logits.

    Each conv is conv3x3-BN-ReLU. Only the first (cheap) conv runs at full resolution, which keeps training
    under a minute on a CPU. The adaptive pool makes it take any image size >= 8 (28x28 digits, 32x32 CIFAR-10,
    folders). `features(x)` is the penultimate layer (before its ReLU): the space the Fréchet distance and the
    precision/recall use.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 16, feature_dim: int = 128):
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        w = width
        self.body = nn.Sequential(
            *block(in_channels, w), nn.MaxPool2d(2),
            *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
            *block(2 * w, 4 * w), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        )
        self.embed = nn.Linear(4 * w * 16, feature_dim)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.3), nn.Linear(feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [-1, 1] -> (B, feature_dim)
        return self.embed(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # -> logits (B, num_classes)
        return self.head(self.features(x))


@dataclass
class Classifier:
    """A trained judge: the network (eval mode) and what it was trained on. `coarse` (judge class -> run class)
    is set when a run's classes are coarser than the judge's labels: then logits, accuracy and class names are the
    run's (module docstring)."""

    net: SmallCNN
    meta: dict = field(default_factory=dict)
    coarse: torch.Tensor | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.meta["image_shape"])

    @property
    def heldout_accuracy(self) -> float:
        """On the held-out split, in the run's classes."""
        m = self.meta["coarse"] if self.coarse is not None else self.meta
        return float(m["heldout_accuracy"])

    @property
    def class_names(self) -> list[str]:
        return (self.meta["coarse"] if self.coarse is not None else self.meta)["class_names"]

    @property
    def num_classes(self) -> int:
        return len(self.meta["coarse"]["class_names"]) if self.coarse is not None else self.meta["num_classes"]

    def for_data(self, data_cfg: DataConfig | str) -> "Classifier":
        """This judge answering in the classes of a run on `data_cfg` (its own, or their coarser groups)."""
        data_cfg = DataConfig(dataset=data_cfg) if isinstance(data_cfg, str) else data_cfg
        name, _, coarser = FINER_LABELS.get(data_cfg.dataset, (None, None, None))
        if name is None or getattr(data_cfg, name) != coarser:
            return Classifier(self.net, self.meta)
        return Classifier(self.net, self.meta, torch.tensor(self.meta["coarse"]["of"], dtype=torch.long))

    def run_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Judge logits (N, K) -> the run's: log of each class's summed probability when the run's are coarser."""
        if self.coarse is None:
            return logits
        p = logits.float().softmax(1)
        summed = torch.zeros(len(p), self.num_classes).index_add_(1, self.coarse, p)
        return summed.clamp_min(1e-30).log()

    def run_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels in the judge's classes -> the run's."""
        return labels if self.coarse is None else self.coarse[labels.long()]

    def _prepare(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float [-1, 1] on the classifier's device and size."""
        if images_uint8.dtype != torch.uint8 or images_uint8.ndim != 4:
            raise UserError(f"classifier input must be uint8 (N, C, H, W), got {images_uint8.dtype} "
                            f"{tuple(images_uint8.shape)}")
        c, h, _ = self.image_shape
        if images_uint8.shape[1] != c:
            raise UserError(f"the {self.meta['dataset']} classifier takes {c}-channel images, "
                            f"got {images_uint8.shape[1]} channels")
        x = to_model_range(images_uint8.to(next(self.net.parameters()).device))
        if x.shape[-1] != h or x.shape[-2] != h:
            x = F.interpolate(x, size=(h, h), mode="bilinear", antialias=True, align_corners=False)
        return x

    @torch.no_grad()
    def predict(self, images_uint8: torch.Tensor, batch_size: int = 500,
                own_classes: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (logits (N, K), features (N, D)) as float32 CPU tensors, computed in batches; logits in the run's
        classes, or in the judge's own labels with `own_classes`."""
        self.net.eval()
        logits, feats = [], []
        for chunk in images_uint8.split(batch_size):
            f = self.net.features(self._prepare(chunk))
            feats.append(f.float().cpu())
            logits.append(self.net.head(f).float().cpu())
        if not logits:
            k, d = self.meta["num_classes"], self.meta["config"]["feature_dim"]
            logits, feats = [torch.empty(0, k)], [torch.empty(0, d)]
        logits = torch.cat(logits)
        return (logits if own_classes else self.run_logits(logits)), torch.cat(feats)

    def features(self, images_uint8: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        return self.predict(images_uint8, batch_size)[1]

    def accuracy(self, images_uint8: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
        """Share of images whose predicted class equals `labels`."""
        if len(images_uint8) != len(labels):
            raise UserError(f"{len(images_uint8)} images but {len(labels)} labels")
        if len(labels) == 0:
            raise UserError("no images to classify")
        logits, _ = self.predict(images_uint8, batch_size)
        return (logits.argmax(1) == labels.cpu().long()).float().mean().item()


# ---------------------------------------------------------------- training


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by an integer (dx, dy) in [-max_shift, max_shift], edges replicated.

    One `grid_sample` call with nearest sampling: exact pixel shifts, no per-image Python loop."""
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (b, 2), generator=generator).to(x.device, x.dtype)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = 1
    theta[:, 1, 1] = 1
    theta[:, 0, 2] = 2 * shifts[:, 0] / w  # normalised coordinates span 2 over the width (align_corners=False)
    theta[:, 1, 2] = 2 * shifts[:, 1] / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="border", align_corners=False)


def _fit(net: SmallCNN, train, cfg: ClassifierConfig, hflip: bool, device: torch.device, progress: bool,
         name: str) -> None:
    """AdamW with a one-cycle schedule; each batch translated (and flipped where the dataset flips), never
    recoloured; with `cfg.colour_weight` on RGB data, plus the colour-word loss (ClassifierConfig)."""
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(cfg.seed)
    colour, colour_head = _colour_task(train, cfg, device)
    params = [*net.parameters(), *(colour_head.parameters() if colour_head is not None else ())]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-len(train) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=0.15)
    x_all, y_all = train.images, train.labels
    bar = tqdm(total=cfg.epochs * steps_per_epoch, desc=f"classifier ({name})", disable=not progress, leave=False)
    for _ in range(cfg.epochs):
        net.train()
        perm = torch.randperm(len(train), generator=g)
        for idx in perm.split(cfg.batch_size):
            x = to_model_range(x_all[idx]).to(device)
            x = random_shift(x, cfg.max_shift, g)
            if hflip:
                flip = (torch.rand(len(idx), generator=g) < 0.5).to(device)
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            f = net.features(x)
            loss = F.cross_entropy(net.head(f), y_all[idx].to(device), label_smoothing=0.05)
            if colour_head is not None:
                loss = loss + cfg.colour_weight * F.cross_entropy(colour_head(f), colour[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    net.eval()


def _colour_task(train, cfg: ClassifierConfig, device: torch.device) -> tuple[torch.Tensor | None, nn.Module | None]:
    """The colour word of each training image and a head to predict it from the features, or (None, None)."""
    from noisecraft.captions import COLOURS, dominant_colour

    if cfg.colour_weight <= 0 or train.channels != 3:
        return None, None
    head = nn.Sequential(nn.ReLU(), nn.Linear(cfg.feature_dim, len(COLOURS))).to(device)
    return dominant_colour(train.images), head


@torch.enable_grad()  # also when called under no_grad: training-time metrics train the judge on first use
def train_classifier(data_cfg: DataConfig | str = "digits", cfg: ClassifierConfig | None = None,
                     device: torch.device | str = "cpu", progress: bool = False) -> Classifier:
    """Train a SmallCNN on the training split with the judge's labels (`judge_data`); measure its accuracy on the
    held-out `val` split, and in the coarser classes too where runs have them. Returns it in its own labels."""
    data_cfg = judge_data(data_cfg)
    cfg = cfg or default_config(data_cfg)
    train, val = load_dataset(data_cfg, "train"), load_dataset(data_cfg, "val")
    if train.labels is None:
        raise UserError(f"dataset '{data_cfg.dataset}' has no class labels: a classifier needs labelled data "
                        f"(one sub-folder per class)")
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    net = SmallCNN(train.channels, train.num_classes, cfg.width, cfg.feature_dim).to(device)
    t0 = time.perf_counter()
    _fit(net, train, cfg, data_cfg.hflip, device, progress, data_cfg.dataset)
    meta = {
        "format": FORMAT, "version": VERSION, "dataset": data_cfg.dataset, "data_key": dataset_key(data_cfg),
        "key": judge_key(data_cfg, cfg), "labels": label_kind(data_cfg), "recipe": RECIPE,
        "image_shape": [train.channels, train.image_size, train.image_size], "num_classes": train.num_classes,
        "class_names": train.class_names, "train_size": len(train), "heldout_size": len(val),
        "train_seconds": round(time.perf_counter() - t0, 2), "config": asdict(cfg),
    }
    clf = Classifier(net, meta)
    clf.meta["heldout_accuracy"] = clf.accuracy(val.images, val.labels)
    if data_cfg.dataset in FINER_LABELS:
        clf.meta["coarse"] = _coarse_view(clf, data_cfg, train, val)
    return clf


def _coarse_view(clf: Classifier, data_cfg: DataConfig, train, val) -> dict:
    """What a judge on finer labels needs to answer in the coarser classes: their names, the coarser class of each
    of its classes (read off the images, which carry both labels) and its held-out accuracy in them."""
    name, _, coarser = FINER_LABELS[data_cfg.dataset]
    coarse_cfg = dataclasses.replace(data_cfg, **{name: coarser})
    coarse_val = load_dataset(coarse_cfg, "val")
    of = [-1] * clf.meta["num_classes"]
    for fine, coarse in ((train, load_dataset(coarse_cfg, "train")), (val, coarse_val)):
        for f, c in zip(fine.labels.tolist(), coarse.labels.tolist(), strict=True):
            if of[f] not in (-1, c):  # the sum of probabilities needs each finer class inside one coarser class
                raise ValueError(f"{fine.class_names[f]} lies in two {coarser}s")
            of[f] = c
    view = {"labels": coarser, "class_names": coarse_val.class_names, "of": of}
    judged = Classifier(clf.net, {**clf.meta, "coarse": view}, torch.tensor(of))
    return view | {"heldout_accuracy": judged.accuracy(val.images, coarse_val.labels)}


# ---------------------------------------------------------------- cache


def canonical_data(data_cfg: DataConfig | str) -> DataConfig:
    """The dataset variant a classifier is for: name, location, size and flips. The split is always the default
    one, so a diffusion run's own `val_size` does not change (or leak into) the judge's training set."""
    data_cfg = DataConfig(dataset=data_cfg) if isinstance(data_cfg, str) else data_cfg
    # A built-in dataset is judged at its native size (samples at another size are resized to it, see `_prepare`):
    # one judge for the 28x28 and the 64x64 digits. An image folder has no native size: its --image-size is it;
    # nor have the emoji, rasterised from SVG at the run's size (32 when it names none).
    # The fields a dataset names as its `variant` (registry.DATASETS: the emoji set's labels and selection) are kept.
    size = data_cfg.image_size if data_cfg.dataset in ("folder", "emoji") else None
    if data_cfg.dataset == "emoji":
        from noisecraft.emoji import DEFAULT_SIZE

        size = size or DEFAULT_SIZE
    background = data_cfg.background if data_cfg.dataset == "folder" else DataConfig.background  # folders' alpha
    return DataConfig(dataset=data_cfg.dataset, data_root=data_cfg.data_root, image_size=size, hflip=data_cfg.hflip,
                      background=background, **_variant(data_cfg))


def _variant(data_cfg: DataConfig) -> dict:
    """The data settings the dataset names as its `variant` (registry.DATASETS), with their values."""
    from noisecraft.registry import DATASETS

    return {f: getattr(data_cfg, f) for f in DATASETS.get(data_cfg.dataset, "data.dataset").facts.get("variant", ())}


def dataset_key(data_cfg: DataConfig) -> str:
    """Cache name of a dataset variant: its name, plus the image size and data location when they matter."""
    key = data_cfg.dataset
    if data_cfg.image_size is not None:
        key += f"-{data_cfg.image_size}px"
    if data_cfg.dataset == "folder" and data_cfg.data_root:
        digest = hashlib.sha1(str(Path(data_cfg.data_root).resolve()).encode()).hexdigest()[:10]
        key += f"-{Path(data_cfg.data_root).name}-{digest}"
    variant = _variant(data_cfg)
    if variant and data_cfg.data_root:
        variant["data_root"] = str(Path(data_cfg.data_root).resolve())
    if variant:  # e.g. emoji-3f2a9c01d4: the labels and selection it was trained on
        key += "-" + hashlib.sha1(json.dumps(variant, sort_keys=True).encode()).hexdigest()[:10]
    return key


def judge_data(data_cfg: DataConfig | str) -> DataConfig:
    """The data a judge for runs on `data_cfg` learns: `canonical_data` with the finer label where there is one."""
    data_cfg = canonical_data(data_cfg)
    name, finer, _ = FINER_LABELS.get(data_cfg.dataset, (None, None, None))
    return dataclasses.replace(data_cfg, **{name: finer}) if name else data_cfg


def label_kind(data_cfg: DataConfig) -> str:
    """What a judge on `data_cfg` learns: the dataset's finer label, or its classes."""
    return FINER_LABELS[data_cfg.dataset][1] if data_cfg.dataset in FINER_LABELS else "class"


def default_config(data_cfg: DataConfig | str) -> ClassifierConfig:
    dataset = data_cfg if isinstance(data_cfg, str) else data_cfg.dataset
    return ClassifierConfig(**RECIPES.get(dataset, {}))


def judge_key(data_cfg: DataConfig | str, cfg: ClassifierConfig | None = None) -> str:
    """Cache name of a judge: its data (`dataset_key`: name, location, size, emoji selection and background) and a
    hash of its recipe (ClassifierConfig, label kind, flips, a folder's background, RECIPE), so a change of any of
    them trains a new judge."""
    data_cfg = judge_data(data_cfg)
    cfg = cfg or default_config(data_cfg)
    recipe = {"config": asdict(cfg), "labels": label_kind(data_cfg), "hflip": data_cfg.hflip,
              "background": data_cfg.background, "recipe": RECIPE}
    return f"{dataset_key(data_cfg)}-{hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]}"


def classifier_path(data_cfg: DataConfig | str, cfg: ClassifierConfig | None = None) -> Path:
    return cache_dir() / "classifiers" / f"{judge_key(data_cfg, cfg)}.safetensors"


def cached_judges() -> list[str]:
    """The judges in the cache, one 'dataset (cache name, labels)' each."""
    found = []
    for path in sorted((cache_dir() / "classifiers").glob("*.json")):
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):  # a torn file is no judge
            continue
        if isinstance(meta, dict) and meta.get("format") == FORMAT:
            found.append(f"{meta.get('dataset')} ({path.stem}, {meta.get('labels', 'class')} labels)")
    return found


def no_judge(reason: str) -> UserError:
    """One line: why there is no judge, the judges the cache has and how to train one."""
    have = ", ".join(cached_judges()) or "none"
    return UserError(f"{reason}; cached judges: {have}; train one with `noisecraft train-classifier --dataset NAME` "
                     f"(`noisecraft evaluate` trains a run's judge on first use)")


def save_classifier(clf: Classifier, path: str | Path) -> Path:
    """Weights as safetensors (metadata JSON in its header) plus a readable `.json` next to it; atomic."""
    from safetensors.torch import save

    from noisecraft.rundir import atomic_write_bytes

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create classifier cache {path.parent}: {e.strerror} (set NOISECRAFT_CACHE)") from None
    state = {k: v.detach().cpu().contiguous() for k, v in clf.net.state_dict().items()}
    text = json.dumps(clf.meta)
    atomic_write_bytes(path, save(state, metadata={"noisecraft": text}))
    atomic_write_bytes(path.with_suffix(".json"), (json.dumps(clf.meta, indent=2) + "\n").encode())
    return path


def load_classifier_file(path: str | Path, device: torch.device | str = "cpu") -> Classifier:
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"classifier file not found: {path}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {})["noisecraft"])
        tensors = load_file(str(path))
    except Exception as e:  # corrupt or foreign file
        raise UserError(f"cannot read classifier {path}: {e} (delete it to retrain)") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise UserError(f"{path} is not a noisecraft classifier of version {VERSION} (delete it to retrain)")
    c = meta["image_shape"][0]
    net = SmallCNN(c, meta["num_classes"], meta["config"]["width"], meta["config"]["feature_dim"])
    net.load_state_dict(tensors)
    return Classifier(net.to(device).eval(), meta)


def get_classifier(data_cfg: DataConfig | str = "digits", *, device: torch.device | str = "cpu",
                   train_if_missing: bool = True, retrain: bool = False, progress: bool = False,
                   cfg: ClassifierConfig | None = None) -> Classifier:
    """The cached judge for runs on `data_cfg`, in their classes (`Classifier.for_data`); trained (and cached) on
    first use. Any reason there is none is one UserError naming the judges the cache has."""
    from noisecraft.registry import DATASETS

    run_cfg = DataConfig(dataset=data_cfg) if isinstance(data_cfg, str) else data_cfg
    if run_cfg.dataset not in DATASETS.names():
        raise no_judge(f"no judge classifier for '{run_cfg.dataset}', which is not a dataset")
    data_cfg = judge_data(run_cfg)
    path = classifier_path(data_cfg, cfg)
    if path.is_file() and not retrain:
        clf = load_judge(path, device)
    elif not train_if_missing and not retrain:
        raise no_judge(f"no judge classifier cached for '{judge_key(data_cfg, cfg)}' at {path}")
    else:
        try:
            clf = train_classifier(data_cfg, cfg, device=device, progress=progress)
        except UserError as e:
            raise no_judge(f"cannot train a judge for '{run_cfg.dataset}': {e}") from None
        save_classifier(clf, path)
    clf.meta["path"] = str(path)
    return clf.for_data(run_cfg)


_JUDGES: dict[tuple, Classifier] = {}  # judges read from disk in this process: one per file version and device
_FINGERPRINTS: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()  # of their weights


def load_judge(path: Path, device: torch.device | str = "cpu") -> Classifier:
    """`load_classifier_file`, read and fingerprinted once per version of the file (mtime, size) and device in
    this process: training's periodic evaluation asks for its judge every time. Callers leave its weights as they
    are."""
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size, str(device))
    if key not in _JUDGES:
        for stale in [k for k in _JUDGES if k[0] == key[0] and k[1:3] != key[1:3]]:  # the file was rewritten
            del _JUDGES[stale]
        clf = load_classifier_file(path, device)
        _FINGERPRINTS[clf.net] = fingerprint(clf.net)
        _JUDGES[key] = clf
    return _JUDGES[key]


def classifier_accuracy(images_uint8: torch.Tensor, labels: torch.Tensor, dataset: str | DataConfig = "digits",
                        device: torch.device | str = "cpu") -> float:
    """Share of `images_uint8` (N, C, H, W) that the dataset's cached classifier assigns to `labels` (N,).

    Trains and caches the classifier on first use (under a minute for digits on a CPU)."""
    data_cfg = DataConfig(dataset=dataset) if isinstance(dataset, str) else dataset
    return get_classifier(data_cfg, device=device).accuracy(images_uint8, labels)


# ---------------------------------------------------------------- reference features of the real data


def fingerprint(net: nn.Module) -> str:
    """Hash of the weights: ties cached reference features to the exact classifier that made them."""
    h = hashlib.sha1()
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def reference_features(clf: Classifier, data_cfg: DataConfig | str) -> dict[str, torch.Tensor]:
    """Classifier features of the real train and held-out splits, computed once and cached next to the
    classifier (safetensors). Keys: train_features, val_features, val_logits, val_labels, train_labels; logits and
    labels in the judge's own labels (`Classifier.run_logits` / `run_labels` turn them into a run's classes)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save

    from noisecraft.rundir import atomic_write_bytes

    data_cfg = judge_data(data_cfg)
    path = Path(clf.meta["path"]) if "path" in clf.meta else classifier_path(data_cfg)
    path = path.with_suffix(".reference.safetensors")
    fp = _FINGERPRINTS.get(clf.net) or fingerprint(clf.net)  # a judge read from disk was fingerprinted then
    if path.is_file():
        try:
            with safe_open(str(path), "pt") as f:
                if (f.metadata() or {}).get("classifier") == fp:
                    return load_file(str(path))
        except Exception:  # unreadable cache: recompute
            pass
    train, val = load_dataset(data_cfg, "train"), load_dataset(data_cfg, "val")
    ref = {"train_features": clf.features(train.images), "train_labels": train.labels}
    ref["val_logits"], ref["val_features"] = clf.predict(val.images, own_classes=True)
    ref["val_labels"] = val.labels
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, save({k: v.contiguous() for k, v in ref.items()}, metadata={"classifier": fp}))
    except OSError:  # a read-only cache only costs recomputation
        pass
    return ref
