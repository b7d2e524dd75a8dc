"""Evaluation of HR precipitation ensembles: metrics, baselines, plots and a report.

`evaluate(truth, ensemble, lr, s, t, ...) -> dict` scores an ensemble and the baselines (nearest,
bicubic + linear in time, mean network only) against the truth. The stage's entry point,
`hpcsr.evaluate.run.run_evaluation(EvaluateConfig) -> EvaluationResult`, does the same from netCDF
files and writes metrics JSON/CSV and a report with figures; its config is the `evaluate` section
(config.py); `python -m hpcsr.evaluate` (cli.py) and the launcher's evaluate stage (through
truth.py: the truth cut from the HR store) call it.
"""

from hpcsr.evaluate.evaluation import DEFAULT_QUANTILES, DEFAULT_SCALES, DEFAULT_THRESHOLDS, evaluate

__all__ = ["evaluate", "DEFAULT_THRESHOLDS", "DEFAULT_SCALES", "DEFAULT_QUANTILES"]
