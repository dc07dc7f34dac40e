"""`dia-ode compare`: discrete and continuous-depth models in one table."""

import json
from dataclasses import asdict

import pytest
from click.testing import CliRunner

from dia_ode.cli import main
from dia_ode.studies.compare import COLUMNS
from dia_ode.studies.compare_stats import CI_COLUMN, TABLE_COLUMNS, aggregate_rows, markdown_table
from dia_ode.rundir import start_run
from dia_ode.engine import TrainConfig, run_training


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _only_dir(out):
    (d,) = [p for p in out.iterdir() if p.is_dir()]
    return d


def _check_outputs(out_dir, models):
    rows = json.loads((out_dir / "compare.json").read_text())["runs"]
    assert [r["model"] for r in rows] == models
    for row in rows:
        assert set(COLUMNS) <= set(row)
        assert row["kind"] == ("continuous" if "odenet" in row["model"] else "discrete")
        assert 0 <= row["test_acc"] <= 1 and row["params"] > 0 and row["nfe_forward"] > 0
        assert len(row["steps"]["s"]) == len(row["steps"]["h"]) > 0
    table = (out_dir / "compare.md").read_text().split("\n\n")[0].splitlines()  # the table, then a footnote
    header = [c for c in TABLE_COLUMNS if c != CI_COLUMN]  # one seed: no interval column
    assert table[0] == "| " + " | ".join(header) + " |" and len(table) == 2 + len(models)
    for name in ("accuracy_vs_nfe", "nfe_over_training", "step_sizes"):
        assert (out_dir / "figures" / f"{name}.png").is_file(), name
    return rows


def test_compare_trains_each_model_in_its_own_process(tmp_path):
    result = invoke("compare", "--models", "rknet,odenet", "--epochs", 1, "--batch-size", 256, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    out_dir = _only_dir(tmp_path)
    rows = _check_outputs(out_dir, ["rknet", "odenet"])
    assert rows[0]["nfe_forward"] == 6  # L = 6 tied Euler steps
    assert rows[1]["nfe_forward"] >= 8  # dopri5: 2 + 6 per attempted step
    assert rows[0]["peak_memory_mb"] > 0 and rows[0]["seconds_per_epoch"] > 0
    assert len(list((out_dir / "runs").iterdir())) == 2


def test_compare_from_trained_runs(tmp_path):
    run_dirs = []
    for model in ("dia_rknet", "dia_odenet"):
        cfg = TrainConfig(model=model, epochs=1, batch_size=256, device="cpu", model_options={"width": 8})
        run_dir = start_run(tmp_path / "trained", model, {"command": "train", **asdict(cfg)}, argv=["test"])
        run_training(cfg, run_dir, progress=False)
        run_dirs.append(run_dir)
    result = invoke("compare", "--from", run_dirs[0], "--from", run_dirs[1], "--samples", 4, "--out", tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    rows = _check_outputs(_only_dir(tmp_path / "cmp"), ["dia_rknet", "dia_odenet"])
    assert len(rows[0]["nfe_history"]) == 1
    (run_dirs[1] / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    refused = invoke("compare", "--from", run_dirs[0], "--from", run_dirs[1], "--out", tmp_path / "refused")
    assert refused.exit_code == 2 and "last.pt" in refused.output
    assert "run directory:" not in refused.output  # a directory that the clean-up removes is never named
    assert not any((tmp_path / "refused").iterdir())


def test_markdown_table_formats_numbers():
    row = {"model": "m", "kind": "discrete", "params": 12345, "test_acc": 0.98765, "nfe_forward": 6.0,
           "nfe_backward": float("nan"), "seconds_per_epoch": 1.5, "peak_memory_mb": 123456.0, "test_loss": 0.1}
    line = markdown_table(aggregate_rows([row])).splitlines()[2]
    assert line == "| m | discrete | 12,345 | 0.9877 | 1 | 6 | n/a | 1.5 | 123,456 |"


@pytest.mark.parametrize("args,needle", [
    (["--models", "odenet,nope"], "nope"),
    (["--from", "/nonexistent/run"], "/nonexistent/run"),
    (["--dataset", "mnist"], "--data-dir"),
    (["--models", "rknet,odenet", "--model-option", "rtol=1e-5"], "model 'rknet' takes no option 'rtol'"),
    (["--models", "rknet,odenet", "--model-option", "dia_odenet:rtol=1e-5"], "target dia_odenet, which --models"),
    (["--models", "rknet,odenet", "--model-option", "odenet:rtol=abc"], "option 'rtol' takes float, got 'abc'"),
])
def test_bad_compare_input_is_a_usage_error(tmp_path, args, needle):
    result = invoke("compare", *args, "--out", tmp_path)
    assert result.exit_code == 2, result.output
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # nothing half-made is left behind
    (error,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert needle in error


def test_compare_shares_its_budget_and_leaves_the_rest_to_each_recipe():
    from dia_ode.engine import recipe_config
    from dia_ode.studies.compare import SHARED

    base = asdict(TrainConfig(epochs=3, batch_size=32, lr=0.1))
    vit = recipe_config({**base, "model": "dia_vit_tiny"}, set(SHARED))
    assert (vit.epochs, vit.batch_size) == (3, 32)  # the shared budget
    assert (vit.optimizer, vit.lr, vit.schedule) == ("adamw", 5e-3, "warmup_cosine")  # the ViT recipe
    assert vit.warmup_epochs == pytest.approx(5 * 3 / 150)
    assert recipe_config({**base, "model": "dia_vit_tiny"}, set(SHARED) | {"lr"}).lr == 0.1  # --lr given
    resnet = recipe_config({**base, "model": "dia_resnet20"}, set(SHARED))
    assert (resnet.optimizer, resnet.lr) == ("sgd", 0.1)  # no recipe: compare's options


def test_model_options_can_target_one_model():
    from dia_ode.cli.options import parse_model_options

    pairs = ("width=8", "odenet:rtol=1e-5", "dia_odenet: atol = 1e-6")
    assert parse_model_options(pairs, "odenet") == {"width": 8, "rtol": 1e-5}
    assert parse_model_options(pairs, "dia_odenet") == {"width": 8, "atol": 1e-6}
    assert parse_model_options(pairs, "rknet") == parse_model_options(pairs) == {"width": 8}
