"""experiments/README.md takes the reproduction report's numbers from the report itself.

The R1 entry quotes `experiments/report_cpu/report.json`: every claim's verdict, and every 95% interval
"[low, high]" it prints, must be found in that claim's measured or reference intervals at the printed
precision. A report rerun that changes a number fails this test until the entry is updated.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
INTERVAL = re.compile(r"\[([−\-0-9.]+), ([−\-0-9.]+)\]")


def _number(text: str) -> tuple[float, int]:
    """A printed number (unicode minus allowed) and its decimals."""
    text = text.replace("−", "-")
    return float(text), len(text.partition(".")[2])


def _r1_rows() -> dict[str, tuple[str, str]]:
    """claim id -> (verdict, numbers cell) of the R1 table."""
    section = (EXPERIMENTS / "README.md").read_text().split("## R1", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3 and cells[0] != "claim" and not cells[0].startswith("---"):
            rows[cells[0].split(" ")[0]] = (cells[1], cells[2])
    return rows


REPORT = json.loads((EXPERIMENTS / "report_cpu" / "report.json").read_text())
CLAIMS = {claim["id"]: claim for claim in REPORT["claims"]}


def test_r1_lists_every_claim_of_the_report():
    assert set(_r1_rows()) == set(CLAIMS)


@pytest.mark.parametrize("claim_id", sorted(CLAIMS))
def test_r1_quotes_the_reports_verdict_and_intervals(claim_id):
    verdict, numbers = _r1_rows()[claim_id]
    claim = CLAIMS[claim_id]
    assert verdict == claim["verdict"]["status"]
    intervals = [iv for group in ("measured", "references") for iv in claim[group].values()
                 if iv.get("low") is not None]
    for low_text, high_text in INTERVAL.findall(numbers):
        (low, digits), (high, _) = _number(low_text), _number(high_text)
        assert any(round(iv["low"], digits) == low and round(iv["high"], digits) == high for iv in intervals), \
            f"{claim_id}: [{low_text}, {high_text}] is not an interval of report.json"
