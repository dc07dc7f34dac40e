"""A trained detector applied to a split or to image files: COCO results, metrics and drawn boxes.

Reads a run directory loaded back (rundir.load_run); the images are normalised with the run's own
statistics. Image files are read and letterboxed as a COCO folder's are (data/coco_folder.py: Pillow,
the run's channels, scaled to fit its square input, centred on black), and their boxes are mapped
back to the file's own pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from dia_ode.data import DataError, normalise
from dia_ode.data.coco_folder import decode_image, letterbox
from dia_ode.data.detection_batches import iterate_detection_batches
from dia_ode.tasks.coco_eval import coco_metrics
from dia_ode.tasks.detection import decoded, detection_dicts, ground_truth

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")


@torch.no_grad()
def detect_split(run, batch_size: int = 128) -> tuple[list[dict], dict[str, float], list[dict]]:
    """(COCO results, COCO metrics, per-image detections in input pixels) of the run's test split, on the
    device the run's model sits on."""
    device = next(run.model.parameters()).device
    results, per_image, truth = [], [], []
    for x, targets in iterate_detection_batches(run.test, batch_size, mean=run.mean, std=run.std, device=device):
        found_results, found_truth, found = decoded(run.model, run.model(x), targets)
        results.extend(found_results)
        truth.extend(found_truth)
        per_image.extend({key: value.cpu() for key, value in image.items()} for image in found)
    return results, coco_metrics(ground_truth(truth, run.model.num_classes), results), per_image


@torch.no_grad()
def detect_images(run, folder: Path) -> tuple[list[dict], list[dict], list[np.ndarray], list[str]]:
    """(COCO results with image ids 1.. in file-name order, per-image detections in the files' pixels,
    the images, their names) of every image file in `folder` (not its subfolders)."""
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    channels, size = run.test.images.shape[1], run.test.images.shape[-1]  # what the model was trained on
    device = next(run.model.parameters()).device
    results, per_image, images = [], [], []
    for image_id, path in enumerate(paths, start=1):
        image = decode_image(path, channels)
        boxed, scale, (dx, dy) = letterbox(image, size)
        x = normalise(boxed[None].to(device).float() / 255.0, run.mean, run.std)
        found = {key: value.cpu() for key, value in run.model.decode(run.model(x))[0].items()}
        shift = torch.tensor([dx, dy, dx, dy], dtype=found["boxes"].dtype)
        found = {**found, "boxes": (found["boxes"] - shift) / scale}
        results.extend(detection_dicts(image_id, found))
        per_image.append(found)
        images.append(image)
    return results, per_image, images, [p.name for p in paths]


def plot_detections(images: list[np.ndarray], detections: list[dict], categories: list[str],
                    truth: list[torch.Tensor] | None = None, score_threshold: float = 0.3, columns: int = 4) -> Figure:
    """A grid of images with their detections above score_threshold (label and score) and, where given,
    the true boxes dashed."""
    rows = max(1, -(-len(images) // columns))
    fig = Figure(figsize=(2.6 * columns, 2.6 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for k, ax in enumerate(axes):
        ax.set_axis_off()
        if k >= len(images):
            continue
        image = images[k]
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None)
        if truth is not None:
            for x0, y0, x1, y1 in truth[k].tolist():
                ax.add_patch(_rectangle(x0, y0, x1, y1, "C2", "--"))
        found = detections[k]
        for (x0, y0, x1, y1), score, label in zip(found["boxes"].tolist(), found["scores"].tolist(),
                                                  found["labels"].tolist()):
            if score < score_threshold:
                continue
            ax.add_patch(_rectangle(x0, y0, x1, y1, "C3", "-"))
            ax.text(x0, y0, f"{categories[label]} {score:.2f}", color="yellow", fontsize=7, va="bottom")
    return fig


def _rectangle(x0, y0, x1, y1, color, style):
    from matplotlib.patches import Rectangle
    # pixel centres sit at integer coordinates in imshow: a box edge at x lies at x - 0.5
    return Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=color, linestyle=style,
                     linewidth=1)
