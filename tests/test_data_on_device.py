"""A dataset made resident on the training device (Split.to, Dataset.to) gives the batches of the host path.

The draws stay on a CPU generator whatever the split's device, so one seed gives bit-identical batches;
the reference below spells the draw order out, so a moved draw fails here even where both paths are
the same code (a CPU-only machine).
"""

from __future__ import annotations

import pytest
import torch

from dia_ode.data import (Augment, Dataset, Split, global_batches, has_standard_strides, iterate_batches,
                          keeps_data_on, load_dataset, normalise, shard_split)
from dia_ode.data.detection_batches import BoxAugment, iterate_detection_batches
from dia_ode.data.scenes import DetectionDataset, digit_scenes

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
AUGMENT = Augment(pad=2, flip=True)
BATCH = 96  # digits' train split is not a multiple: the last batch is short


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def epoch(split: Split, device: str, *, seed: int = 3, augment: Augment | None = AUGMENT, shuffle: bool = True,
          shard: tuple[int, int] = (0, 1), mean=(0.3,), std=(0.2,)) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return list(iterate_batches(split, BATCH, mean=mean, std=std, shuffle=shuffle, generator=gen, augment=augment,
                                device=device, shard=shard))


def reference(split: Split, *, seed: int = 3, shard: tuple[int, int] = (0, 1), mean=(0.3,), std=(0.2,)):
    """The documented draws, on the host: randperm(N), then each global batch's augmentation."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(split), generator=gen)
    rank, world = shard
    for start, size in global_batches(len(split), BATCH, world):
        index = order[start:start + size]
        x = AUGMENT(split.images[index].float() / 255.0, gen)
        yield normalise(x.tensor_split(world)[rank], mean, std), split.labels[index.tensor_split(world)[rank]]


def assert_same(got, expected) -> None:
    assert len(got) == len(expected) > 0
    for (x, y), (x0, y0) in zip(got, expected):
        assert x.device == x0.device and y.device == y0.device
        assert torch.equal(x, x0) and torch.equal(y, y0)


def test_keeps_data_on_a_gpu_only():
    assert keeps_data_on(torch.device("cuda")) and keeps_data_on("cuda:1")
    assert not keeps_data_on("cpu") and not keeps_data_on(torch.device("cpu"))


@pytest.mark.parametrize("device", DEVICES)
def test_split_to_keeps_dtype_shape_and_standard_strides(digits, device):
    split = Split(digits.train.images.permute(0, 2, 3, 1).permute(0, 3, 1, 2), digits.train.labels)
    moved = split.to(device)
    assert moved.device.type == device and moved.labels.device.type == device
    assert moved.images.dtype == torch.uint8 and moved.labels.dtype == torch.int64
    assert moved.images.shape == split.images.shape and moved.labels.shape == split.labels.shape
    assert has_standard_strides(moved.images)
    assert torch.equal(moved.images.cpu(), split.images) and torch.equal(moved.labels.cpu(), split.labels)


@pytest.mark.parametrize("device", DEVICES)
def test_dataset_to_moves_every_split_and_keeps_the_rest(digits, device):
    moved = digits.to(device)
    assert all(getattr(moved, s).device.type == device for s in ("train", "val", "test"))
    assert (moved.name, moved.mean, moved.std, moved.augment) == (digits.name, digits.mean, digits.std, digits.augment)
    assert digits.train.device.type == "cpu"  # the original is left alone


def test_a_split_refuses_images_and_labels_on_two_devices(digits):
    with pytest.raises(ValueError, match="share a device"):
        Split(digits.train.images, digits.train.labels.to("meta"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shard", [(0, 1), (0, 2), (1, 2)])
def test_resident_batches_equal_the_host_batches(digits, device, shard):
    host = epoch(digits.train, device, shard=shard)
    resident = epoch(digits.train.to(device), device, shard=shard)
    assert_same(resident, host)
    assert_same(host, [(x.to(device), y.to(device)) for x, y in reference(digits.train, shard=shard)])


def test_a_moved_draw_is_caught(digits):
    """The check above can fail: a second seed, or an epoch whose augmentation draws before the
    permutation, gives other batches."""
    expected = list(reference(digits.train))
    with pytest.raises(AssertionError):
        assert_same(epoch(digits.train, "cpu", seed=4), expected)
    gen = torch.Generator().manual_seed(3)
    AUGMENT(digits.train.images[:BATCH].float(), gen)  # a draw moved ahead of randperm
    moved = list(iterate_batches(digits.train, BATCH, mean=(0.3,), std=(0.2,), shuffle=True, generator=gen,
                                 augment=AUGMENT))
    with pytest.raises(AssertionError):
        assert_same(moved, expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("world", [1, 2])
def test_evaluation_of_a_resident_split(digits, device, world):
    """The trainer's evaluation: shard_split, then unshuffled batches without augmentation."""
    for rank in range(world):
        part = shard_split(digits.val.to(device), rank, world)
        assert part.device.type == device
        host = shard_split(digits.val, rank, world)
        assert_same(epoch(part, device, shuffle=False, augment=None),
                    epoch(host, device, shuffle=False, augment=None))


@pytest.fixture(scope="module")
def scenes() -> DetectionDataset:
    return digit_scenes(n_train=24, n_val=8, n_test=8, canvas=32)


@pytest.mark.parametrize("device", DEVICES)
def test_detection_dataset_to_moves_the_images_only(scenes, device):
    moved = scenes.to(device)
    for name in ("train", "val", "test"):
        split, before = getattr(moved, name), getattr(scenes, name)
        assert split.images.device.type == device and has_standard_strides(split.images)
        assert torch.equal(split.images.cpu(), before.images)
        assert split.boxes is before.boxes and split.labels is before.labels and split.ids is before.ids
    assert moved.categories == scenes.categories


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("augment", [None, BoxAugment(flip=True)])
@pytest.mark.parametrize("shard", [(0, 1), (1, 2)])
def test_resident_detection_batches_equal_the_host_batches(scenes, device, augment, shard):
    def run(split):
        return list(iterate_detection_batches(split, 10, mean=scenes.mean, std=scenes.std, shuffle=True,
                                              generator=torch.Generator().manual_seed(5), augment=augment,
                                              device=device, shard=shard))
    host, resident = run(scenes.train), run(scenes.train.to(device))
    assert len(host) == len(resident) == 3
    for (x, targets), (x0, targets0) in zip(resident, host):
        assert torch.equal(x, x0)
        for t, t0 in zip(targets, targets0, strict=True):
            assert t["image_id"] == t0["image_id"]
            assert torch.equal(t["boxes"], t0["boxes"]) and torch.equal(t["labels"], t0["labels"])
    part = shard_split(scenes.val.to(device), 1, 2)  # evaluation's shard of a resident split
    assert part.images.device.type == device and part.ids.tolist() == scenes.val.ids[4:].tolist()
