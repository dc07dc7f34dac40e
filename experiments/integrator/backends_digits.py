"""odenet and dia_odenet on digits at rtol = atol = 1e-5, per engine: NFE per sample, seconds per epoch, accuracy.

    python experiments/integrator/backends_digits.py --out /tmp/backends [--epochs 15] [--seeds 0,1,2]

Trains every (model, engine) of ENGINES once per seed through `dia_ode.train` (one process, all cores:
run it on a quiet machine), the engines of one seed one after another so that a drift of the machine
touches them alike, and prints one markdown row per (model, engine): the mean NFE per sample of the
training forwards (over epochs and seeds) and of the test forward, the most one sample needed, the
median seconds per epoch, and the test accuracy's mean with its 95% t-interval over the seeds; the
ratios divide by torchdiffeq's row of the same model. The table and every run's numbers go to
OUT/backends.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import dia_ode
from dia_ode.analysis.intervals import mean_interval

ENGINES = {  # name -> model options beside the tolerances
    "torchdiffeq": {},
    "dia_ode batch-steps i": {"backend": "dia_ode"},
    "dia_ode per-sample i": {"backend": "dia_ode", "per_sample": True},
    "dia_ode per-sample pi": {"backend": "dia_ode", "per_sample": True, "controller": "pi"},
}


def one_run(out: Path, model: str, engine: str, seed: int, epochs: int, tol: float) -> dict:
    run_dir = dia_ode.train(model=model, epochs=epochs, seed=seed, progress=False, out=out / engine.replace(" ", "_"),
                            model_options={"rtol": tol, "atol": tol, **ENGINES[engine]})
    summary = json.loads((run_dir / "summary.json").read_text())
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"model": model, "engine": engine, "seed": seed, "run": str(run_dir), "test_acc": summary["test_acc"],
            "nfe_test": summary["nfe_test"], "nfe_train": statistics.mean(r["nfe_forward"] for r in history),
            "nfe_max": max(r["nfe_forward_max"] for r in history),
            "seconds_per_epoch": statistics.median(r["seconds"] for r in history),
            "stiff_fraction": summary["solver"]["stiff_fraction"], "h_lambda_median": summary["solver"]["h_lambda_median"]}


def table(runs: list[dict]) -> list[dict]:
    rows = []
    for model in dict.fromkeys(r["model"] for r in runs):
        reference = None
        for engine in ENGINES:
            mine = [r for r in runs if r["model"] == model and r["engine"] == engine]
            acc = mean_interval([r["test_acc"] for r in mine], bounds=(0.0, 1.0))
            row = {"model": model, "engine": engine, "seeds": len(mine),
                   **{key: statistics.mean(r[key] for r in mine) for key in ("nfe_train", "nfe_test")},
                   "nfe_max": max(r["nfe_max"] for r in mine),
                   "seconds_per_epoch": statistics.median(r["seconds_per_epoch"] for r in mine),
                   "test_acc": acc.to_dict(), "test_acc_text": f"{acc.format()} {acc.format_ci()}"}
            reference = reference or row
            row.update({f"{key}_ratio": row[key] / reference[key] for key in ("nfe_train", "nfe_test",
                                                                             "seconds_per_epoch")})
            rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| model | engine | NFE/sample train (x torchdiffeq) | NFE/sample test (x) | most | s/epoch (x) | "
             "test acc, 95% interval |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['engine']} | {r['nfe_train']:.1f} ({r['nfe_train_ratio']:.2f}) | "
                     f"{r['nfe_test']:.1f} ({r['nfe_test_ratio']:.2f}) | {r['nfe_max']:.0f} | "
                     f"{r['seconds_per_epoch']:.2f} ({r['seconds_per_epoch_ratio']:.2f}) | "
                     f"{r['test_acc_text']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tol", type=float, default=1e-5)
    parser.add_argument("--models", default="odenet,dia_odenet")
    args = parser.parse_args()
    runs = []
    for model in args.models.split(","):
        for seed in map(int, args.seeds.split(",")):
            for engine in ENGINES:
                runs.append(one_run(args.out, model, engine, seed, args.epochs, args.tol))
                print(json.dumps(runs[-1]), flush=True)
    rows = table(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "backends.json").write_text(json.dumps({"rows": rows, "runs": runs}, indent=1))
    print(markdown(rows))


if __name__ == "__main__":
    main()
