"""`gptexp study`: one resumable command that answers a question by comparing arms.

spec.py    the study file (arms, tuning grid, seeds, evaluation, budgets) and its validation
plan.py    the runs a study needs (deterministic ids), each arm's experiment specs
runner.py  prepare data and the frozen evaluation sets, tune, train, score; resumable
stats.py   means, intervals, paired differences
report.py  results.json (a contract, see RESULTS_* below), report.md, report.html, plots
"""
