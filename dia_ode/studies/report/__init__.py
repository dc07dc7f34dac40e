"""The reproduction report: claims as data (claim.py), budget presets (budgets.py)."""
