"""Square (Andriushchenko et al. 2020): the p schedule, the Linf and L2 proposals against the
paper's definitions and NumPy references, determinism, batch independence, honest success."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from eval_helpers import SHAPE, healthy, quadrant_data, stop_gradient_outputs, wrapped

from robustkit import InputError, seeding
from robustkit.attacks import PGD, Square
from robustkit.attacks.square import SAME_PIXEL, p_selection
from robustkit.attacks.square_windows import (
    l2_window_update,
    place_pattern,
    pseudo_gaussian_window,
    square_mask,
)
from robustkit.models import Classifier


def linear_model(weights: np.ndarray, bias: np.ndarray, shape: tuple[int, int, int]) -> keras.Model:
    """Flatten + Dense with the given weights [D, K] and bias [K] (logits)."""
    model = keras.Sequential(
        [keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(weights.shape[1])]
    )
    model.layers[-1].set_weights([weights.astype("float32"), bias.astype("float32")])
    return model


# ---------------------------------------------------------------- NumPy references (the paper)


def reference_p(p_init: float, it: int, n_iters: int, rescale: bool = True) -> float:
    """p_selection of the reference implementations, verbatim logic: max-andr/square-attack
    (always rescaled) and fra31's SquareAttack (``resc_schedule``; p_init / 512 after 8000)."""
    if rescale:
        it = int(it / n_iters * 10000)
    for halvings, (low, high) in enumerate(
        [(10, 50), (50, 200), (200, 500), (500, 1000), (1000, 2000), (2000, 4000),
         (4000, 6000), (6000, 8000), (8000, np.inf)],
        start=1,
    ):  # fmt: skip
        if low < it <= high:
            return p_init / 2**halvings
    return p_init


def reference_side(p: float, shape: tuple[int, int, int], norm: str) -> int:
    """Window side: round(sqrt(p * n_features / c)); Linf in [1, h - 1]; L2 >= 3 and odd."""
    h, w, c = shape
    s = round(float(np.sqrt(p * (h * w * c) / c)))
    if norm == "linf":
        return min(max(s, 1), h - 1)
    s = max(s, 3)
    s += 1 - s % 2
    return max(min(s, h - 1), 1)


