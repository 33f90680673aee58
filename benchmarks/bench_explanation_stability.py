"""Does adversarial training make explanations more stable under attack? (issue 13)

For the shipped MNIST pair, ``examples/mnist_cnn.keras`` (undefended) and
``examples/mnist_robust.keras`` (TRADES-trained at Linf 0.3), each held-out test digit is
explained (gradient, Integrated Gradients, Grad-CAM; the true class) on the clean image and on
a perturbed copy, and the two maps are compared with
:func:`robustkit.saliency.explanation_shift`: Spearman rank correlation of the pixel
magnitudes and overlap of the top 10% pixels by |map|. Perturbations: PGD Linf (40 steps, one
random start, cross-entropy on the true label) and, as a control, a random sign pattern of the
same size (every pixel +-eps, clipped). The adversarial map explains the same class as the clean
one, so the comparison is of one function at two inputs.

This is not a timing benchmark. Run from the repository root:
    python benchmarks/bench_explanation_stability.py
(uses the real digits in ../shared/data/mnist; digits 8000.. are held out from training)
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from robustkit.attacks import PGD
from robustkit.io import from_uint8
from robustkit.io.mnist import load_mnist
from robustkit.models import Classifier, load_classifier
from robustkit.saliency import attribute, explanation_shift

MODELS = {
    "undefended": "examples/mnist_cnn.keras",
    "adversarially trained": "examples/mnist_robust.keras",
}
METHODS = ("gradient", "integrated_gradients", "grad_cam")


def sign_noise(x: np.ndarray, eps: float, seed: int) -> np.ndarray:
    """x + eps * (random signs), clipped to [0, 1]: a perturbation as large as the attack's."""
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=x.shape)
    return np.clip(x + eps * signs, 0.0, 1.0).astype(np.float32)


def mean_and_error(values: np.ndarray) -> str:
    """'mean ± standard error' over the finite values."""
    finite = values[np.isfinite(values)]
    error = finite.std(ddof=1) / np.sqrt(finite.size) if finite.size > 1 else float("nan")
    return f"{finite.mean():.3f} ± {error:.3f}"


def measure(
    classifier: Classifier,
    x: np.ndarray,
    y: np.ndarray,
    epsilons: list[float],
    args: argparse.Namespace,
) -> list[list[str]]:
    """Table rows of one model: per eps, perturbation and method."""
    options = {"integrated_gradients": {"steps": args.ig_steps}}
    clean = {m: attribute(classifier, x, m, y, **options.get(m, {})) for m in METHODS}
    rows = []
    for eps in epsilons:
        perturbations = {
            "PGD": PGD("linf", eps, steps=args.pgd_steps, seed=args.seed)(classifier, x, y).x_adv,
            "sign noise": sign_noise(x, eps, args.seed),
        }
        for name, x_moved in perturbations.items():
            accuracy = float(np.mean(classifier.predict_logits(x_moved).argmax(1) == y))
            for method in METHODS:
                shift = explanation_shift(
                    classifier, x, y, method, x_moved, target=y, top_k=args.top_k,
                    clean=clean[method], **options.get(method, {}),
                )  # fmt: skip
                rows.append(
                    [
                        f"{eps:g}",
                        name,
                        f"{100 * accuracy:.1f}%",
                        method,
                        mean_and_error(shift.spearman),
                        mean_and_error(shift.top_k_overlap),
                    ]
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", default="../shared/data/mnist")
    parser.add_argument("--first", type=int, default=8000, help="first held-out test digit")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--eps", default="0.1,0.3")
    parser.add_argument("--pgd-steps", type=int, default=40)
    parser.add_argument("--ig-steps", type=int, default=32)
    parser.add_argument("--top-k", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    images, labels = load_mnist(args.mnist, "test")
    x = from_uint8(images[args.first : args.first + args.count, ..., None])
    y = labels[args.first : args.first + args.count]
    epsilons = [float(e) for e in args.eps.split(",")]
    print(
        f"MNIST test digits {args.first}..{args.first + len(y) - 1}; PGD Linf {args.pgd_steps} "
        f"steps; IG {args.ig_steps} steps; top-k = {args.top_k:g} of the pixels; true class "
        "explained on both images; mean ± standard error over the digits\n"
    )
    print(
        "| model | clean acc | eps | perturbation | acc after | method | Spearman | top-k overlap |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for model_name, path in MODELS.items():
        classifier = load_classifier(path)
        clean_accuracy = float(np.mean(classifier.predict_logits(x).argmax(1) == y))
        for row in measure(classifier, x, y, epsilons, args):
            print(f"| {model_name} | {100 * clean_accuracy:.1f}% | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
