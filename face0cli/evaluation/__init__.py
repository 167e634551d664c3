"""Evaluation (paper §4): spec, metrics, runner, report, judges."""