def reference_rectangles(x: int, y: int) -> np.ndarray:
    """pseudo_gaussian_pert_rectangles(x, y): nested rectangles, ring k adds 1 / (k + 1)^2."""
    delta = np.zeros([x, y])
    corner = [x // 2, y // 2]
    for counter in range(max(x // 2 + 1, y // 2 + 1)):
        delta[
            max(corner[0], 0) : min(corner[0] + 2 * counter + 1, x),
            max(0, corner[1]) : min(corner[1] + 2 * counter + 1, y),
        ] += 1.0 / (counter + 1) ** 2
        corner[0] -= 1
        corner[1] -= 1
    norm = np.sqrt(np.sum(delta**2))
    return delta / norm if norm > 0 else delta


def reference_window(s: int) -> np.ndarray:
    """meta_pseudo_gaussian_pert(s) before its random transpose: +bump over -bump, unit norm."""
    delta = np.zeros([s, s])
    delta[: s // 2] = reference_rectangles(s // 2, s)
    delta[s // 2 :] = -reference_rectangles(s - s // 2, s)
    return delta / np.sqrt(np.sum(delta**2))


def reference_l2_update(delta, first, second, bump, eps):
    """The reference's square_attack_l2 step in NumPy (NHWC), windows given as boolean masks."""
    c = delta.shape[-1]
    axes = (1, 2)
    norm_window = np.sqrt(np.sum((delta * first) ** 2, axis=axes, keepdims=True))
    norm_image = np.sqrt(np.sum(delta**2, axis=(1, 2, 3), keepdims=True))
    union = np.maximum(first, second)
    norms_windows = np.sqrt(np.sum((delta * union) ** 2, axis=axes, keepdims=True))
    new = bump + delta * first / (1e-10 + norm_window)
    new = new / np.sqrt(np.sum((new * first) ** 2, axis=axes, keepdims=True))
    new *= np.sqrt(np.maximum(eps**2 - norm_image**2, 0) / c + norms_windows**2)
    out = np.where(second > 0, 0.0, delta)
    out = np.where(first > 0, new, out)
    return out / np.sqrt(np.sum(out**2, axis=(1, 2, 3), keepdims=True)) * eps


def box_mask(shape, top, left, s):
    """0/1 float mask of ``shape`` [N, H, W, C'] with the s x s square at (top, left) set."""
    mask = np.zeros(shape)
    mask[:, top : top + s, left : left + s] = 1.0
    return mask


# ---------------------------------------------------------------- schedule and patterns


@pytest.mark.parametrize(
    "queries, rescale", [(37, True), (1000, True), (5000, True), (1000, False), (12000, False)]
)
def test_p_schedule_and_window_side_match_the_reference(queries, rescale) -> None:
    expected = [reference_p(0.8, it, queries, rescale) for it in range(queries)]
    assert [p_selection(0.8, it, queries, rescale) for it in range(queries)] == expected
    if queries == 1000 and rescale:  # halvings after 0.1%, 0.5%, 2%, 5%, 10%, 20%, 40%, ...
        assert expected[1] == 0.8 and expected[2] == 0.4 and expected[999] == 0.8 / 512
    if queries == 1000 and not rescale:  # after queries 10, 50, 200, 500 (AutoAttack's)
        assert expected[10] == 0.8 and expected[11] == 0.4 and expected[200] == 0.2
        assert expected[201] == 0.1 and expected[500] == 0.1 and expected[999] == 0.05
    if queries == 12000:  # past 8000 p stays at p_init / 512 (fra31's schedule)
        assert expected[8000] == 0.8 / 256 and expected[8001] == expected[11999] == 0.8 / 512
    for norm in ("linf", "l2"):
        attack = Square(norm, 0.1, queries=queries, p_init=0.8, rescale_schedule=rescale)
        for shape in ((28, 28, 1), (32, 32, 3), (8, 8, 1)):
            graph = tf.function(
                lambda q, attack=attack, shape=shape: tf.map_fn(
                    lambda one: attack._side(one, shape), q
                )
            )
            sides = graph(tf.range(queries)).numpy()
            np.testing.assert_array_equal(
                sides, [reference_side(p, shape, norm) for p in expected], err_msg=f"{norm}"
            )


def test_pseudo_gaussian_window_matches_the_reference_and_its_transpose() -> None:
    for s in range(1, 28):
        pattern = pseudo_gaussian_window(s).numpy()
        np.testing.assert_allclose(pattern, reference_window(s), atol=1e-6)
        assert np.sum(pattern**2) == pytest.approx(1.0, abs=1e-5)
    s, top, left = 5, np.array([0, 2]), np.array([3, 1])
    placed = place_pattern(
        pseudo_gaussian_window(s), s, top, left, tf.constant([False, True]), 8, 9
    )
    placed = placed.numpy()[..., 0]
    np.testing.assert_allclose(placed[0, 0:5, 3:8], reference_window(s), atol=1e-6)
    np.testing.assert_allclose(placed[1, 2:7, 1:6], reference_window(s).T, atol=1e-6)
    assert np.count_nonzero(placed[0]) == np.count_nonzero(reference_window(s))


# ---------------------------------------------------------------- Linf


def linf_state(n: int, shape, eps: float):
    """Clean images, mostly black or white pixels (MNIST-like: one sign clips away), and a
    current iterate on the vertices of the ball, clipped to [0, 1]."""
    rng = np.random.default_rng(1)
    x = rng.choice([0.0, 1.0, 0.5], size=(n, *shape), p=[0.6, 0.3, 0.1])
    signs = rng.choice([-1.0, 1.0], size=(n, 1, 1, shape[-1]))  # uniform state: no-op likely
    x_now = np.clip(x + eps * signs, 0, 1)
    return x.astype(np.float32), x_now.astype(np.float32)


@pytest.mark.parametrize("channels", [1, 3])
def test_linf_proposal_is_one_window_of_plus_minus_eps_that_changes_the_image(channels) -> None:
    eps, side, shape = 0.3, 3, (6, 6, channels)
    attack = Square("linf", eps)
    x, x_now = linf_state(400, shape, eps)
    keys = seeding.example_keys(tf.constant([1, 2]), tf.range(400))
    candidate = attack._propose_linf(
        tf.constant(x), tf.constant(x_now), tf.constant(side), keys, tf.constant(eps), (0.0, 1.0)
    ).numpy()
    changed = np.any(np.abs(candidate - x_now) >= SAME_PIXEL, axis=(1, 2, 3))
    assert changed.all()  # no query is spent on a no-op
    assert np.all(np.abs(candidate - x) <= eps + 1e-6) and candidate.min() >= 0
    assert candidate.max() <= 1
    top, left = (t.numpy() for t in attack._corners(keys, tf.constant(side), *shape[:2]))
    flipped = []
    for i in range(len(x)):
        window = box_mask((1, *shape), top[i], left[i], side)[0] > 0
        np.testing.assert_array_equal(candidate[i][~window], x_now[i][~window])
        pattern = []
        for ch in range(channels):
            inside = window[..., ch]
            values = candidate[i][..., ch][inside]
            plus = np.clip(x[i][..., ch][inside] + eps, 0, 1)
            minus = np.clip(x[i][..., ch][inside] - eps, 0, 1)
            is_plus, is_minus = np.allclose(values, plus), np.allclose(values, minus)
            assert is_plus != is_minus  # clip(x + sigma * eps) for one sign sigma per channel
            state_plus = np.all(np.isclose(x_now[i][..., ch][inside], plus))
            pattern.append(is_plus != state_plus)
        flipped.append(sum(bit << k for k, bit in enumerate(pattern)))
    # the state's own signs are the only no-op pattern; the others are drawn uniformly (the
    # distribution of the reference's redraw loop)
    counts = np.bincount(flipped, minlength=2**channels)
    assert counts[0] == 0 and counts[1:].min() > 0.5 * counts[1:].mean()


def test_every_linf_query_stays_in_ball_and_bounds_and_changes_the_clipped_image() -> None:
    class Checked(Square):
        def _propose(self, x_clean, x_now, side, keys, eps, bounds):
            candidate = super()._propose(x_clean, x_now, side, keys, eps, bounds)
            moved = tf.reduce_any(tf.abs(candidate - x_now) >= SAME_PIXEL, axis=[1, 2, 3])
            checks = [
                tf.debugging.assert_equal(tf.reduce_all(moved), True, "a no-op query"),
                tf.debugging.assert_less_equal(tf.abs(candidate - x_clean), eps + 1e-6),
                tf.debugging.assert_greater_equal(candidate, bounds[0]),
                tf.debugging.assert_less_equal(candidate, bounds[1]),
            ]
            with tf.control_dependencies(checks):
                return tf.identity(candidate)

    x, y = quadrant_data(16, seed=3)
    x[:, :2] = 0.0  # saturated rows, where half the plain sign draws would change nothing
    result = Checked("linf", 0.3, queries=80, early_stop=False)(healthy(), x, y)
    assert np.all(result.steps == 80)
    delta = np.abs(result.x_adv - x)  # every changed pixel on a face of the ball or a bound
    on_face = np.isclose(delta, 0.3, atol=1e-6) | np.isin(result.x_adv, (0.0, 1.0))
    assert np.all(on_face | (delta == 0))


def test_linf_start_is_vertical_stripes_and_bounds_are_the_classifiers() -> None:
    rng = np.random.default_rng(2)
    weights = rng.normal(size=(64, 3)).astype(np.float32)
    classifier = Classifier(linear_model(weights, np.zeros(3), SHAPE), bounds=(0.0, 255.0))
    x = rng.uniform(0, 255, size=(6, *SHAPE)).astype(np.float32)
    eps = tf.constant(40.0)
    attack = Square("linf", 40.0, queries=1)
    keys = seeding.example_keys(tf.constant([0, 0]), tf.range(6))
    start = attack._start(tf.constant(x), keys, eps, classifier.bounds).numpy()
    signs = np.sign(start - x)
    assert np.all(np.abs(start - np.clip(x + 40 * signs, 0, 255)) < 1e-4)
    unclipped = (x > 40) & (x < 215)  # one sign per column: same sign down every column
    for i in range(6):
        for col in range(SHAPE[1]):
            column = signs[i, :, col, 0][unclipped[i, :, col, 0]]
            assert len(set(column)) <= 1
    result = Square("linf", 40.0, queries=30)(classifier, x)
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 255 and result.x_adv.max() > 200
    assert np.all(result.linf <= 40 + 1e-4)


# ---------------------------------------------------------------- L2


def test_l2_update_matches_the_reference_step() -> None:
    rng = np.random.default_rng(3)
    n, shape, s, eps = 4, (9, 9, 3), 3, 2.0
    delta = rng.normal(size=(n, *shape))
    delta *= (
        rng.uniform(0.3, 1.0, (n, 1, 1, 1))
        * eps
        / np.linalg.norm(delta.reshape(n, -1), axis=1).reshape(n, 1, 1, 1)
    )
    first = box_mask((n, *shape[:2], 1), 2, 4, s)
    second = box_mask((n, *shape[:2], 1), 3, 3, s)  # overlapping windows
    window = np.zeros((n, *shape))
    window[:, 2:5, 4:7] = reference_window(s)[None, :, :, None]
    bump = window * rng.choice([-1.0, 1.0], size=(n, 1, 1, 3))
    got = l2_window_update(
        tf.constant(delta, tf.float32),
        tf.constant(first > 0),
        tf.constant((first + second) > 0),
        tf.constant(bump, tf.float32),
        tf.constant(eps),
    ).numpy()
    np.testing.assert_allclose(got, reference_l2_update(delta, first, second, bump, eps), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got.reshape(n, -1), axis=1), eps, rtol=1e-5)
    # per channel, window 1 carries the mass of both windows plus a third of the unused budget
    unused = eps**2 - np.sum(delta**2, axis=(1, 2, 3))
    for ch in range(3):
        mass = np.sum((delta[..., ch : ch + 1] * np.maximum(first, second)) ** 2, axis=(1, 2, 3))
        window_mass = np.sum((got[..., ch : ch + 1] * first) ** 2, axis=(1, 2, 3))
        np.testing.assert_allclose(window_mass, mass + unused / 3, rtol=1e-4)


def test_every_l2_update_has_norm_eps_where_bounds_do_not_clip() -> None:
    rng = np.random.default_rng(4)
    eps = 1.5

    class Checked(Square):
        def _propose(self, x_clean, x_now, side, keys, eps, bounds):
            candidate = super()._propose(x_clean, x_now, side, keys, eps, bounds)
            norms = tf.norm(tf.reshape(candidate - x_clean, [tf.shape(x_clean)[0], -1]), axis=1)
            check = tf.debugging.assert_near(norms, tf.fill(tf.shape(norms), eps), rtol=1e-4)
            with tf.control_dependencies([check]):
                return tf.identity(candidate)

    weights = rng.normal(size=(64, 3)).astype(np.float32)
    classifier = Classifier(linear_model(weights, np.zeros(3), SHAPE), bounds=(-20.0, 20.0))
    x = rng.uniform(-1, 1, size=(12, *SHAPE)).astype(np.float32)
    result = Checked("l2", eps, queries=60, early_stop=False)(classifier, x)
    np.testing.assert_allclose(result.l2, eps, rtol=1e-4)  # the best iterate is one of them
    assert np.all(result.steps == 60)


@pytest.mark.parametrize("rescale", [True, False])
def test_every_l2_query_moves_mass_only_into_window_1_and_stays_in_ball_and_bounds(
    rescale,
) -> None:
    """With the [0, 1] bounds clipping: a candidate keeps the iterate outside both windows,
    empties window 2, gives window 1 (per channel, before clipping) exactly the mass of both
    windows plus the unused budget eps² - ||delta||², and lies in the L2 ball and the bounds."""
    eps, channels = 1.0, SHAPE[-1]
    counts = tf.Variable([0, 0], dtype=tf.int32)  # queries whose window 1 was / was not clipped

    class Checked(Square):
        def _propose(self, x_clean, x_now, side, keys, eps, bounds):
            candidate = super()._propose(x_clean, x_now, side, keys, eps, bounds)
            height, width = x_clean.shape[1:3]
            first = square_mask(side, *self._corners(keys, side, height, width), height, width)
            corners_2 = self._corners(seeding.fold_in(keys, 2), side, height, width)
            second = square_mask(side, *corners_2, height, width) & ~first
            delta, moved = x_now - x_clean, candidate - x_clean

            def mass(values, mask):  # [m]
                return tf.reduce_sum(tf.square(tf.where(mask, values, 0.0)), axis=[1, 2, 3])

            everywhere = tf.ones_like(first)
            unused = tf.maximum(eps**2 - mass(delta, everywhere), 0.0)
            budget = unused + mass(delta, first | second)  # channels == 1
            at_bound = (candidate <= bounds[0]) | (candidate >= bounds[1])
            clipped = tf.reduce_any(at_bound & first, axis=[1, 2, 3])
            window_mass = mass(moved, first)
            checks = [
                tf.debugging.assert_near(tf.where(first | second, x_now, candidate), x_now,
                                         atol=1e-5, message="changed outside the windows"),
                tf.debugging.assert_equal(tf.where(second, candidate, x_clean), x_clean),
                tf.debugging.assert_near(tf.where(clipped, budget, window_mass), budget,
                                         rtol=1e-4, atol=1e-6, message="window 1's budget"),
                tf.debugging.assert_less_equal(window_mass, budget * (1 + 1e-4) + 1e-6),
                tf.debugging.assert_less_equal(mass(moved, everywhere), eps**2 * (1 + 1e-5)),
                tf.debugging.assert_greater_equal(candidate, bounds[0]),
                tf.debugging.assert_less_equal(candidate, bounds[1]),
                counts.assign_add(tf.stack([tf.reduce_sum(tf.cast(c, tf.int32))
                                            for c in (clipped, ~clipped)])),
            ]  # fmt: skip
            with tf.control_dependencies(checks):
                return tf.identity(candidate)

    assert channels == 1
    x, y = quadrant_data(16, seed=8)
    attack = Checked("l2", eps, queries=80, rescale_schedule=rescale, early_stop=False)
    result = attack(healthy(), x, y)
    assert np.all(result.steps == 80)
    assert np.all(result.l2 <= eps * (1 + 1e-5))
    assert np.all((result.x_adv >= 0) & (result.x_adv <= 1))
    clipped, unclipped = counts.numpy()
    assert clipped + unclipped == 16 * 79 and clipped > 50 and unclipped > 50  # both cases


def test_l2_start_is_a_grid_of_pseudo_gaussian_squares_of_norm_eps() -> None:
    attack = Square("l2", 2.0)
    keys = seeding.example_keys(tf.constant([3, 1]), tf.range(5))
    x = np.full((5, 28, 28, 1), 0.5, np.float32)  # eps 2 over 625 pixels never clips
    start = attack._start(tf.constant(x), keys, tf.constant(2.0), (0.0, 1.0)).numpy()
    delta = start - x
    np.testing.assert_allclose(np.linalg.norm(delta.reshape(5, -1), axis=1), 2.0, rtol=1e-5)
    assert np.all(delta[:, 0] == 0) and np.all(delta[:, 26:] == 0)  # s = 5 from offset 1
    pattern = reference_window(5)
    for i in range(5):
        for r in range(5):
            for c in range(5):
                block = delta[i, 1 + 5 * r : 6 + 5 * r, 1 + 5 * c : 6 + 5 * c, 0]
                block = block / np.linalg.norm(block)
                assert any(np.allclose(block, v, atol=1e-5) for v in (pattern, -pattern,
                           pattern.T, -pattern.T))  # fmt: skip


# ---------------------------------------------------------------- the attack as a whole


@pytest.mark.parametrize("norm, eps", [("linf", 0.3), ("l2", 2.5)])
def test_rows_do_not_depend_on_the_batch_and_seeds_give_bytes(norm, eps) -> None:
    x, y = quadrant_data(20, seed=6)
    attack, classifier = Square(norm, eps, queries=40, seed=7), healthy()
    whole = attack(classifier, x, y)
    assert 0 < whole.success.sum() < 20  # some leave the batch early, at different times
    alone = attack(classifier, x[:5], y[:5])
    assert alone.x_adv.tobytes() == whole.x_adv[:5].tobytes()
    np.testing.assert_array_equal(alone.steps, whole.steps[:5])
    np.testing.assert_array_equal(alone.success, whole.success[:5])
    assert attack(classifier, x, y).x_adv.tobytes() == whole.x_adv.tobytes()
    attack.seed = 8  # read at call time: another seed, no new trace
    assert attack(classifier, x, y).x_adv.tobytes() != whole.x_adv.tobytes()
    smaller = attack(classifier, x, y, eps=eps / 2)  # eps is a tensor: the same trace
    assert np.all((smaller.linf if norm == "linf" else smaller.l2) <= eps / 2 * (1 + 1e-5))
    assert attack.compiled(classifier).experimental_get_tracing_count() == 1


@pytest.mark.parametrize("norm, eps", [("linf", 0.3), ("l2", 2.5)])
def test_success_is_a_fresh_misclassification_and_queries_are_counted(norm, eps) -> None:
    x, y = quadrant_data(24, seed=3)
    y[0] = (y[0] + 1) % 4  # misclassified when clean: judged first, no query spent
    classifier = healthy()
    result = Square(norm, eps, queries=50, restarts=2, seed=1)(classifier, x, y)
    fresh = classifier.predict_logits(result.x_adv).argmax(1)
    np.testing.assert_array_equal(result.success, fresh != y)
    np.testing.assert_array_equal(result.adv_pred, fresh)
    distance = result.linf if norm == "linf" else result.l2
    assert np.all(distance <= eps * (1 + 1e-5))
    assert result.x_adv.min() >= 0.0 and result.x_adv.max() <= 1.0
    assert result.steps[0] == 0 and result.success[0]
    assert np.all(result.steps[~result.success] == 100)  # two restarts of 50, the start included
    broken = result.success & (result.steps > 0)
    assert broken.any() and np.all((result.steps[broken] >= 1) & (result.steps[broken] <= 100))


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 2.0)])
def test_batches_broken_at_once_never_run_an_empty_forward_pass(norm, eps) -> None:
    """Two stacked convolutions reject an empty batch; every example breaks at its start."""
    convolutions = keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )

    def moved_away(x, training=False):  # class 1 as soon as the image leaves 0.5
        distance = tf.reduce_mean(tf.abs(x - 0.5), axis=[1, 2, 3])
        return 0.0 * convolutions(x) + tf.stack([tf.zeros_like(distance), 100 * distance - 1], 1)

    x = np.full((6, *SHAPE), 0.5, np.float32)
    result = Square(norm, eps, queries=20, restarts=2)(wrapped(moved_away), x, np.zeros(6, int))
    assert result.success.all() and np.all(result.steps == 1)  # restart 2 had nobody left


