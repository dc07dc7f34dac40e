"""Generated detection scenes: objects from a small image set pasted onto a canvas, with their boxes.

`digit-scenes` pastes the embedded 8x8 digits, upscaled, onto a 64x64 canvas (`fashion-scenes` the
Fashion-MNIST items, where that dataset is installed): 2 to 4 objects a scene at
random positions and sizes, a new object placed only where its square overlaps every earlier one by IoU
<= max_overlap (bounded overlap; after `tries` refusals the scene keeps fewer objects). Overlapping
pixels take the brighter value. Each box is the tight box of the object's visible pixels (value >=
VISIBLE), so it contains the object and nothing of it lies outside. The train, val and test scenes are
built from disjoint sets of source images (a seeded split of the digits), so no test digit was seen in
training. Everything is seeded: the same arguments give the same scenes.

Written here rather than taken from a library: no offline detection dataset ships with the packages
this project may install, and a generated one lets the tests know every box exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch.nn import functional as F

from dia_ode.data.dataset import DataError, channel_stats
from dia_ode.data.strides import with_standard_strides
from dia_ode.models.boxes import box_iou

VISIBLE = 64  # uint8 value from which a pixel counts as part of an object (its box is tight around these)


@dataclass(frozen=True, eq=False, repr=False)
class DetectionSplit:
    """One split of a detection dataset held in memory.

    Attributes:
        images: (N, C, H, W) uint8.
        boxes: per image a (k, 4) float32 tensor of xyxy boxes in pixels.
        labels: per image a (k,) int64 tensor of class indices (0-based).
        sources: per image the (k,) indices of the source images its objects came from (generated
            scenes; empty tensors for a loaded dataset).
        ids: (N,) int64 image ids, 1-based (COCO's image_id; kept by subset, so shards keep theirs).
    """

    images: torch.Tensor
    boxes: list[torch.Tensor]
    labels: list[torch.Tensor]
    sources: list[torch.Tensor]
    ids: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(f"detection images must be (N, C, H, W) uint8, got {tuple(self.images.shape)} "
                            f"{self.images.dtype}")
        if not len(self.boxes) == len(self.labels) == len(self.sources) == n:
            raise DataError(f"{n} images but {len(self.boxes)} box lists, {len(self.labels)} label lists")
        if self.ids is None:
            object.__setattr__(self, "ids", torch.arange(1, n + 1))
        object.__setattr__(self, "images", with_standard_strides(self.images))  # indexing keeps a stored layout

    def subset(self, index: torch.Tensor) -> "DetectionSplit":
        """The images at `index` (their ids kept)."""
        index = index.cpu()
        pick = index.tolist()
        return DetectionSplit(self.images[index.to(self.images.device)], [self.boxes[i] for i in pick],
                              [self.labels[i] for i in pick], [self.sources[i] for i in pick], self.ids[index])

    def to(self, device: torch.device | str) -> "DetectionSplit":
        """This split with its images on `device`; the annotations stay on the host.

        Why only the images: boxes, labels and sources are lists of a few numbers per image that the
        batch loop picks with Python indices (each batch moves its own) and COCO evaluation reads on
        the host; ids are read with int() per image. The pixels are what a batch copy costs.
        """
        return replace(self, images=self.images.to(device))

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        objects = sum(len(b) for b in self.boxes)
        return f"DetectionSplit({len(self)} images {tuple(self.images.shape[1:])}, {objects} objects)"


@dataclass(frozen=True, eq=False)
class DetectionDataset:
    """A detection dataset's three splits and what a model and the train loop need to know.

    Attributes mirror data.Dataset (name, splits, num_classes, in_channels, image_size, mean, std);
    categories are the class names, index = label.
    """

    name: str
    train: DetectionSplit
    val: DetectionSplit
    test: DetectionSplit
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    categories: tuple[str, ...]
    flip: bool = False  # whether a left-right flip keeps an object what it is (not for digits)

    def to(self, device: torch.device | str) -> "DetectionDataset":
        """This dataset with the images of all three splits on `device` (DetectionSplit.to)."""
        return replace(self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device))


def compose_scenes(sources: torch.Tensor, source_labels: torch.Tensor, pool: torch.Tensor, n: int, *,
                   canvas: int = 64, objects: tuple[int, int] = (2, 4), sizes: tuple[int, int] = (14, 28),
                   max_overlap: float = 0.2, tries: int = 50, seed: int = 0) -> DetectionSplit:
    """n scenes whose objects come from sources[pool] (module docstring).

    Args:
        sources: (M, 1, h, w) uint8 object images; source_labels: (M,) their classes.
        pool: the indices of sources this split may use.
        canvas: the scene's side in pixels; objects: (fewest, most) objects a scene; sizes: (smallest,
            largest) side of a pasted object in pixels.
        max_overlap: the largest IoU between a new object's square and an earlier one's.
    """
    if not 0 < sizes[0] <= sizes[1] <= canvas:
        raise DataError(f"object sizes {sizes} must lie in 1..{canvas} (the canvas)")
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 1, canvas, canvas, dtype=torch.uint8)
    all_boxes, all_labels, all_sources = [], [], []
    for i in range(n):
        count = int(torch.randint(objects[0], objects[1] + 1, (1,), generator=g))
        squares: list[torch.Tensor] = []
        boxes, labels, used = [], [], []
        for _ in range(count):
            for _ in range(tries):
                side = int(torch.randint(sizes[0], sizes[1] + 1, (1,), generator=g))
                x, y = (int(v) for v in torch.randint(0, canvas - side + 1, (2,), generator=g))
                square = torch.tensor([[x, y, x + side, y + side]], dtype=torch.float32)
                if not squares or float(box_iou(square, torch.cat(squares)).max()) <= max_overlap:
                    break
            else:
                continue  # no free place: the scene keeps fewer objects
            source = int(pool[torch.randint(len(pool), (1,), generator=g)])
            patch = _resize(sources[source], side)
            visible = (patch[0] >= VISIBLE).nonzero()
            if not len(visible):
                continue
            images[i, :, y:y + side, x:x + side] = torch.maximum(images[i, :, y:y + side, x:x + side], patch)
            (r0, c0), (r1, c1) = visible.min(dim=0).values.tolist(), visible.max(dim=0).values.tolist()
            boxes.append([x + c0, y + r0, x + c1 + 1, y + r1 + 1])
            labels.append(int(source_labels[source]))
            used.append(source)
            squares.append(square)
        all_boxes.append(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        all_labels.append(torch.tensor(labels, dtype=torch.int64))
        all_sources.append(torch.tensor(used, dtype=torch.int64))
    return DetectionSplit(images, all_boxes, all_labels, all_sources)


def _resize(image: torch.Tensor, side: int) -> torch.Tensor:
    """(C, h, w) uint8 -> (C, side, side) uint8, bilinear."""
    scaled = F.interpolate(image[None].float(), size=(side, side), mode="bilinear", align_corners=False)
    return scaled[0].round().clamp(0, 255).to(torch.uint8)


def digit_scenes(n_train: int = 2000, n_val: int = 200, n_test: int = 500, *, canvas: int = 64,
                 seed: int = 0) -> DetectionDataset:
    """The `digit-scenes` dataset: scenes of the embedded digits (module docstring); the 1,797 digits
    are split 70 / 10 / 20 % into the source pools of train / val / test by a fixed seed."""
    from sklearn.datasets import load_digits  # ships its data inside the wheel

    bunch = load_digits()
    sources = torch.from_numpy((bunch.images * (255.0 / 16.0)).round().astype("uint8"))[:, None]
    source_labels = torch.from_numpy(bunch.target).long()
    perm = torch.randperm(len(sources), generator=torch.Generator().manual_seed(1234))
    n_test_src, n_val_src = int(0.2 * len(perm)), int(0.1 * len(perm))
    pools = {"test": perm[:n_test_src], "val": perm[n_test_src:n_test_src + n_val_src],
             "train": perm[n_test_src + n_val_src:]}
    splits = {name: compose_scenes(sources, source_labels, pools[name], n, canvas=canvas, seed=seed + k)
              for k, (name, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test)))}
    mean, std = channel_stats(splits["train"].images)
    return DetectionDataset("digit-scenes", splits["train"], splits["val"], splits["test"], num_classes=10,
                            in_channels=1, image_size=canvas, mean=mean, std=std,
                            categories=tuple(str(d) for d in range(10)))


FASHION_CATEGORIES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                      "ankle boot")


def fashion_scenes(root, n_train: int = 2000, n_val: int = 200, n_test: int = 500, *, canvas: int = 64,
                   seed: int = 0) -> DetectionDataset:
    """`fashion-scenes`: scenes of Fashion-MNIST items (IDX files in root) as digit-scenes are built, the
    items 16 to 32 pixels; train and val scenes from disjoint parts of the training images (a fixed
    seeded 10% for val), test scenes from the test images. Flipping an item left-right keeps its class."""
    from dia_ode.data.idx import idx_loader

    train, test = idx_loader("fashion-mnist")(root, True)
    sources = torch.cat([train.images, test.images])
    source_labels = torch.cat([train.labels, test.labels])
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(1234))
    n_val_src = len(train) // 10
    pools = {"val": perm[:n_val_src], "train": perm[n_val_src:], "test": torch.arange(len(train), len(sources))}
    splits = {name: compose_scenes(sources, source_labels, pools[name], n, canvas=canvas, sizes=(16, 32),
                                   seed=seed + k)
              for k, (name, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test)))}
    mean, std = channel_stats(splits["train"].images)
    return DetectionDataset("fashion-scenes", splits["train"], splits["val"], splits["test"], num_classes=10,
                            in_channels=1, image_size=canvas, mean=mean, std=std, categories=FASHION_CATEGORIES,
                            flip=True)
