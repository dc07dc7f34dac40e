"""Claim: DIA's parameter overhead does not grow with depth (one unit per stage), SE's grows with every block.

DIANet (Huang et al., arXiv 1905.10671) and the DIA journal version (arXiv 2210.16101) share one DIA unit
among all the blocks of a stage and credit the sharing for a parameter overhead independent of depth,
where an SE module in every block adds parameters with every block. The official code (gbup-group/DIANet,
models/cifar/dia_resnet.py: `ResNet(164, 100, 'Bottleneck')`, one LSTMCell(C, C) with r = 4 per stage,
C = 64 / 128 / 256; its plain baseline, bearpaw/pytorch-classification's resnet.py) builds ResNet164 for
CIFAR-100 with 1,727,284 parameters and DIA-ResNet164 with 1,946,132.

Protocol, without training: parameters of resnet{d}, se_resnet{d} and dia_resnet{d} (dia_ode.create_model,
built on the meta device: shapes only) at the depths of PARAMETER_DEPTHS, at base_width = budget.width and
the classes and channels of the budget's first available dataset; and resnet164 / se_resnet164 /
dia_resnet164 at the official setting (100 classes, 3 input channels, the paper's widths: base_width 16,
the default), beside the official code's two counts.

Verdict, in two parts reported separately (ClaimResult.parts):
- overhead part, the claim's verdict: within each block family (depth is varied at equal widths, since
  DIA's unit is sized by the stages' widths and the bottleneck family has four times the basic family's),
  reproduced when DIA's extra parameters over the plain network are the same at every depth (within
  OVERHEAD_TOLERANCE parameters) while SE's grow from each depth to the next (by more than
  OVERHEAD_TOLERANCE); not reproduced otherwise.
- official counts: reproduced when this repository's resnet164 and dia_resnet164 at the official setting
  have exactly the official code's counts, not reproduced (with both numbers) otherwise. It says whether
  the networks counted are the paper's; it does not decide the overhead, which is a property of sharing.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dia_ode.data import load_test_split
from dia_ode.models import create_model
from dia_ode.studies.claims.dia_vs_se import num_classes
from dia_ode.studies.report.budgets import Budget, first_dataset
from dia_ode.studies.report.claim import (NOT_REPRODUCED, REPRODUCED, AbstractClaim, ClaimResult, RunSpec,
                                          Verdict)

ATTENTIONS = ("none", "se", "dia")
# Depths per block family at equal widths (basic blocks: 16/32/64 x width/16; bottlenecks, resnet29 and the
# paper's resnet164: four times that).
PARAMETER_DEPTHS = {"basic": (20, 56, 110), "bottleneck": (29, 164)}
# "The same at every depth" within a few scalars (a step scale per stage, say); one parameter per block
# grows by 18 from resnet20 (9 blocks) to resnet56 (27) and is caught.
OVERHEAD_TOLERANCE = 8
# The official code's networks: CIFAR-100 (100 classes, RGB) at the paper's widths (base_width 16, the default).
OFFICIAL_SETTING = {"num_classes": 100, "in_channels": 3}
OFFICIAL_COUNTS = {"resnet164": 1_727_284, "dia_resnet164": 1_946_132}
# Counted where the budget names no dataset that loads here: the extra parameters do not depend on the head
# or the stem (plain, SE and DIA share both), only the absolute counts do.
FALLBACK_SETTING = {"num_classes": 10, "in_channels": 3}

Counts = dict[str, list[tuple[int, int, int, int]]]  # block family -> (depth, plain, SE, DIA) per depth
Series = dict[str, list[tuple[int, int, int]]]  # block family -> (depth, SE's extra, DIA's extra) per depth


def model_parameters(name: str, **options) -> int:
    """Parameters of create_model(name, **options), built on the meta device (no memory, no initialisation)."""
    with torch.device("meta"):
        model = create_model(name, **options)
    return sum(p.numel() for p in model.parameters())


def depth_counts(width: int, classes: int, in_channels: int = 3) -> Counts:
    """Per block family of PARAMETER_DEPTHS, (depth, plain, SE, DIA) parameters of resnet{depth} at base width
    `width`, `classes` classes and `in_channels` input channels."""
    return {family: [(depth, *(model_parameters(f"resnet{depth}", attention=attention, base_width=width,
                                                num_classes=classes, in_channels=in_channels)
                               for attention in ATTENTIONS)) for depth in depths]
            for family, depths in PARAMETER_DEPTHS.items()}


def overheads(counts: Counts) -> Series:
    """(depth, SE's extra, DIA's extra) parameters over the plain network of that depth, per block family."""
    return {family: [(depth, se - plain, dia - plain) for depth, plain, se, dia in rows]
            for family, rows in counts.items()}


def overhead_text(series: Series) -> str:
    """"basic blocks, depths 20/56/110: DIA +14,392/+14,392/+14,392, SE +2,373 -> +7,119 -> +14,238; ..."."""
    return "; ".join(f"{family} blocks, depths {'/'.join(str(d) for d, _, _ in rows)}: DIA "
                     f"{'/'.join(f'+{dia:,}' for _, _, dia in rows)}, SE {' -> '.join(f'+{se:,}' for _, se, _ in rows)}"
                     for family, rows in series.items())


def overhead_verdict(series: Series) -> Verdict:
    """The overhead part (module docstring).

    Args:
        series: block family -> (depth, SE's extra, DIA's extra) per depth, in increasing depth.

    Raises:
        ValueError: a family has fewer than two depths (nothing to compare).
    """
    short = [family for family, rows in series.items() if len(rows) < 2]
    if not series or short:
        raise ValueError(f"the overhead part needs two or more depths per block family: {', '.join(short) or 'none'}")
    dia_constant = {family: max(r[2] for r in rows) - min(r[2] for r in rows) <= OVERHEAD_TOLERANCE
                    for family, rows in series.items()}
    se_grows = {family: all(b[1] - a[1] > OVERHEAD_TOLERANCE for a, b in zip(rows, rows[1:]))
                for family, rows in series.items()}
    found = overhead_text(series)
    if all(dia_constant.values()) and all(se_grows.values()):
        return Verdict(REPRODUCED, f"DIA's parameter overhead does not grow with depth (within {OVERHEAD_TOLERANCE} "
                                   f"parameters) while SE's does: {found}")
    failed = [f"DIA's overhead changes with depth in the {f} blocks" for f, ok in dia_constant.items() if not ok]
    failed += [f"SE's overhead does not grow with depth in the {f} blocks" for f, ok in se_grows.items() if not ok]
    return Verdict(NOT_REPRODUCED, f"{'; '.join(failed)}: {found}")


def official_counts() -> dict[str, tuple[int, int]]:
    """model -> (this repository's parameters, the official code's) at OFFICIAL_SETTING, for OFFICIAL_COUNTS."""
    return {name: (model_parameters(name, **OFFICIAL_SETTING), official) for name, official in OFFICIAL_COUNTS.items()}


def official_count_verdict(counts: dict[str, tuple[int, int]]) -> Verdict:
    """The official-count part (module docstring) on model -> (ours, official)."""
    text = "; ".join(f"{name} {ours:,} here, {official:,} in the official code" for name, (ours, official)
                     in counts.items())
    differ = [name for name, (ours, official) in counts.items() if ours != official]
    if differ:
        return Verdict(NOT_REPRODUCED, f"does not match: {', '.join(differ)} differ ({text}); the networks counted "
                                       f"are not exactly the paper's")
    return Verdict(REPRODUCED, f"matches: {text} (CIFAR-100, 3 channels, the paper's widths)")


def count_rows(counts: Counts, setting: str, official: dict[str, int] | None = None) -> list[dict]:
    """Table rows: per family and depth the plain, SE and DIA counts and their extras; `official` fills the
    official code's counts in (by model name) where it has them."""
    official = official or {}
    return [{"setting": setting, "blocks": family, "depth": depth, "plain": plain, "SE": se, "DIA": dia,
             "SE extra": se - plain, "DIA extra": dia - plain,
             "official plain": official.get(f"resnet{depth}", ""),
             "official DIA": official.get(f"dia_resnet{depth}", "")}
            for family, rows in counts.items() for depth, plain, se, dia in rows]


