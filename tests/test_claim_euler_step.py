"""Tests for the claim "euler-step" (dia_ode/studies/claims/euler_identity.py): the identity holds for
every discrete family, the check fails on a stage that is not an Euler step, and each verdict branch."""

from __future__ import annotations

import pytest
import torch

from dia_ode.analysis.intervals import mean_interval
from dia_ode.models import create_model, list_models, model_entry
from dia_ode.solvers import stage as stage_module
from dia_ode.studies.claims import CLAIMS
from dia_ode.solvers import recorded_modules, trace
from dia_ode.studies.claims.euler_identity import (TINY, TOLERANCE, euler_defects, euler_skip, step_defects,
                                                 verdict, without_zero_parameters)
from dia_ode.studies.report.budgets import get_budget


def test_registered_without_training_runs_and_covering_every_discrete_family():
    claim = CLAIMS["euler-step"]
    assert claim.runs(get_budget("smoke")) == [] and claim.runs(get_budget("full")) == []
    assert {model_entry(n).family for n in list_models(kind="discrete")} <= set(TINY)


def test_measure_reproduces_with_one_value_per_seed_and_the_roundoff_reference():
    result = CLAIMS["euler-step"].measure({}, get_budget("smoke"))
    assert result.verdict.status == "reproduced"
    assert set(result.measured) == set(result.references) and len(result.measured) == len(TINY)
    assert all(iv.n == 2 and max(iv.values) < TOLERANCE for iv in result.measured.values())
    attention_rows = [row for row in result.table if row["attention"] != "none"]
    assert attention_rows and all(row["with h_k := 1"] > 1e-3 for row in attention_rows)  # the null is far off


def test_a_stage_that_is_not_an_euler_step_is_caught(monkeypatch):
    model = without_zero_parameters(create_model("se_resnet20", in_channels=1, base_width=4))
    x = torch.randn(2, 1, 8, 8)
    assert euler_defects(model, x)[0] < TOLERANCE
    # a stage that moves by half the step it records: x_{k+1} = post(skip + h_k f_k / 2)
    monkeypatch.setattr(stage_module, "euler_update", lambda skip, h, f: skip + 0.5 * h * f)
    defect, _ = euler_defects(model, x)
    assert defect > 1e-2


@pytest.mark.parametrize("values, untested, status", [
    ({"resnet": [1e-7, 2e-7], "vit": [0.0, 5e-8]}, [], "reproduced"),
    ({"resnet": [1e-7, 3e-5], "vit": [0.0, 5e-8]}, [], "not reproduced"),
    ({"resnet": [1e-7, 2e-7]}, ["mynet"], "not testable here"),
])
def test_verdict_rule(values, untested, status):
    result = verdict({family: mean_interval(v) for family, v in values.items()}, untested)
    assert result.status == status
    if status == "not reproduced":
        assert "resnet" in result.reason and "3.0e-05" in result.reason
    if status == "not testable here":
        assert "mynet" in result.reason and "TINY" in result.reason and "would test them" in result.reason



def test_a_stage_without_skip_connections_fails_the_check():
    """skip=False: block.shortcut() is 0 and x_{k+1} = post(h_k f_k); the check adds h_k f_k to x_k itself."""
    model = without_zero_parameters(create_model("resnet20", in_channels=1, base_width=4, skip=False))
    x = torch.randn(2, 1, 8, 8)
    assert euler_defects(model, x)[0] >= 1.0  # downsampling blocks without projection count 1.0: no Euler step
    model.eval()
    with torch.no_grad():
        stage, tr = next(iter(recorded_modules(model))), trace(model, x)[0]
        assert not stage.blocks[1].shortcut(tr.states[1]).any()  # the shortcut the old check trusted
        # every shape-preserving block of stage 0 misses the identity (each is post(h f), not post(x + h f))
        assert all(step_defects(stage, tr, k)[0] > 1e-2 for k in range(len(stage.blocks)))
    assert euler_skip(stage.blocks[1], tr.states[1], tr.states[2]) is tr.states[1]
    assert euler_skip(stage.blocks[1], tr.states[1], tr.states[2][..., ::2, ::2]) is None  # shape changes


def test_a_projection_block_is_checked_through_its_projection():
    model = without_zero_parameters(create_model("resnet20", in_channels=1, base_width=4))
    block = list(recorded_modules(model))[1].blocks[0]  # the downsampling first block of stage 1
    state = torch.randn(2, 4, 8, 8)
    assert block.projection is not None
    assert torch.equal(euler_skip(block, state, state[:, :, ::2, ::2]), block.shortcut(state))