def test_square_breaks_a_model_whose_gradients_are_cut() -> None:
    x, y = quadrant_data(32, seed=4)
    masked = wrapped(stop_gradient_outputs)
    pgd = PGD("linf", 0.3, steps=20, random_start=False)(masked, x, y)
    square = Square("linf", 0.3, queries=300)(masked, x, y)
    assert pgd.success.sum() == 0  # zero gradients: PGD never moves
    assert square.success.mean() > 0.9


def test_targeted_square_reaches_the_target_on_a_linear_model() -> None:
    weights = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    classifier = Classifier(linear_model(weights, np.zeros(4), SHAPE))
    x = np.full((6, *SHAPE), 0.5, np.float32)
    target = np.array([0, 1, 2, 3, 0, 1])
    result = Square("linf", 0.5, queries=200)(classifier, x, target=target)
    assert np.all(result.success)
    np.testing.assert_array_equal(result.adv_pred, target)


@pytest.mark.parametrize(
    "options", [{"queries": 0}, {"p_init": 0.0}, {"p_init": 1.5}, {"restarts": 0}]
)
def test_square_rejects_bad_options(options) -> None:
    with pytest.raises(InputError):
        Square("linf", 0.1, **options)


def test_square_config_lists_every_hyperparameter() -> None:
    attack = Square("l2", 0.5, queries=30, p_init=0.3, restarts=2, seed=4)
    assert attack.gradient_free
    assert attack.config == {
        "attack": "Square",
        "norm": "l2",
        "eps": 0.5,
        "queries": 30,
        "p_init": 0.3,
        "restarts": 2,
        "rescale_schedule": True,
        "loss": "margin",
        "early_stop": True,
        "seed": 4,
    }
    assert attack.budget(10) == 60 and Square("linf", 0.1).queries == 5000