def budget_setting(budget: Budget) -> tuple[dict, str]:
    """(num_classes and in_channels of the budget's first available dataset, or FALLBACK_SETTING; its name)."""
    dataset = first_dataset(budget)
    if dataset is None:
        return FALLBACK_SETTING, f"{FALLBACK_SETTING['num_classes']} classes (no dataset of the budget loads here)"
    setting = {"num_classes": num_classes(dataset), "in_channels": int(load_test_split(dataset).images.shape[1])}
    channels = setting["in_channels"]
    return setting, f"{dataset}: {setting['num_classes']} classes, {channels} channel{'s' * (channels != 1)}"


class DepthIndependentOverhead(AbstractClaim):
    """Parameter counts of plain / SE / DIA resnets over depth, and ResNet164 against the official code."""

    id = "depth-independent-overhead"
    kind = "paper"
    statement = ("DIA's parameter overhead does not grow with depth (one unit shared by the blocks of a stage), "
                 "while SE's grows with the number of blocks")
    paper = ("DIANet (arXiv 1905.10671) / DIA (arXiv 2210.16101): the DIA unit is shared per stage; official code "
             "(gbup-group/DIANet) on CIFAR-100: ResNet164 1,727,284 parameters, DIA-ResNet164 1,946,132")

    def runs(self, budget: Budget) -> list[RunSpec]:
        return []  # arithmetic on the architectures: nothing to train

    def measure(self, run_dirs: dict[str, Path], budget: Budget) -> ClaimResult:
        setting, where = budget_setting(budget)
        counts = depth_counts(budget.width, setting["num_classes"], setting["in_channels"])
        overhead = overhead_verdict(overheads(counts))
        official = official_counts()
        se = model_parameters("se_resnet164", **OFFICIAL_SETTING)
        at_official = {"bottleneck": [(164, official["resnet164"][0], se, official["dia_resnet164"][0])]}
        table = [*count_rows(counts, f"base width {budget.width}, {where}"),
                 *count_rows(at_official, "official: CIFAR-100, 3 channels, base width 16",
                             {name: theirs for name, (_, theirs) in official.items()})]
        notes = ["counted on the meta device (shapes only), no training; extras are over the plain resnet of the "
                 "same depth, which shares the stem and the head",
                 f"the overhead is compared within a block family, at equal widths; tolerance {OVERHEAD_TOLERANCE} "
                 f"parameters"]
        return ClaimResult({}, {}, overhead, table=table, notes=notes,
                           parts={"overhead": overhead, "official counts": official_count_verdict(official)})
