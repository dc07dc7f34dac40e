"""The claims registry of the reproduction report: one file per claim in this folder, one line here.

The report (studies/report) iterates over CLAIMS in this order; `dia-ode report --claims a,b` picks some.
"""

from __future__ import annotations

from dia_ode.studies.claims.continuous_nfe import ContinuousDiaNfe
from dia_ode.studies.claims.correlation import CrossLayerCorrelation
from dia_ode.studies.claims.correlation_sweep import CrossLayerCorrelationSweep
from dia_ode.studies.claims.depth_overhead import DepthIndependentOverhead
from dia_ode.studies.claims.dia_vs_se import DiaImprovesBackbone
from dia_ode.studies.claims.euler_identity import EulerStep
from dia_ode.studies.claims.official_table import OfficialAccuracyTable
from dia_ode.studies.claims.stabilisation import DiaStabilisesTraining
from dia_ode.studies.claims.stepsize_stiffness import StepsFollowStiffness
from dia_ode.studies.report.claim import AbstractClaim

CLAIMS: dict[str, AbstractClaim] = {claim.id: claim for claim in (
    EulerStep(),
    CrossLayerCorrelation(),
    CrossLayerCorrelationSweep(),
    StepsFollowStiffness(),
    ContinuousDiaNfe(),
    DiaImprovesBackbone(),
    DepthIndependentOverhead(),
    OfficialAccuracyTable(),
    DiaStabilisesTraining(),
)}


def get_claim(claim_id: str) -> AbstractClaim:
    """The claim called `claim_id`; ValueError lists the valid ones."""
    if claim_id not in CLAIMS:
        raise ValueError(f"unknown claim '{claim_id}'; valid: {', '.join(CLAIMS) or 'none yet'}")
    return CLAIMS[claim_id]
