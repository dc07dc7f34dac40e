"""`dia-ode compare`: train (or load) discrete and continuous-depth models and tabulate them."""

from __future__ import annotations

from pathlib import Path

import click
import torch

from dia_ode.cli.options import (CONTEXT, CommaList, FiniteFloat, NameChoice, check_device, check_model, check_seeds,
                                common_options, model_option, option_targets, parse_model_options, seeds_option)
from dia_ode.data import DataError, list_datasets, load_dataset
from dia_ode.engine import TrainConfig, resolve_device
from dia_ode.rundir import CheckpointError, read_config, save_figure, start_run, write_json
from dia_ode.studies.compare import DEFAULT_MODELS, SHARED, CompareError, compare_runs, train_models
from dia_ode.studies.compare_figures import compare_figures
from dia_ode.studies.compare_stats import aggregate_rows, check_pools, markdown_table
from dia_ode.util import UnreadableFile


@click.command(context_settings=CONTEXT)
@click.option("--models", type=CommaList(), default=",".join(DEFAULT_MODELS),
              help="Comma-separated model names to train.")
@click.option("--dataset", type=NameChoice(list_datasets()), default="digits", help="Dataset.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="Folder of the dataset files.")
@click.option("--epochs", type=click.IntRange(min=1), default=15, help="Epochs per model (the shared budget).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, help="Batch size.")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=0.1, help="Peak learning rate.")
@click.option("--samples", type=click.IntRange(min=1), default=32, help="Test samples for the step-size profile.")
@model_option
@seeds_option
@click.option("--from", "from_runs", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Evaluate these trained run directories instead of training (repeat the option).")
@common_options
@click.pass_context
def compare(ctx: click.Context, models, dataset, data_dir, epochs, batch_size, lr, samples,
            model_option_pairs, seeds, from_runs, seed, device, out, no_progress) -> None:
    """Accuracy, parameters, NFE, time and memory of discrete and continuous-depth models in one table.

    Every model trains with the shared budget (dataset, epochs, batch size, seed, --model-option); the
    rest follows its recipe where it has one (the ViTs: AdamW, warm-up + cosine) unless --lr is given.
    With --seeds every model trains once per seed and the table gives mean ± std, a 95% interval and n;
    --from runs of one model (same options) are pooled the same way; they must have been trained alike
    up to the seed (dataset, epochs, lr, ...), else the differing field is named and nothing runs.
    """
    check_device(device)
    check_seeds(ctx, seeds)
    if from_runs:
        if seeds:
            raise click.UsageError("--seeds trains the models; --from runs keep the seeds they were trained with")
        for run_dir in from_runs:  # fail before making an output directory
            if not (run_dir / "config.json").is_file():
                raise click.BadParameter(f"{run_dir} is not a training run directory (no config.json)",
                                         param_hint="--from")
        try:  # the runs of one model are pooled: they must have been trained alike up to the seed
            check_pools([read_config(d) for d in from_runs], [str(d) for d in from_runs])
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--from") from None
        desc, config = "compare-from", {"command": "compare", "from": [str(p) for p in from_runs]}
    else:
        names = models
        targets = option_targets(model_option_pairs)
        if targets - set(names):
            raise click.BadParameter(f"options target {', '.join(sorted(targets - set(names)))}, which --models "
                                     f"does not list", param_hint="--model-option")
        per_model = {name: parse_model_options(model_option_pairs, name) for name in names}
        for name in names:
            check_model(name, per_model[name], several_models=len(names) > 1)
        try:
            data = load_dataset(dataset, data_dir)
        except DataError as err:
            raise click.BadParameter(str(err), param_hint="--data-dir/--dataset") from None
        for name in names:
            check_model(name, per_model[name], data)
        # each model's own options replace base.model_options in train_models
        base = TrainConfig(dataset=dataset, data_dir=str(data_dir) if data_dir else None, epochs=epochs,
                           batch_size=batch_size, lr=lr, seed=seed, device=device)
        desc = f"compare-{dataset}"
        config = {"command": "compare", "models": names, "dataset": dataset, "epochs": epochs,
                  "batch_size": batch_size, "lr": lr, **({"seeds": list(seeds)} if seeds else {"seed": seed}),
                  "model_options": per_model}
    out_dir = start_run(out, desc, config)
    if not from_runs:  # training takes a while: say where it goes; --from only reads (its "->" line says where)
        click.echo(f"run directory: {out_dir}")
    if from_runs:
        run_dirs = list(from_runs)
    else:
        try:
            lr_given = ctx.get_parameter_source("lr") == click.core.ParameterSource.COMMANDLINE
            run_dirs = train_models(base, names, out_dir / "runs", threads=torch.get_num_threads(),
                                    given=SHARED | ({"lr"} if lr_given else set()), model_options=per_model,
                                    seeds=seeds)
        except CompareError as err:
            raise click.ClickException(str(err)) from None
    try:
        rows = compare_runs(run_dirs, resolve_device(device), samples=samples)
    except (CheckpointError, DataError, CompareError, UnreadableFile) as err:  # UnreadableFile: a run's summary or
        raise click.BadParameter(str(err), param_hint="--from") from None  # metrics file (a FIFO, broken JSON)
    pooled = aggregate_rows(rows)  # per model over its seeds
    write_json(out_dir / "compare.json", {"runs": rows, "models": pooled})
    table = markdown_table(pooled)
    (out_dir / "compare.md").write_text(table)
    curves = ("steps", "nfe_history", "config")  # figures' data and the runs' configs: in compare.json only
    write_json(out_dir / "summary.json", {"rows": [{k: r[k] for k in r if k not in curves} for r in rows],
                                          "models": [{k: m[k] for k in m if k not in curves} for m in pooled]})
    for name, fig in compare_figures(pooled, out_dir.name):
        save_figure(fig, out_dir / "figures", name)
    click.echo(table, nl=False)
    click.echo(f"-> {out_dir}")
