"""Validation runs robustkit.evaluation's machinery: APGD-CE by default, its numbers are the
evaluator's, suites cascade, and bad validation attacks fail early."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from training_helpers import blobs, cross_entropy, small_cnn

from robustkit.attacks import APGD, APGDT, PGD, Square, is_robust
from robustkit.errors import InputError
from robustkit.evaluation import SuiteAttack, evaluate
from robustkit.models import Classifier
from robustkit.norms import Linf
from robustkit.training import AdversarialTrainer

X, Y = blobs(48, seed=2)
X_VAL, Y_VAL = blobs(40, seed=3)
EPS = 0.1


def trained(**options) -> AdversarialTrainer:
    """Two epochs of PGD training on blobs, ending with the last epoch's weights."""
    trainer = AdversarialTrainer(
        small_cnn(seed=4),
        keras.optimizers.SGD(0.05),
        PGD("linf", EPS, steps=2),
        restore_best=False,
        seed=3,
        **options,
    )
    trainer.history = trainer.fit((X, Y), 2, validation=(X_VAL, Y_VAL), batch_size=16)
    return trainer


def test_default_validation_attack_is_apgd_ce_in_the_training_ball() -> None:
    trainer = AdversarialTrainer(
        small_cnn(), keras.optimizers.SGD(0.1), PGD("l2", 0.5, steps=3), seed=4
    )
    attack = trainer.validation_attack
    assert isinstance(attack, APGD)
    assert attack.config == {
        "attack": "APGD",
        "norm": "l2",
        "eps": 0.5,
        "steps": 20,
        "restarts": 1,
        "loss": "ce",
        "rho": 0.75,
        "early_stop": True,
        "seed": 4,
    }
    assert trainer.validator.executor.strategy is None  # no strategy: the default device


def test_validation_numbers_are_the_evaluators() -> None:
    trainer = trained()
    last = {name: values[-1] for name, values in trainer.history.history.items()}
    classifier = Classifier(trainer.classifier.model)
    apgd = APGD("linf", EPS, steps=20, seed=3)
    report = evaluate(
        classifier, (X_VAL, Y_VAL), Linf(EPS), suite=[apgd], seed=3, checks=None, return_images=True
    )
    assert last["val_adv_accuracy"] == report.robust_accuracy[0]
    assert last["val_clean_accuracy"] == report.clean_accuracy
    direct = apgd(classifier, X_VAL, Y_VAL)  # the attack called on its own finds the same
    assert last["val_adv_accuracy"] == np.mean(
        is_robust(direct.clean_pred == Y_VAL, direct.success)
    )
    clean_logits = classifier.predict_logits(X_VAL).astype(np.float64)
    adv_logits = classifier.predict_logits(report.adversarial_images[0]).astype(np.float64)
    np.testing.assert_allclose(
        last["val_clean_loss"], cross_entropy(clean_logits, Y_VAL).mean(), rtol=1e-6
    )
    np.testing.assert_allclose(
        last["val_adv_loss"], cross_entropy(adv_logits, Y_VAL).mean(), rtol=1e-6
    )
    # per-example keys: the same numbers again, and with another chunk size
    assert trainer.evaluate(X_VAL, Y_VAL) == trainer.evaluate(X_VAL, Y_VAL, batch_size=7)
    assert trainer.evaluate(X_VAL, Y_VAL)["adv_accuracy"] == last["val_adv_accuracy"]


def test_a_suite_validates_as_a_cascade() -> None:
    weak = {"steps": 1, "rel_step_size": 0.2, "random_start": False}
    suite = [SuiteAttack("pgd-weak", PGD, weak), SuiteAttack("apgd-t", APGDT, {"steps": 5})]
    trainer = trained(validation_attack=suite)
    robust = trainer.history.history["val_adv_accuracy"][-1]
    classifier = Classifier(trainer.classifier.model)
    report = evaluate(classifier, (X_VAL, Y_VAL), Linf(EPS), suite=suite, seed=3, checks=None)
    assert robust == report.robust_accuracy[0]
    assert robust == report.outcomes[1].robust_accuracy  # after both attacks
    first_only = trainer.evaluate(X_VAL, Y_VAL, attack=PGD("linf", EPS, **weak, seed=3))
    assert first_only["adv_accuracy"] == report.outcomes[0].robust_accuracy
    # the second attack sees only the survivors of the first, and breaks more of them
    n, second = len(Y_VAL), report.outcomes[1]
    assert second.attacked == round(first_only["adv_accuracy"] * n) and second.broken > 0
    assert round(robust * n) == second.attacked - second.broken


def test_bad_validation_attacks_fail_before_training() -> None:
    model, sgd, attack = small_cnn(), keras.optimizers.SGD(0.1), PGD("linf", EPS)
    with pytest.raises(InputError, match="gradient-free"):
        AdversarialTrainer(model, sgd, attack, validation_attack=Square("linf", EPS))
    with pytest.raises(InputError, match="gradient-free"):
        AdversarialTrainer(
            model, sgd, attack, validation_attack=[SuiteAttack("square", Square, {"queries": 5})]
        )
    with pytest.raises(InputError, match="one threat model"):
        AdversarialTrainer(
            model, sgd, attack, validation_attack=[APGD("linf", EPS), APGD("l2", 0.5)]
        )
    for wrong in ([], "quick"):
        with pytest.raises(InputError, match="non-empty sequence"):
            AdversarialTrainer(model, sgd, attack, validation_attack=wrong)


def test_bad_validation_data_fails_clearly() -> None:
    trainer = AdversarialTrainer(small_cnn(), keras.optimizers.SGD(0.1), PGD("linf", EPS))
    with pytest.raises(InputError, match="no examples"):
        trainer.evaluate(X_VAL[:0], Y_VAL[:0])
    with pytest.raises(InputError, match="classes"):
        trainer.evaluate(X_VAL, Y_VAL + 3)
    with pytest.raises(InputError, match="validation images"):
        trainer.fit((X, Y), 1, validation=(X_VAL * 255, Y_VAL))
