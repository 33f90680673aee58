"""The shipped MNIST example model: undefended, so robust accuracy at Linf 0.3 is about 0."""

from pathlib import Path

import numpy as np
import pytest

from robustkit.evaluation import evaluate
from robustkit.io import from_uint8, load_mnist
from robustkit.models import load_classifier

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "examples" / "mnist_cnn.keras"
MNIST = ROOT.parent / "shared" / "data" / "mnist"


@pytest.mark.slow
def test_undefended_mnist_model_has_no_robustness_at_linf_0_3() -> None:
    digits, labels = load_mnist(MNIST)
    x, y = from_uint8(digits[8000:8300, ..., None]), labels[8000:8300]  # held out
    report = evaluate(
        load_classifier(MODEL), (x, y), "linf", [0.1, 0.3], suite="quick", check_samples=50
    )
    assert report.clean_accuracy > 0.98
    assert report.robust_accuracy[1] <= 0.01
    assert 0.3 < report.robust_accuracy[0] < report.clean_accuracy  # partly robust at 0.1
    assert not report.failed_checks, [c.explanation for c in report.failed_checks]
    assert np.all(report.attack_accuracy()[:, 1] <= 0.01)
