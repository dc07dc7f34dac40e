"""Training from Python in one call: a new run directory, the training, the directory back.

`dia_ode.train(model="dia_resnet56", epochs=20)` leaves the run directory that `dia-ode train --model
dia_resnet56 --epochs 20` leaves, so `dia_ode.load_run`, `--resume` and every analysis command read
either. It runs in this process; data parallelism under torchrun stays the command's.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

from dia_ode.engine.config import TrainConfig, recipe_config
from dia_ode.engine.trainer import run_training
from dia_ode.rundir import failed_runs_cleanup, run_description, start_run
from dia_ode.util import did_you_mean

FIELDS = tuple(f.name for f in fields(TrainConfig))


def train(config: TrainConfig | None = None, out: str | Path = "runs", *, progress: bool = True,
          **options) -> Path:
    """Train a model into a new run directory under `out` and return the directory.

    Give a whole TrainConfig, or its fields by keyword. Keyword fields get the model's and the task's
    recipe wherever they leave a field out, as options left off `dia-ode train` do (a ViT trains with
    AdamW and warm-up unless `optimizer` is given); a TrainConfig is taken as it is. A training that
    fails before its first checkpoint leaves no directory behind.

    Args:
        config: the whole configuration; None builds one from `options`.
        out: parent folder of the run directory (created if needed).
        progress: show progress bars.
        **options: TrainConfig fields, e.g. model="dia_resnet56", dataset="fashion-mnist", epochs=20,
            train_examples=512, model_options={"reduction": 8}.

    Returns:
        The run directory: config.json, metrics.jsonl, summary.json (the test metrics), checkpoints/last.pt
        and figures/, as the command writes them.

    Raises:
        TypeError: a keyword that is no TrainConfig field (the message offers the close ones), or both a
            config and keywords.
        ValueError: a bad value: ConfigError names the field; an unknown model, task, dataset or option
            names the close matches. DataError: data that cannot be loaded.
        TrainingDiverged: the loss became NaN or Inf (the last good checkpoint is kept).
    """
    if config is not None and options:
        raise TypeError("give a TrainConfig or its fields as keywords, not both")
    if config is None:
        unknown = sorted(set(options) - set(FIELDS))
        if unknown:
            raise TypeError(f"train() got no TrainConfig field {', '.join(map(repr, unknown))}"
                            f"{did_you_mean(unknown, FIELDS)}; fields: {', '.join(FIELDS)}")
        config = recipe_config({**asdict(TrainConfig()), **options}, set(options))
    config.validate()
    call = ", ".join(f"{key}={value!r}" for key, value in options.items()) or "TrainConfig(...) in config.json"
    with failed_runs_cleanup():  # a run refused before its first epoch (bad option, missing data) is removed
        run_dir = start_run(out, run_description("train", config.model, config.model_options, config.dataset),
                            {"command": "train", **asdict(config)}, argv=[f"dia_ode.train({call})"])
        run_training(config, run_dir, progress=progress)
    return run_dir
