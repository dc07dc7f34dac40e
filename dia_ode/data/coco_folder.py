"""A user's COCO-format detection folder, loaded into memory and letterboxed to a square size.

Layout (COCO 2017's): DIR/annotations/instances_<name>.json with its images under DIR/<name>/, e.g.
instances_train2017.json -> train2017/. The file whose name holds "train" is the training set (a
seeded val_fraction of it is held out for validation), the one whose name holds "val" or "test" is
the test set. Images are read by Pillow, converted to grayscale or RGB, letterboxed (scaled to fit,
centred on black) to image_size x image_size, and their boxes moved with them.

Bad input is one line naming the file: an annotation file that is not COCO JSON, a box outside its
image, a category id the file does not declare, an image path that leaves the folder (absolute or
through ..: refused before anything is opened), an empty folder, an annotation file that is not a
regular file (a FIFO would block the read) or holds JSON nested too deeply. An image that cannot be
decoded, that exceeds Pillow's decompression-bomb limit (the limit stays on), or that is not a regular
file (a FIFO, a device: never opened for a blocking read) is skipped with a warning that counts them and
names the first, so one bad file in a large set does not stop training; when no image is left that is
an error.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch.nn import functional as F

from dia_ode.data.dataset import DataError, channel_stats
from dia_ode.data.scenes import DetectionDataset, DetectionSplit
from dia_ode.models.boxes import xywh_to_xyxy
from dia_ode.util.files import UnreadableFile, open_regular, read_json

log = logging.getLogger(__name__)
IMAGE_SIZE = 128
NAMED_IN_WARNING = 5


def load_coco_folder(root: Path, *, val_fraction: float = 0.1, seed: int = 0, image_size: int = IMAGE_SIZE,
                     channels: int = 3, train_examples: int | None = None) -> DetectionDataset:
    """The folder's train / val / test splits (module docstring)."""
    root = Path(root)
    files = sorted((root / "annotations").glob("instances_*.json")) if (root / "annotations").is_dir() else []
    if not files:
        raise DataError(f"{root} holds no annotations/instances_<name>.json (the COCO layout: "
                        f"annotations/instances_train2017.json with its images in train2017/)")
    train_files = [f for f in files if "train" in f.stem]
    test_files = [f for f in files if "val" in f.stem or "test" in f.stem]
    if len(train_files) != 1 or len(test_files) != 1:
        raise DataError(f"{root / 'annotations'} needs one instances_*train*.json and one instances_*val*.json "
                        f"(or *test*), found: {', '.join(f.name for f in files)}")
    categories, train = read_split(train_files[0], image_size, channels)
    test_categories, test = read_split(test_files[0], image_size, channels)
    if test_categories != categories:
        raise DataError(f"{test_files[0]} declares other categories than {train_files[0]}")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    n_val = int(round(val_fraction * len(train)))
    val, train = train.subset(perm[:n_val].sort().values), train.subset(perm[n_val:].sort().values)
    if train_examples is not None:
        if not 0 < train_examples <= len(train):
            raise DataError(f"coco: train_examples={train_examples} is not in [1, {len(train)}]",
                            option="train_examples")
        train = train.subset(torch.arange(train_examples))
    if len(train) == 0:
        raise DataError(f"{train_files[0]}: no training image left after the val split")
    mean, std = channel_stats(train.images)
    return DetectionDataset("coco", train, val, test, num_classes=len(categories), in_channels=channels,
                            image_size=image_size, mean=mean, std=std, categories=tuple(c["name"] for c in categories))


