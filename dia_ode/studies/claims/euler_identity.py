"""Claim "euler-step" (a construction check): a residual stage is a forward-Euler step over depth,
x_{k+1} = x_k + h_k ⊙ f_k(x_k).

The reading behind the whole project ("Dense-and-Implicit Attention Network",
arXiv 1905.10671, and the ODE reading of ResNets, arXiv 1710.10121): every discrete family, with and
without attention, must satisfy it exactly as its stage computes it,

    x_{k+1} = post(x_k + h_k ⊙ f_k(x_k))              (a shape-preserving block: identity shortcut)
    x_{k+1} = post(projection(x_k) + h_k ⊙ f_k(x_k))  (a block that changes shape: its projection),

post the ReLU of a post-activation ResNet (identity otherwise). The identity shortcut is x_k itself, not
whatever the block's shortcut() returns: a block without skip (skip=False, x_{k+1} = post(h_k f_k)) is no
Euler step and must fail the check, and a shape-changing block without a projection cannot be one
(defect 1). It checks the construction of the code, not a finding of a paper. No training: every
registered discrete family (TINY) is built with attention none, se and dia (those it supports) at a
tiny size for each of the budget's seeds, traced on random 8x8 inputs with solvers.trace (all-zero
parameters drawn at random first, so that no branch is trivially zero), and each step is recomputed
from the recorded x_k, f_k, h_k.

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
from dia_ode.solvers.trace import StageTrace
from dia_ode.studies.report.budgets import Budget
from dia_ode.studies.report.claim import NOT_TESTABLE, AbstractClaim, ClaimResult, RunSpec, Verdict

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
    "unet": ("unet_s", {"base_width": 8}),  # traced at diffusion time 0 (forward's default cond)
}


def euler_skip(block: torch.nn.Module, x: torch.Tensor, x_next: torch.Tensor) -> torch.Tensor | None:
    """What an Euler step of `block` adds h_k f_k to: x itself when the block keeps the shape and has no
    projection, the block's projection shortcut when it has one, None when it changes shape without one."""
    if getattr(block, "projection", None) is not None:
        return block.shortcut(x)  # the projection (WRN's reads the pre-activated x: the block knows how)
    return x if x.shape == x_next.shape else None


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
            for k in range(len(stage.blocks)):
                block_defect = step_defects(stage, tr, k)
                defect, without_step = max(defect, block_defect[0]), max(without_step, block_defect[1])
    return defect, without_step


def step_defects(stage: torch.nn.Module, tr: StageTrace, k: int) -> tuple[float, float]:
    """(relative defect of x_{k+1} = post(skip + h_k f_k), the same with h_k := 1) of block k of a traced
    discrete stage, skip as euler_skip gives it; (1.0, 1.0) for a block that cannot be an Euler step."""
    x_next = tr.states[k + 1]
    skip = euler_skip(stage.blocks[k], tr.states[k], x_next)
    if skip is None:
        return 1.0, 1.0
    scale = x_next.abs().max().clamp_min(torch.finfo(x_next.dtype).tiny)
    return tuple(float((x_next - stage.post(skip + h * tr.updates[k])).abs().max() / scale)
                 for h in (tr.steps[k], 1.0))


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
        return Verdict(NOT_TESTABLE, f"discrete families without a tiny setting in TINY: {', '.join(untested)}; "
                                     f"a tiny setting for each in TINY (studies/claims/euler_identity.py) would "
                                     f"test them")
    worst = max(defects, key=lambda family: max(defects[family].values))
    largest = max(defects[worst].values)
    if largest < TOLERANCE:
        return Verdict("reproduced", f"every family satisfies the Euler identity to {largest:.1e} relative "
                                     f"(largest: {worst}), below {TOLERANCE:.0e}")
    return Verdict("not reproduced", f"{worst} misses the Euler identity by {largest:.1e} relative "
                                     f"(tolerance {TOLERANCE:.0e})")


class EulerStep(AbstractClaim):
    """Every discrete family's stage is a forward-Euler step over depth (module docstring)."""

    id = "euler-step"
    kind = "construction"
    statement = ("A residual stage is a forward-Euler step over depth: x_{k+1} = x_k + h_k ⊙ f_k(x_k) (a check "
                 "of the construction, not a finding)")
    paper = ("the ODE reading of residual networks that DIA's step-size interpretation rests on (arXiv 1710.10121; "
             "DIA, arXiv 1905.10671): an identity, exact up to float rounding")

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
        notes = ["a construction check: x_{k+1} is recomputed from the traced x_k, h_k, f_k with the identity as "
                 "shortcut (a projection only where the block has one), so a stage without skip fails it",
                 "reference: float32 unit roundoff; the column 'with h_k := 1' is the same check with the step "
                 "left out, large for attention models: the check can tell a step from none",
                 f"families: {', '.join(families)}; attentions: {', '.join(ATTENTIONS)} where supported; "
                 f"random (4, 1, 8, 8) inputs, eval mode"]
        return ClaimResult(measured, references, verdict(defects, untested), table=table, notes=notes)
