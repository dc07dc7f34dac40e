"""report.md from the report's data (report.json's dict): a header saying where and how long it ran,
then the papers' scorecard with a section per claim of the papers, then the construction checks and the
project's hypotheses with theirs (claim.KINDS): a check of the code or a hypothesis of this project
passing is no evidence for the papers. A claim's section gives the statement, the paper's number, ours
as mean ± 95% interval with n next to its null references, the command, the verdict with its reason
(and each part's, for a claim of several), the power of each comparison, notes, a table and links to the
figures."""

from __future__ import annotations

from dia_ode.analysis.intervals import Interval, format_number
from dia_ode.analysis.power import MAX_SEEDS

PAPER = "paper"  # the kind of the papers' claims; every other kind goes to the second group
GROUPS = ("The papers' claims", "Construction checks and the project's hypotheses")


def format_interval(fields: dict) -> str:
    """"0.912 ± 0.013 [0.899, 0.925], n=3" (± the 95% half-width), or the mean, n and why there is no interval."""
    iv = Interval.from_dict({**fields, "mean": float("nan") if fields["mean"] is None else fields["mean"]})  # JSON null
    if iv.low is None:
        return f"{format_number(iv.mean)}, n={iv.n} ({iv.reason})"
    if iv.low == iv.high:
        return f"{format_number(iv.mean)} (every value), n={iv.n}"
    return f"{iv.format('.4g', spread='ci', spread_spec='.2g')} {iv.format_ci('.4g')}, n={iv.n}"


def report_markdown(data: dict) -> str:
    """The whole report.md."""
    budget, host = data["budget"], data["machine"]
    lines = ["# Reproduction report", "",
             f"- budget: **{budget['name']}** ({budget['description']}); seeds {', '.join(map(str, budget['seeds']))}, "
             f"{budget['epochs']} epochs",
             f"- machine: {host['platform']}, {host['cores']} cores, torch {host['torch']}, device {host['device']}",
             f"- wall time: {data['wall_seconds']:.0f} s; date: {data['date']}",
             f"- study: `{data['study']}`", ""]
    papers = [c for c in data["claims"] if c["kind"] == PAPER]
    others = [c for c in data["claims"] if c["kind"] != PAPER]
    for heading, claims, kind_column in zip(GROUPS, (papers, others), (False, True)):
        if claims:
            lines += [f"## {heading}", "", *_scorecard(claims, kind_column)]
            for claim in claims:
                lines += _claim_section(claim)
    return "\n".join(lines) + "\n"


def _scorecard(claims: list[dict], kind_column: bool) -> list[str]:
    """One row per claim: its id, its kind where the group has several, its verdict."""
    if kind_column:
        return ["| claim | kind | verdict |", "| --- | --- | --- |",
                *(f"| {c['id']} | {c['kind']} | {c['verdict']['status']} |" for c in claims), ""]
    return ["| claim | verdict |", "| --- | --- |", *(f"| {c['id']} | {c['verdict']['status']} |" for c in claims), ""]


def _claim_section(claim: dict) -> list[str]:
    verdict = claim["verdict"]
    lines = [f"### {claim['id']}", "", f"**Claim** ({claim['kind']}). {claim['statement']}", "",
             f"**Paper.** {claim['paper']}", "",
             f"**Verdict: {verdict['status']}.** {verdict['reason']}", "",
             *(f"- {name}: **{part['status']}.** {part['reason']}" for name, part in claim.get("parts", {}).items()),
             *([""] if claim.get("parts") else []),
             f"**Reproduce:** `{claim['command']}`", ""]
    lines += _statistics(claim["measured"], claim["references"])
    lines += _power(claim.get("power", []))
    if claim["notes"]:
        lines += [*(f"- {note}" for note in claim["notes"]), ""]
    if claim["table"]:
        lines += _table(claim["table"])
    if claim["figures"]:
        lines += [" ".join(f"[{path.rsplit('/', 1)[-1]}]({path})" for path in claim["figures"]), ""]
    if claim["runs"]:
        lines += [f"Runs: {len(claim['runs'])} in `runs/` (keys {', '.join(r['key'] for r in claim['runs'])}).", ""]
    return lines


def _statistics(measured: dict, references: dict) -> list[str]:
    """Each measured statistic with its references beside or right under it: the reference of the same
    name in its column, those named "<statistic>, <which null>" on the rows below; the rest after."""
    if not measured and not references:
        return []
    rows = ["| statistic | ours (mean ± 95% CI, n) | reference |", "| --- | --- | --- |"]
    placed = set()
    for name, fields in measured.items():
        ref = format_interval(references[name]) if name in references else ""
        rows.append(f"| {name} | {format_interval(fields)} | {ref} |")
        placed.add(name)
        for ref_name, ref_fields in references.items():
            if ref_name.startswith(f"{name}, ") and ref_name not in placed:
                rows.append(f"| ↳ {ref_name[len(name) + 2:]} (reference) |  | {format_interval(ref_fields)} |")
                placed.add(ref_name)
    for name, fields in references.items():
        if name not in placed:
            rows.append(f"| {name} (reference) |  | {format_interval(fields)} |")
    return [*rows, ""]


def _power(rows: list[dict]) -> list[str]:
    """The power of each comparison: the smallest effect its seeds detect (80% power, two-sided 5% t
    test) and, where the paper gives an effect, the seeds that effect would need at the spread seen."""
    if not rows:
        return []
    def number(value) -> str:
        return "n/a" if value is None else format_number(value, ".3g")
    lines = ["| comparison | n | std | smallest effect detected (80% power) | paper's effect | seeds it needs |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        needed = ("n/a" if row["effect"] is None or row["std"] is None else
                  f"> {MAX_SEEDS:,}" if row["seeds_needed"] is None else str(row["seeds_needed"]))
        lines.append(f"| {row['comparison']} | {row['n']} | {number(row['std'])} | {number(row['mde'])} | "
                     f"{number(row['effect'])} | {needed} |")
    return [*lines, ""]


def _table(rows: list[dict]) -> list[str]:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cell = lambda v: format_number(v) if isinstance(v, float) else str(v)  # noqa: E731
    return ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |",
            *("| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows), ""]