def read_split(path: Path, image_size: int, channels: int) -> tuple[list[dict], DetectionSplit]:
    """(categories in id order, the split) of one COCO instances file and its image folder."""
    folder = path.parent.parent / path.stem[len("instances_"):]
    coco = _read_json(path)
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    label_of = {c["id"]: k for k, c in enumerate(categories)}
    boxes_of: dict[int, list] = {image["id"]: [] for image in coco["images"]}
    for a in coco["annotations"]:
        if a.get("category_id") not in label_of:
            raise DataError(f"{path}: annotation {a.get('id')} has category_id {a.get('category_id')}, "
                            f"which the file does not declare")
        if a.get("image_id") not in boxes_of:
            raise DataError(f"{path}: annotation {a.get('id')} names image_id {a.get('image_id')}, not in images")
        boxes_of[a["image_id"]].append((a["bbox"], label_of[a["category_id"]], a.get("id")))
    images, boxes, labels, ids, unreadable = [], [], [], [], []
    for image in coco["images"]:
        file = _inside(folder, image.get("file_name"), path)
        try:
            pixels = decode_image(file, channels)
        except DataError as err:
            unreadable.append(str(err))
            continue
        height, width = pixels.shape[:2]
        xyxy = []
        for bbox, _, ann_id in boxes_of[image["id"]]:
            x0, y0, x1, y1 = xywh_to_xyxy(torch.tensor(bbox, dtype=torch.float32)).tolist()
            if x0 < 0 or y0 < 0 or x1 > width or y1 > height or x1 <= x0 or y1 <= y0:
                raise DataError(f"{path}: annotation {ann_id} has box {bbox} outside its image {file.name} "
                                f"({width}x{height})")
            xyxy.append([x0, y0, x1, y1])
        square, scale, (dx, dy) = letterbox(pixels, image_size)
        images.append(square)
        moved = torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4) * scale
        boxes.append(moved + torch.tensor([dx, dy, dx, dy], dtype=torch.float32))
        labels.append(torch.tensor([label for _, label, _ in boxes_of[image["id"]]], dtype=torch.int64))
        ids.append(image["id"])
    if unreadable:
        log.warning(f"{path}: skipped {len(unreadable)} image(s) that could not be read; first: "
                    + "; ".join(unreadable[:NAMED_IN_WARNING]))
    if not images:
        raise DataError(f"{path}: no readable image (of {len(coco['images'])})")
    split = DetectionSplit(torch.stack(images), boxes, labels, [torch.zeros(0, dtype=torch.int64)] * len(images),
                           torch.tensor(ids, dtype=torch.int64))
    return categories, split


def _read_json(path: Path) -> dict:
    try:
        coco = read_json(path)
    except FileNotFoundError:  # removed since the folder was listed
        raise DataError(f"{path} is not a readable JSON file (FileNotFoundError)") from None
    except UnreadableFile as err:
        raise DataError(str(err) if err.not_regular else f"{path} is not a readable JSON file ({err.reason})") \
            from None
    if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "annotations",
                                                                                      "categories")):
        raise DataError(f"{path} is not COCO instances JSON (needs lists 'images', 'annotations', 'categories')")
    for what, key in (("images", "id"), ("categories", "id"), ("annotations", "bbox")):
        if not all(isinstance(item, dict) and key in item for item in coco[what]):
            raise DataError(f"{path}: every entry of '{what}' needs '{key}'")
    return coco


def _inside(folder: Path, name: object, source: Path) -> Path:
    """folder / name, refused (never opened) when name is absolute or climbs out through .."""
    if not isinstance(name, str) or not name:
        raise DataError(f"{source}: an image has no file_name")
    parts = PurePosixPath(name.replace("\\", "/"))
    if parts.is_absolute() or Path(name).is_absolute() or ".." in parts.parts:
        raise DataError(f"{source}: image path {name!r} leaves the dataset folder (absolute or ..): refused")
    return folder / Path(*parts.parts)


def decode_image(file: Path, channels: int) -> np.ndarray:
    """(H, W, channels) uint8 of an image file; DataError naming the file if Pillow cannot decode it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open_regular(file) as f, Image.open(f) as image:  # a FIFO is never opened for a blocking read;
            # Pillow's decompression-bomb limit stays on: a bomb raises here
            array = np.array(image.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    except UnreadableFile as err:
        why = f"not a regular file: {err.reason}" if err.not_regular else err.reason
        raise DataError(f"cannot read image {file} ({why})") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read image {file} ({type(err).__name__}: {' '.join(str(err).split())[:120]})") \
            from None
    return array[..., None] if array.ndim == 2 else array


def letterbox(pixels: np.ndarray, size: int) -> tuple[torch.Tensor, float, tuple[int, int]]:
    """(C, size, size) uint8 of an (H, W, C) uint8 image scaled to fit and centred on black; the scale and
    the (x, y) offset of the image on the square."""
    height, width = pixels.shape[:2]
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    chw = torch.from_numpy(pixels).permute(2, 0, 1)[None].float()
    resized = F.interpolate(chw, size=(new_h, new_w), mode="bilinear", align_corners=False)[0]
    out = torch.zeros(pixels.shape[2], size, size)
    dy, dx = (size - new_h) // 2, (size - new_w) // 2
    out[:, dy:dy + new_h, dx:dx + new_w] = resized
    return out.round().clamp(0, 255).to(torch.uint8), scale, (dx, dy)
