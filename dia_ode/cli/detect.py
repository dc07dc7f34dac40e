"""`dia-ode detect`: a trained detector on its test split or on a folder of images."""

from __future__ import annotations

from pathlib import Path

import click

from dia_ode.analysis.detections import detect_images, detect_split, plot_detections
from dia_ode.cli.options import CONTEXT, FiniteFloat, check_device, common_options
from dia_ode.data import DataError
from dia_ode.data.coco import to_coco
from dia_ode.engine import resolve_device
from dia_ode.rundir import CheckpointError, load_run, save_figure, start_run, write_json


@click.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--split", type=click.Choice(["test"]), default=None,
              help="Detect on the run's test split and score it with COCOeval [default, without --images].")
@click.option("--images", "images_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Detect on every image file of this folder instead (letterboxed to the run's input size); "
                   "links that lead out of the folder and files that cannot be decoded are skipped.")
@click.option("--show", type=click.IntRange(min=1), default=8, help="Images in the figure.")
@click.option("--score-threshold", type=FiniteFloat(min=0, max=1), default=0.3, show_default=True,
              help="The least score of a detection drawn in the figure (predictions.json keeps every one).")
@common_options
def detect(run_dir, split, images_dir, show, score_threshold, seed, device, out, no_progress) -> None:
    """Run a trained detector (a `dia-ode train --task detection` run) on its test split or on a folder
    of images; writes predictions.json (COCO results), on the split also ground_truth.json (its boxes as
    COCO instances), detect.json and summary.json (the same: counts, COCO metrics on the split) and a
    figure of the first images with their boxes."""
    if split is not None and images_dir is not None:
        raise click.BadParameter("give --split or --images, not both", param_hint="--images")
    check_device(device)
    try:
        run = load_run(run_dir, resolve_device(device))
    except (CheckpointError, DataError) as err:
        raise click.BadParameter(str(err), param_hint="RUN_DIR") from None
    if run.task != "detection":
        raise click.BadParameter(f"{run_dir} trained task '{run.task}', not detection", param_hint="RUN_DIR")
    if images_dir is not None and not images_dir.is_dir():
        raise click.BadParameter(f"{images_dir} is not a folder", param_hint="--images")
    categories = [str(k) for k in range(run.model.num_classes)]
    if images_dir is None:
        results, metrics, found = detect_split(run)
        images = [image.permute(1, 2, 0).numpy() for image in run.test.images[:show]]
        truth = run.test.boxes[:show]
    else:
        try:
            results, found, images, names, skipped = detect_images(run, images_dir)
        except DataError as err:
            raise click.BadParameter(str(err), param_hint="--images") from None
        metrics, truth, images = None, None, images[:show]
    config = {"command": "detect", "run_dir": str(run_dir), "split": None if images_dir else "test",
              "images": str(images_dir) if images_dir else None, "score_threshold": score_threshold}
    out_dir = start_run(out, f"detect-{run.model_name}", config)
    write_json(out_dir / "predictions.json", results)
    if images_dir is None:  # the split's boxes as COCO instances: for any other COCO evaluator
        write_json(out_dir / "ground_truth.json", to_coco(run.test, categories))
    summary = {"run_dir": str(run_dir), "model": run.model_name, "images": len(found), "detections": len(results)}
    if metrics is not None:
        summary["metrics"] = metrics
    else:
        summary["files"] = names
        summary["skipped"] = skipped  # links out of the folder, undecodable files (detect_images warns)
    for name in ("detect.json", "summary.json"):  # summary.json: what every run directory has (dia-ode ls runs)
        write_json(out_dir / name, summary)
    save_figure(plot_detections(images, found[:show], categories, truth, score_threshold), out_dir / "figures",
                "detections")
    if metrics is not None:
        click.echo(f"{run.model_name} on the test split ({len(found)} images): AP {metrics['ap']:.3f}, "
                   f"AP50 {metrics['ap50']:.3f}, AP75 {metrics['ap75']:.3f}, AR100 {metrics['ar100']:.3f}")
    else:
        click.echo(f"{run.model_name} on {len(found)} images of {images_dir}: {len(results)} detections")
    click.echo(f"-> {out_dir}")
