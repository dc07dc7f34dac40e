"""Claim "euler-step": a residual stage is a forward-Euler step over depth, x_{k+1} = x_k + h_k ⊙ f_k(x_k).

The reading behind the whole project (DESIGN.md; "Dense-and-Implicit Attention Network",
arXiv 1905.10671, and the ODE reading of ResNets, arXiv 1710.10121): every discrete family, with and
without attention, must satisfy it exactly as its stage computes it,

    x_{k+1} = post(shortcut(x_k) + h_k ⊙ f_k(x_k)),

post the ReLU of a post-activation ResNet (identity otherwise) and shortcut a projection in a stage's
first block (identity otherwise). No training: every registered discrete family (TINY) is built with
attention none, se and dia (those it supports) at a tiny size for each of the budget's seeds, traced
on random 8x8 inputs with solvers.trace (all-zero parameters drawn at random first, so that
no branch is trivially zero), and each step is recomputed from the recorded x_k, f_k, h_k.

Statistic: per family, the largest relative defect max|x_{k+1} - post(shortcut(x_k) + h_k f_k)| /
max|x_{k+1}| over stages, steps and attentions, one value per seed; tracing must also leave the output
bit for bit unchanged (a changed output counts as defect 1). Reference: float32's unit roundoff
(1.2e-7), the size a defect of a correctly recomputed step can have; and, as a null that shows the
check can fail, the same defect with the step left out (h_k := 1), in the table.

Verdict rule: reproduced when every family's largest defect over seeds is below TOLERANCE (1e-5
relative, about 100 roundoffs: the recomputation fuses h*f+skip differently from the stage);
not reproduced when one is above; not testable here when a registered discrete family has no tiny
setting in TINY (a new family must be added there to be checked). Cost: ~2 s at any budget.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dia_ode.analysis.intervals import Interval, mean_interval
from dia_ode.models import create_model, list_models, model_entry
from dia_ode.solvers import recorded_modules, trace
from dia_ode.studies.report.budgets import Budget
from dia_ode.studies.report.claim import AbstractClaim, ClaimResult, RunSpec, Verdict

TOLERANCE = 1e-5
ROUNDOFF = float(torch.finfo(torch.float32).eps)
ATTENTIONS = ("none", "se", "dia")
# family -> (its smallest registered model, options that make it tiny); inputs are (B, 1, 8, 8)
TINY: dict[str, tuple[str, dict]] = {
    "resnet": ("resnet20", {"base_width": 4}),
    "preresnet": ("preresnet20", {"base_width": 4}),
    "wrn": ("wrn16_2", {"base_width": 4}),
    "resnext": ("resnext29_8x64d", {"base_width": 4}),
    "vit": ("vit_tiny", {"image_size": 8, "dim": 12, "depth": 2, "heads": 2}),
    "odenet": ("untiednet", {"width": 4}),  # its discrete reading with per-block steps (rknet ties them)
}


def euler_defects(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(largest relative defect of the Euler identity, the same with h_k := 1) over the model's stages.

    A traced output that differs from the untraced one returns defect 1.0 (recording must not change it).
    """
    model.eval()
    with torch.no_grad():
        plain = model(x)
        traces, out = trace(model, x, return_output=True)
        defect, without_step = (0.0 if torch.equal(plain, out) else 1.0), 0.0
        for stage, tr in zip(recorded_modules(model), traces):
            if tr.kind != "discrete":
                continue
            for k, block in enumerate(stage.blocks):
                x_next, skip = tr.states[k + 1], block.shortcut(tr.states[k])
                scale = x_next.abs().max().clamp_min(torch.finfo(x_next.dtype).tiny)
                euler = stage.post(skip + tr.steps[k] * tr.updates[k])
                defect = max(defect, float((x_next - euler).abs().max() / scale))
                without_step = max(without_step, float((x_next - stage.post(skip + tr.updates[k])).abs().max() / scale))
    return defect, without_step


def without_zero_parameters(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with its all-zero parameters drawn from N(0, 0.1²). Why: a zero-initialised last norm of a
    branch (ODE-Net's fields) makes f_k = 0 at initialisation, and the identity would hold trivially."""
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.1)
    return model


def verdict(defects: dict[str, Interval], untested: list[str]) -> Verdict:
    """The rule of the module docstring on per-family defects over seeds."""
    if untested:
        return Verdict("not testable here", f"discrete families without a tiny setting in TINY: {', '.join(untested)}")
    worst = max(defects, key=lambda family: max(defects[family].values))
    largest = max(defects[worst].values)
    if largest < TOLERANCE:
        return Verdict("reproduced", f"every family satisfies the Euler identity to {largest:.1e} relative "
                                     f"(largest: {worst}), below {TOLERANCE:.0e}")
    return Verdict("not reproduced", f"{worst} misses the Euler identity by {largest:.1e} relative "
                                     f"(tolerance {TOLERANCE:.0e})")


class EulerStep(AbstractClaim):
    id = "euler-step"
    statement = "A residual stage is a forward-Euler step over depth: x_{k+1} = x_k + h_k ⊙ f_k(x_k)."
    paper = ("the ODE reading of residual networks that DIA's step-size interpretation rests on (arXiv 1710.10121; "
             "DIA, arXiv 1905.10671): an identity, exact up to float rounding")
    command = "dia-ode report --claims euler-step"

    def runs(self, budget: Budget) -> list[RunSpec]:
        return []  # an identity of the construction: checked on untrained models

    def measure(self, run_dirs: dict[str, Path], budget: Budget) -> ClaimResult:
        families = sorted({model_entry(name).family for name in list_models(kind="discrete")})
        untested = [f for f in families if f not in TINY]
        defects, table = {}, []
        for family in (f for f in families if f in TINY):
            name, options = TINY[family]
            per_seed = []
            for seed in budget.seeds:
                worst = 0.0
                for attention in (a for a in ATTENTIONS if a in model_entry(name).attentions):
                    torch.manual_seed(seed)
                    model = without_zero_parameters(create_model(name, attention=attention, in_channels=1,
                                                                 **options))
                    defect, without_step = euler_defects(model, torch.randn(4, 1, 8, 8))
                    worst = max(worst, defect)
                    table.append({"family": family, "model": name, "attention": attention, "seed": seed,
                                  "max relative defect": defect, "with h_k := 1": without_step})
                per_seed.append(worst)
            defects[family] = mean_interval(per_seed)
        measured = {f"{family}: max relative defect": iv for family, iv in defects.items()}
        references = {key: mean_interval([ROUNDOFF] * len(budget.seeds)) for key in measured}
        notes = ["reference: float32 unit roundoff; the column 'with h_k := 1' is the same check with the step "
                 "left out, large for attention models: the check can tell a step from none",
                 f"families: {', '.join(families)}; attentions: {', '.join(ATTENTIONS)} where supported; "
                 f"random (4, 1, 8, 8) inputs, eval mode"]
        return ClaimResult(measured, references, verdict(defects, untested), table=table, notes=notes)
