"""Robust-accuracy evaluation that does not fool itself: attack suites run as a cascade, the
worst case per example, automatic sanity checks and reports (JSON, Markdown, PNG curve)."""

from robustkit.evaluation.checks import CHECKS
from robustkit.evaluation.evaluator import ProgressEvent, evaluate
from robustkit.evaluation.render import report_markdown, robustness_curve, write_report
from robustkit.evaluation.report import (
    AttackOutcome,
    CheckResult,
    ExampleRecords,
    RobustnessReport,
)
from robustkit.evaluation.schema import (
    REPORT_SCHEMA,
    SCHEMA_NAME,
    SCHEMA_VERSION,
    validate_report,
)
from robustkit.evaluation.sources import ArraySource, ExampleSource
from robustkit.evaluation.suites import SuiteAttack, plus_suite, quick_suite, standard_suite

__all__ = [
    "CHECKS",
    "REPORT_SCHEMA",
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "ArraySource",
    "AttackOutcome",
    "CheckResult",
    "ExampleRecords",
    "ExampleSource",
    "ProgressEvent",
    "RobustnessReport",
    "SuiteAttack",
    "evaluate",
    "plus_suite",
    "quick_suite",
    "report_markdown",
    "robustness_curve",
    "standard_suite",
    "validate_report",
    "write_report",
]
