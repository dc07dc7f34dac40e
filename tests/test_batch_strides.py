"""Every batch the data layer hands a model has standard strides (why: dia_ode/data/strides.py).

On the machines where torch 2.13.0's oneDNN convolution backward corrupts the heap on one-channel
batches with ambiguous strides, the training test below aborts on a layout that is not forced; on the
others the stride checks are what fail.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dia_ode.data import Split, has_standard_strides, load_dataset, normalise, with_standard_strides
from dia_ode.data.scenes import digit_scenes
from dia_ode.engine import TrainConfig, run_training
from dia_ode.rundir import read_jsonl, start_run
from dia_ode.tasks import get_task

SHARDS = [(0, 1), (0, 2), (1, 2)]


def _ambiguous(batch: int = 4, side: int = 8) -> torch.Tensor:
    """A one-channel batch laid out as the old augmentation returned it: strides (64, 1, 8, 1)."""
    x = torch.rand(batch, side, side, 1).permute(0, 3, 1, 2)  # (B, 1, H, W)
    assert x.is_contiguous() and not has_standard_strides(x)  # torch calls it contiguous all the same
    return x


def test_the_helper_copies_only_what_is_not_row_major():
    x = _ambiguous()
    y = with_standard_strides(x)
    assert y.stride() == torch.empty(y.shape).stride() and torch.equal(x, y)
    assert with_standard_strides(y) is y
    assert normalise(x, (0.5,), (0.25,)).stride() == torch.empty(x.shape).stride()


def test_a_split_stores_its_images_row_major():
    images = (_ambiguous() * 255).to(torch.uint8)
    split = Split(images, torch.zeros(4, dtype=torch.int64))
    assert has_standard_strides(split.images)
    assert has_standard_strides(split.images[torch.tensor([2, 0])])


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def scenes():
    return digit_scenes(n_train=24, n_val=6, n_test=6, seed=3)


def _batches(task_name: str, dataset, augment: bool, shard: tuple[int, int], batch_size: int = 16):
    task = get_task(task_name)
    return list(task.batches(dataset.train, batch_size, dataset=dataset, device=torch.device("cpu"),
                             shuffle=True, generator=torch.Generator().manual_seed(0), augment=augment,
                             shard=shard))[:3]


@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("shard", SHARDS)
@pytest.mark.parametrize("task_name", ["classification", "diffusion"])
def test_classification_and_diffusion_batches_are_row_major(digits, task_name, augment, shard):
    for batch in _batches(task_name, digits, augment, shard):
        assert batch[0].shape[1] == 1 and has_standard_strides(batch[0]), batch[0].stride()


@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("shard", SHARDS)
def test_detection_batches_are_row_major(scenes, augment, shard):
    for images, _ in _batches("detection", scenes, augment, shard, batch_size=8):
        assert images.shape[1] == 1 and has_standard_strides(images), images.stride()


class _InputSpy(nn.Module):
    """A noise predictor that records the strides of what it is given and predicts zero."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.strides: list[bool] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.strides.append(has_standard_strides(x))
        return x * self.weight


def test_the_noised_inputs_of_diffusion_reach_the_model_row_major():
    task, spy = get_task("diffusion", {"timesteps": 100}), _InputSpy()
    x0 = _ambiguous(batch=6) * 2 - 1  # a clean batch with the ambiguous layout: the noising must not keep it
    task.loss(spy, (x0, torch.zeros(6, dtype=torch.int64), (0, 6)))
    assert spy.strides == [True]


@pytest.mark.slow
def test_a_narrow_resnet_trains_on_augmented_one_channel_batches_on_one_thread(tmp_path):
    """The reduced case: resnet20 at base width 4 on augmented digits, one torch thread (the session
    fixture sets it), one epoch; it aborted in the convolution backward where the layout was ambiguous."""
    assert torch.get_num_threads() == 1
    config = TrainConfig(model="resnet20", epochs=1, batch_size=128, device="cpu", model_options={"base_width": 4})
    from dataclasses import asdict
    run_dir = start_run(tmp_path, "train", {"command": "train", **asdict(config)}, argv=["test"])
    summary = run_training(config, run_dir, progress=False)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert len(rows) == 1 and torch.isfinite(torch.tensor(rows[0]["train_loss"]))
    assert 0.0 <= summary["test_acc"] <= 1.0
