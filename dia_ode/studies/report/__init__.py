"""The reproduction report: claims as data (claim.py), budget presets (budgets.py), per-epoch recorders
(recorders.py), the study cache of runs (cache.py), launchers (launchers.py), and the report itself
(report.py, written as markdown by markdown.py; command_line.py gives each run's `dia-ode train` line)."""
