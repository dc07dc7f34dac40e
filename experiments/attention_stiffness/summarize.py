"""Print E1's table from the run directories that run.sh wrote (train/ and analysis/ under OUT)."""

import json
import sys
from pathlib import Path


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def fmt(values) -> str:
    return " / ".join("n/a" if v is None else f"{v:.2f}" for v in values)


def main(out: Path) -> None:
    analyses: dict[str, dict[str, dict]] = {}
    for d in sorted((out / "analysis").iterdir()):
        config = load(d / "config.json")
        analyses.setdefault(Path(config["source_run"]).name, {})[config["command"]] = load(d / "summary.json")
    print("| model | dataset | test acc | mean r per stage (per sample) | Spearman(h_k, rho_k) per stage "
          "| mean rho(h J) per stage |")
    print("|---|---|---|---|---|---|")
    for run in sorted((out / "train").iterdir()):
        train = load(run / "summary.json")
        a = analyses.get(run.name, {})
        r = a.get("correlate", {}).get("mean_r", {}).get("per_sample", [])
        sp = a.get("stepsize", {}).get("spearman_block", [])
        rho = [s["mean_step_spectral_radius"] for s in a.get("stiffness", {}).get("stages", [])]
        print(f"| {train['model']} | {train['dataset']} | {train['test_acc']:.4f} | {fmt(r)} | {fmt(sp)} | {fmt(rho)} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/attention_stiffness"))
