"""Sample quality of generated images: a Fréchet distance and confident labels, by a project-trained classifier.

The standard FID network (Inception v3) cannot be downloaded here, so the feature network is a
classifier this project trains on the same dataset: its pooled features (what its linear head reads)
give the Fréchet distance (frechet.py), its softmax the labels. Every number comes with its floor on
real images: the distance between the real training and test images (at the same number of images as
the samples it is compared with), and the confident fraction of the real test images. The network is either a run given by the user (`--feature-run RUN_DIR`: a
classification run on the same dataset) or trained once here and cached (FEATURE_RECIPE, under
$DIA_ODE_CACHE or ~/.cache/dia_ode, keyed by dataset, the resolved folder its files are read from, and
split seed: two MNIST folders get two classifiers).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dia_ode.analysis.frechet import feature_distance
from dia_ode.data import Split
from dia_ode.data.registry import DATASETS, data_root_folder
from dia_ode.engine import TrainConfig, run_training
from dia_ode.rundir import LoadedRun, load_run, read_summary, write_json

# resnet20 for 20 epochs: test accuracy 0.98+ on digits in about a minute on 2 cores
FEATURE_RECIPE = {"model": "resnet20", "epochs": 20}
CONFIDENT = 0.9  # a sample is confidently labelled when the classifier's top probability reaches this


class FeatureNetError(ValueError):
    """The feature network does not fit the run whose samples it is to judge."""


def cache_root() -> Path:
    """$DIA_ODE_CACHE, else ~/.cache/dia_ode."""
    return Path(os.environ.get("DIA_ODE_CACHE") or Path.home() / ".cache" / "dia_ode").expanduser()


def cached_feature_run(dataset: str, *, data_dir: str | None = None, split_seed: int = 0,
                       device: str = "cpu", progress: bool = False) -> Path:
    """The cached feature classifier's run directory for a dataset, trained first if it is not there.

    Trained into a temporary folder and moved into place once finished, so an interrupted training
    leaves no half-made cache entry. The entry's name holds a digest of the resolved data folder
    (feature_cache_name), so another folder of the same dataset gets its own classifier.
    """
    name = feature_cache_name(dataset, data_dir, split_seed)
    target = cache_root() / "feature-nets" / name
    if read_summary(target).get("status") == "finished":
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        cfg = TrainConfig(dataset=dataset, data_dir=data_dir, split_seed=split_seed, device=device, **FEATURE_RECIPE)
        write_json(staging / "config.json", {"command": "train", **asdict(cfg)})
        run_training(cfg, staging, progress=progress)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def feature_cache_name(dataset: str, data_dir: str | os.PathLike | None = None, split_seed: int = 0) -> str:
    """The cache entry of the feature classifier of a dataset read from data_dir (the dataset's own
    folder where None: $DIA_ODE_DATA/<name> or its default, as load_dataset finds it): dataset, a digest
    of the resolved folder, split seed, recipe. An embedded dataset (digits) has no folder and no digest."""
    folder = _data_folder(dataset, data_dir)
    where = "" if folder is None else f"-{hashlib.sha256(str(folder).encode()).hexdigest()[:12]}"
    return f"{dataset}{where}-split{split_seed}-{FEATURE_RECIPE['model']}-{FEATURE_RECIPE['epochs']}ep"


def _data_folder(dataset: str, data_dir: str | os.PathLike | None) -> Path | None:
    """The resolved folder load_dataset reads the dataset from (registry order: data_dir, then
    DATA_ENV/<name>, then the dataset's default); None for a dataset without files."""
    key = dataset.strip().lower().replace("_", "-")
    spec = DATASETS.get(key)
    if spec is None or not spec.needs_dir:
        return None
    folder = data_dir if data_dir is not None else (data_root_folder(key) or spec.default_dir)
    return None if folder is None else Path(folder).expanduser().resolve()


@dataclass
class FeatureNet:
    """A trained classifier read as a feature map: pooled features and class probabilities of images.

    Attributes:
        run: the classification run (its model in eval mode, its normalisation).
    """

    run: LoadedRun

    @classmethod
    def from_run(cls, run_dir: str | Path, dataset: str, device: torch.device | str = "cpu") -> "FeatureNet":
        """The classifier of a run directory, checked to be a classification run on `dataset`.

        Raises:
            CheckpointError: not a loadable run.
            FeatureNetError: another task or dataset.
        """
        run = load_run(run_dir, device)
        if run.task != "classification" or run.dataset_name != dataset:
            raise FeatureNetError(f"feature run {run_dir} trains {run.task} on {run.dataset_name}; it must be a "
                                  f"classification run on {dataset}")
        if not isinstance(getattr(run.model, "head", None), nn.Module):
            raise FeatureNetError(f"feature run {run_dir}: model {run.model_name} has no linear head to read "
                                  f"features before")
        return cls(run)

    @torch.no_grad()
    def read(self, images: torch.Tensor, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
        """(features (N, D), probabilities (N, K)) of images (N, C, H, W) in [0, 1]."""
        model, device = self.run.model, next(self.run.model.parameters()).device
        mean = torch.tensor(self.run.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.run.std, device=device).view(1, -1, 1, 1)
        captured: list[torch.Tensor] = []
        hook = model.head.register_forward_pre_hook(lambda module, args: captured.append(args[0].flatten(1)))
        try:
            probabilities = [model((images[i:i + batch_size].to(device) - mean) / std).softmax(dim=1)
                             for i in range(0, len(images), batch_size)]
        finally:
            hook.remove()
        return torch.cat(captured).double().cpu().numpy(), torch.cat(probabilities).double().cpu().numpy()


def pixels(split: Split) -> torch.Tensor:
    """A split's images as float32 in [0, 1]."""
    return split.images.float() / 255


@dataclass
class RealFeatures:
    """The feature network's reading of the real images, computed once for any number of sample sets.

    Attributes:
        net: the feature network.
        train: features of the training images (N_train, D).
        test: features of the test images (N_test, D).
        test_top: the classifier's top probability on each test image (N_test,).
        about: the classifier's run directory, model and test accuracy (for every result row).
    """

    net: FeatureNet
    train: np.ndarray
    test: np.ndarray
    test_top: np.ndarray
    about: dict

    @classmethod
    def of(cls, net: FeatureNet, train: Split, test: Split) -> "RealFeatures":
        train_features, _ = net.read(pixels(train))
        test_features, test_probabilities = net.read(pixels(test))
        run = net.run
        about = {"run": str(run.run_dir), "model": run.model_name, "test_acc": read_summary(run.run_dir).get("test_acc")}
        return cls(net, train_features, test_features, test_probabilities.max(axis=1), about)


def sample_quality(samples: torch.Tensor, real: RealFeatures) -> dict:
    """The quality numbers of generated images against the real ones (module docstring).

    FID is biased upwards at small n, so the ratio to the floor compares equal numbers of images: the
    floor is the distance of n real test images to the training images, n = min(samples, test images),
    and `fid_ratio` divides the distance of the first n samples by it.

    Returns:
        fid: Fréchet distance of all the samples' features to the training images'.
        fid_matched, fid_floor, matched_n: the same for the first n samples, and for the n real test
            images (the value a perfect generator reaches at this n); fid_ratio = fid_matched / fid_floor.
        confident: fraction of samples whose top class probability >= CONFIDENT; confident_real: the
            same of the real test images. mean_confidence: the samples' mean top probability.
        class_histogram: the fraction of samples per predicted class (mode collapse shows here).
        feature_net: the classifier's run directory and test accuracy.

    Raises:
        ValueError: fewer than 2 samples (a covariance needs two).
    """
    if len(samples) < 2:
        raise ValueError(f"FID needs at least 2 samples, got {len(samples)}")
    features, probabilities = real.net.read(samples)
    n = min(len(features), len(real.test))
    matched, floor = feature_distance(features[:n], real.train), feature_distance(real.test[:n], real.train)
    top = probabilities.max(axis=1)
    histogram = np.bincount(probabilities.argmax(axis=1), minlength=probabilities.shape[1]) / len(probabilities)
    return {"fid": feature_distance(features, real.train), "fid_matched": matched, "fid_floor": floor,
            "matched_n": n, "fid_ratio": matched / floor if floor > 0 else float("inf"),
            "confident": float((top >= CONFIDENT).mean()), "confident_real": float((real.test_top >= CONFIDENT).mean()),
            "mean_confidence": float(top.mean()), "class_histogram": [round(float(h), 4) for h in histogram],
            "feature_net": real.about,
            "feature_dims": int(features.shape[1]), "confident_threshold": CONFIDENT}


__all__ = ["CONFIDENT", "FEATURE_RECIPE", "FeatureNet", "FeatureNetError", "RealFeatures", "cache_root",
           "cached_feature_run", "feature_cache_name", "pixels", "sample_quality"]
