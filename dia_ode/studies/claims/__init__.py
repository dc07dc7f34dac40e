"""The claims registry of the reproduction report: one file per claim in this folder, one line here.

The report (studies/report) iterates over CLAIMS in this order; `dia-ode report --claims a,b` picks some.
"""

from __future__ import annotations

from dia_ode.studies.report.claim import AbstractClaim

CLAIMS: dict[str, AbstractClaim] = {claim.id: claim for claim in (
)}


def get_claim(claim_id: str) -> AbstractClaim:
    """The claim called `claim_id`; ValueError lists the valid ones."""
    if claim_id not in CLAIMS:
        raise ValueError(f"unknown claim '{claim_id}'; valid: {', '.join(CLAIMS) or 'none yet'}")
    return CLAIMS[claim_id]
