"""The shipped MNIST example model on the shipped held-out digits: undefended, so robust
accuracy at Linf 0.3 is 0 while the checks stay quiet."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robustkit.evaluation import evaluate
from robustkit.io import from_uint8
from robustkit.models import load_classifier

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def shipped_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 20 held-out MNIST digits in examples/images/<label>/ as ([20, 28, 28, 1], [20])."""
    paths = sorted(EXAMPLES.glob("images/*/*.png"))
    x = np.stack([np.asarray(Image.open(path)) for path in paths])[..., None]
    return from_uint8(x), np.array([int(path.parent.name) for path in paths])


@pytest.mark.slow
def test_undefended_mnist_model_has_no_robustness_at_linf_0_3() -> None:
    x, y = shipped_digits()
    assert len(x) == 20 and sorted(set(y.tolist())) == list(range(10))
    report = evaluate(
        load_classifier(EXAMPLES / "mnist_cnn.keras"),
        (x, y),
        "linf",
        [0.1, 0.3],
        suite="quick",
        check_samples=20,
    )
    assert report.clean_accuracy == 1.0
    assert report.robust_accuracy[1] == 0.0
    assert 0.3 < report.robust_accuracy[0] < report.clean_accuracy  # partly robust at 0.1
    assert not report.failed_checks, [c.explanation for c in report.failed_checks]
    assert np.all(report.attack_accuracy()[:, 1] == 0.0)


@pytest.mark.slow
def test_shipped_robust_model_keeps_its_robustness_at_linf_0_3() -> None:
    """examples/mnist_robust.keras (88.4% under the standard suite and the reference AutoAttack on
    digits 8000..8499; benchmarks/RESULTS.md)."""
    x, y = shipped_digits()
    classifier = load_classifier(EXAMPLES / "mnist_robust.keras")
    report = evaluate(classifier, (x, y), "linf", [0.3], suite="quick", checks=None)
    assert report.clean_accuracy == 1.0
    assert report.robust_accuracy[0] >= 0.8
