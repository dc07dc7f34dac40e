"""The depth-independent-overhead claim: parameter counts over depth, the overhead rule on synthetic series
(both sides of the tolerance), and ResNet164 against the official code's counts
(dia_ode/studies/claims/depth_overhead.py)."""

import dataclasses

import pytest

from dia_ode import create_model
from dia_ode.studies.claims import get_claim
from dia_ode.studies.claims.depth_overhead import (OFFICIAL_COUNTS, OVERHEAD_TOLERANCE, depth_counts,
                                                   official_count_verdict, official_counts, overhead_verdict,
                                                   overheads)
from dia_ode.studies.report.budgets import get_budget

CLAIM = get_claim("depth-independent-overhead")
SMOKE = get_budget("smoke")


def test_the_official_resnet164_counts_are_what_this_repository_builds():
    # gbup-group/DIANet on CIFAR-100: ResNet164 1,727,284, DIA-ResNet164 1,946,132 (one cell per stage, r = 4)
    assert OFFICIAL_COUNTS == {"resnet164": 1_727_284, "dia_resnet164": 1_946_132}
    assert official_counts() == {"resnet164": (1_727_284, 1_727_284), "dia_resnet164": (1_946_132, 1_946_132)}
    verdict = official_count_verdict(official_counts())
    assert verdict.status == "reproduced" and verdict.reason.startswith("matches: ")
    assert "dia_resnet164 1,946,132 here, 1,946,132 in the official code" in verdict.reason


def test_an_official_count_one_parameter_off_does_not_match_and_names_both_numbers():
    verdict = official_count_verdict({"resnet164": (1_727_284, 1_727_284), "dia_resnet164": (1_946_133, 1_946_132)})
    assert verdict.status == "not reproduced" and verdict.reason.startswith("does not match: dia_resnet164 differ")
    assert "1,946,133 here, 1,946,132 in the official code" in verdict.reason


def test_measure_counts_without_training_and_reports_both_parts():
    assert CLAIM.runs(SMOKE) == [] and CLAIM.kind == "paper"
    result = CLAIM.measure({}, SMOKE)
    counts = depth_counts(SMOKE.width, 10, 1)  # digits: 10 classes, 1 channel
    assert result.verdict == result.parts["overhead"] == overhead_verdict(overheads(counts))
    assert result.verdict.status == "reproduced"
    assert result.parts["official counts"] == official_count_verdict(official_counts())
    depths = [(row["blocks"], row["depth"]) for row in result.table]
    assert depths == [("basic", 20), ("basic", 56), ("basic", 110), ("bottleneck", 29), ("bottleneck", 164),
                      ("bottleneck", 164)]
    # a count on the CPU, independent of the meta device's
    plain, se, dia = (sum(p.numel() for p in create_model(f"{a}resnet56", base_width=4, in_channels=1).parameters())
                      for a in ("", "se_", "dia_"))
    assert {k: result.table[1][k] for k in ("plain", "SE", "DIA", "SE extra", "DIA extra", "official plain")} == \
        {"plain": plain, "SE": se, "DIA": dia, "SE extra": se - plain, "DIA extra": dia - plain, "official plain": ""}
    official = result.table[-1]
    assert official["setting"].startswith("official: CIFAR-100")
    assert (official["plain"], official["official plain"], official["DIA"], official["official DIA"]) == \
        (1_727_284, 1_727_284, 1_946_132, 1_946_132)
    assert official["SE extra"] == 202_104 and official["DIA extra"] == 218_848


def test_a_budget_without_a_dataset_counts_at_a_fallback_head():
    result = CLAIM.measure({}, dataclasses.replace(SMOKE, datasets=("cifar10",)))  # no CIFAR files here
    assert "no dataset of the budget loads here" in result.table[0]["setting"]
    assert result.verdict.status == "reproduced"


def test_the_measured_overheads_at_the_papers_width():
    series = overheads(depth_counts(16, 10))
    assert series["basic"] == [(20, 2373, 14392), (56, 7119, 14392), (110, 14238, 14392)]
    assert series["bottleneck"] == [(29, 33684, 218848), (164, 202104, 218848)]
    assert overhead_verdict(series).status == "reproduced"


def _series(basic_dia=(14392, 14392, 14392), basic_se=(2373, 7119, 14238)):
    return {"basic": [(d, se, dia) for d, se, dia in zip((20, 56, 110), basic_se, basic_dia)],
            "bottleneck": [(29, 33684, 218848), (164, 202104, 218848)]}


@pytest.mark.parametrize("series, status, words", [
    (_series(), "reproduced", "does not grow with depth"),
    (_series(basic_dia=(14392, 14400, 14392)), "reproduced", "within 8 parameters"),  # a few parameters apart
    (_series(basic_dia=(14392, 14401, 14392)), "not reproduced", "DIA's overhead changes with depth in the basic"),
    (_series(basic_dia=(14392, 14410, 14428)), "not reproduced", "DIA's overhead changes"),  # +1 per block
    (_series(basic_se=(2373, 2373, 2373)), "not reproduced", "SE's overhead does not grow with depth in the basic"),
    (_series(basic_se=(2373, 2381, 14238)), "not reproduced", "SE's overhead does not grow"),  # +8: not growth
    (_series(basic_se=(2373, 2382, 14238)), "reproduced", "while SE's does"),  # +9: growth
])
def test_overhead_part_needs_a_constant_dia_overhead_and_a_growing_se_one(series, status, words):
    assert OVERHEAD_TOLERANCE == 8
    verdict = overhead_verdict(series)
    assert verdict.status == status and words in verdict.reason
    assert "basic blocks, depths 20/56/110" in verdict.reason and "bottleneck blocks, depths 29/164" in verdict.reason


def test_overhead_part_fails_on_the_bottleneck_family_alone():
    series = {**_series(), "bottleneck": [(29, 33684, 218848), (164, 202104, 218848 + 54)]}  # one per block
    verdict = overhead_verdict(series)
    assert verdict.status == "not reproduced" and "DIA's overhead changes with depth in the bottleneck" in verdict.reason


def test_overhead_part_refuses_a_family_with_one_depth():
    with pytest.raises(ValueError, match="two or more depths per block family: bottleneck"):
        overhead_verdict({"basic": _series()["basic"], "bottleneck": [(164, 202104, 218848)]})
    with pytest.raises(ValueError, match="two or more depths"):
        overhead_verdict({})
