"""The evaluation package's shape: no import cycle among its modules, and what the checks
found lowers the records exactly as documented."""

import ast
from pathlib import Path

import numpy as np

import robustkit.evaluation
from robustkit.evaluation import ExampleRecords
from robustkit.evaluation.cascade import BY_CHECK, UNBROKEN
from robustkit.evaluation.checks import CheckFindings

PACKAGE = Path(robustkit.evaluation.__file__).parent
PACKAGE_NAME = robustkit.evaluation.__name__


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def evaluation_imports(path: Path) -> set[str]:
    """Modules of robustkit.evaluation that ``path`` imports, at any depth of its code."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    return {name for name in imported if name.startswith(PACKAGE_NAME)}


def test_no_import_cycle_among_the_evaluation_modules() -> None:
    graph = {module_name(path): evaluation_imports(path) for path in PACKAGE.rglob("*.py")}
    assert "robustkit.evaluation.report" not in graph["robustkit.evaluation.schema"]
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module in done:
            return
        for imported in graph.get(module, ()):
            visit(imported, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


def records(robust: np.ndarray) -> ExampleRecords:
    shape = robust.shape
    zeros = np.zeros(shape)
    return ExampleRecords(
        labels=np.zeros(shape[1]),
        clean_pred=np.zeros(shape[1]),
        robust=robust,
        broken_by=np.where(robust, UNBROKEN, 0),
        adversarial_pred=zeros,
        adversarial_margin=zeros,
        linf=zeros,
        l2=zeros,
        evaluations=zeros,
        attacked=zeros[None],
        broken=~robust[None],
    )


def test_check_findings_hold_at_larger_eps_and_lower_only_robust_records() -> None:
    findings = CheckFindings.none(3, 4)
    findings.record(1, np.array([0, 2, 3]), np.array([True, False, True]))
    np.testing.assert_array_equal(findings.found, [[0, 0, 0, 0], [1, 0, 0, 1], [1, 0, 0, 1]])
    lowered = records(np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 0]], bool))
    assert findings.lower(lowered) == 2  # example 0 at eps 1 and 2; example 3 was broken already
    np.testing.assert_array_equal(lowered.robust, [[1, 1, 1, 1], [0, 1, 1, 0], [0, 1, 1, 0]])
    np.testing.assert_array_equal(
        lowered.broken_by,
        [[UNBROKEN] * 4, [BY_CHECK, UNBROKEN, UNBROKEN, 0], [BY_CHECK, UNBROKEN, UNBROKEN, 0]],
    )
