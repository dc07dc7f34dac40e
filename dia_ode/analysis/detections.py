"""A trained detector applied to a split or to image files: COCO results, metrics and drawn boxes.

Reads a run directory loaded back (rundir.load_run); the images are normalised with the run's own
statistics. Image files are read and letterboxed as a COCO folder's are (data/coco_folder.py: Pillow,
the run's channels, scaled to fit its square input, centred on black), and their boxes are mapped
back to the file's own pixels.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patheffects import withStroke

from dia_ode.data import DataError, normalise
from dia_ode.data.coco_folder import NAMED_IN_WARNING, decode_image, letterbox
from dia_ode.data.detection_batches import iterate_detection_batches
from dia_ode.tasks.coco_eval import coco_metrics
from dia_ode.tasks.detection import decoded, detection_dicts, ground_truth

log = logging.getLogger(__name__)
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
def detect_images(run, folder: Path) -> tuple[list[dict], list[dict], list[np.ndarray], list[str],
                                              dict[str, list[str]]]:
    """(COCO results with image ids 1.. in file-name order, per-image detections in the files' pixels,
    the images, their names, what was skipped) of every image file in `folder` (not its subfolders).

    Skipped with a warning that counts them, as a COCO folder's loader skips its images
    (data/coco_folder.py): links that resolve outside the folder (never opened), and files Pillow cannot
    decode; when no image is left that is an error. The last item: {"outside": the links' names,
    "unreadable": why each file could not be read}.
    """
    root = folder.resolve()
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    outside = [p.name for p in paths if not p.resolve().is_relative_to(root)]
    channels, size = run.test.images.shape[1], run.test.images.shape[-1]  # what the model was trained on
    device = next(run.model.parameters()).device
    results, per_image, images, names, unreadable = [], [], [], [], []
    for path in (p for p in paths if p.name not in outside):
        try:
            image = decode_image(path, channels)
        except DataError as err:
            unreadable.append(str(err))
            continue
        boxed, scale, (dx, dy) = letterbox(image, size)
        x = normalise(boxed[None].to(device).float() / 255.0, run.mean, run.std)
        found = {key: value.cpu() for key, value in run.model.decode(run.model(x))[0].items()}
        shift = torch.tensor([dx, dy, dx, dy], dtype=found["boxes"].dtype)
        found = {**found, "boxes": (found["boxes"] - shift) / scale}
        results.extend(detection_dicts(len(images) + 1, found))  # image ids 1.. over the images read
        per_image.append(found)
        images.append(image)
        names.append(path.name)
    if outside:
        log.warning(f"{folder}: skipped {len(outside)} link(s) that lead out of the folder: "
                    + ", ".join(outside[:NAMED_IN_WARNING]))
    if unreadable:
        log.warning(f"{folder}: skipped {len(unreadable)} image(s) that could not be read; first: "
                    + "; ".join(unreadable[:NAMED_IN_WARNING]))
    if not images:
        raise DataError(f"{folder}: no readable image (of {len(paths)} image files; {len(outside)} links out of "
                        f"the folder, {len(unreadable)} undecodable)")
    return results, per_image, images, names, {"outside": outside, "unreadable": unreadable}


# Where a box's label may go, tried in this order (data coordinates of an image: y grows downwards): just
# above the box, just below it, inside along its top, inside along its bottom; each from the left edge,
# then from the right. The first spot inside the image that touches no label placed before is taken.
LABEL_SPOTS = tuple((x, y, ha, va) for x, ha in ((0, "left"), (2, "right"))
                    for y, va in ((1, "bottom"), (3, "top"), (1, "top"), (3, "bottom")))
# the true boxes: white with a black edge, no class's colour and visible on dark and light pixels alike
TRUTH_STYLE = {"color": "white", "linestyle": "--", "path_effects": [withStroke(linewidth=2.2, foreground="black")]}


def plot_detections(images: list[np.ndarray], detections: list[dict], categories: list[str],
                    truth: list[torch.Tensor] | None = None, score_threshold: float = 0.3, columns: int = 4) -> Figure:
    """A grid of images with their detections scoring at least score_threshold and, where given, the true
    boxes dashed.

    Each detection is a solid box in its class's colour with a label "class score"; labels are placed so
    that no two overlap (LABEL_SPOTS), and a legend below the grid says which colour is which class.

    Args:
        images: (H, W, C) arrays, C = 1 (drawn grey) or 3.
        detections: per image {"boxes": (k, 4) xyxy in the image's pixels, "scores": (k,), "labels": (k,)}.
        categories: class names, index = label.
        truth: per image the true boxes (m, 4) xyxy, or None.
        score_threshold: the least score drawn.
        columns: images per row.

    Returns:
        The figure, its layout fixed (labels were placed on the laid-out axes).
    """
    rows = max(1, -(-len(images) // columns))
    fig = Figure(figsize=(2.6 * columns, 2.6 * rows + 0.8), layout="constrained")
    fig.suptitle(f"Detections scoring at least {score_threshold:g} (solid, labelled with class and score)")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    drawn: list[tuple] = []  # (axes, class index, label, (x0, y0, x1, y1), colour) of every box drawn
    for k, ax in enumerate(axes):
        ax.set_axis_off()
        if k < len(images):
            _draw_image(ax, images[k], None if truth is None else truth[k])
            drawn += _draw_boxes(ax, detections[k], categories, score_threshold)
    _detections_legend(fig, {d[1]: d[4] for d in sorted(drawn, key=lambda d: d[1])}, categories, truth is not None)
    renderer = FigureCanvasAgg(fig).get_renderer()  # text extents in pixels, measured as Agg draws them
    fig.draw_without_rendering()  # lay the axes out: labels are placed in their final pixels
    fig.set_layout_engine("none")  # and kept there when the figure is saved
    for ax in axes:
        _place_labels(ax, [d[2:] for d in drawn if d[0] is ax], renderer)
    return fig


def _draw_image(ax, image: np.ndarray, truth: torch.Tensor | None) -> None:
    grey = image.shape[-1] == 1
    ax.imshow(image[..., 0] if grey else image, cmap="gray" if grey else None)
    for x0, y0, x1, y1 in ([] if truth is None else truth.tolist()):
        ax.add_patch(_rectangle(x0, y0, x1, y1, TRUTH_STYLE["color"], "--",
                                path_effects=TRUTH_STYLE["path_effects"]))


def _draw_boxes(ax, found: dict, categories: list[str], score_threshold: float) -> list[tuple]:
    """Draw the boxes scoring at least score_threshold; (ax, class, label, box, colour) of each, best score first."""
    kept = []
    for box, score, label in sorted(zip(found["boxes"].tolist(), found["scores"].tolist(), found["labels"].tolist()),
                                    key=lambda row: -row[1]):
        if score >= score_threshold:
            color = f"C{label % 10}"
            ax.add_patch(_rectangle(*box, color, "-"))
            kept.append((ax, label, f"{categories[label]} {score:.2f}", box, color))
    return kept


def _place_labels(ax, labels: list[tuple], renderer) -> None:
    """Put each (text, box, colour) at the first of LABEL_SPOTS inside the axes that overlaps no placed
    label; where every spot collides, at the spot with the least overlap."""
    placed = []
    for text, box, color in labels:
        best = None
        for x, y, ha, va in LABEL_SPOTS:
            artist = ax.text(box[x] - 0.5, box[y] - 0.5, text, ha=ha, va=va, fontsize=7, color="white",
                             bbox={"facecolor": color, "alpha": 0.8, "pad": 1, "linewidth": 0})
            extent = artist.get_window_extent(renderer)
            cost = sum(_overlap(extent, other) for other in placed) + _outside(extent, ax.bbox)
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, artist, extent)
            else:
                artist.remove()
            if cost == 0:
                break
        placed.append(best[2])


def _overlap(a, b) -> float:
    """The area two display boxes share (0 when apart)."""
    return max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0)) * max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))


def _outside(extent, frame) -> float:
    """The area of a display box outside the frame."""
    return extent.width * extent.height - _overlap(extent, frame)


def _detections_legend(fig: Figure, colors: dict[int, str], categories: list[str], with_truth: bool) -> None:
    """A legend below the grid: one entry per class drawn (class index -> colour), and the dashed ground truth."""
    handles = [Line2D([], [], color=color, label=f"predicted {categories[label]}") for label, color in colors.items()]
    if with_truth:
        handles.append(Line2D([], [], label="ground truth", **TRUTH_STYLE))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(6, len(handles)), fontsize=8)


def _rectangle(x0, y0, x1, y1, color, style, **kwargs):
    from matplotlib.patches import Rectangle
    # pixel centres sit at integer coordinates in imshow: a box edge at x lies at x - 0.5
    return Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=color, linestyle=style,
                     linewidth=1, **kwargs)
