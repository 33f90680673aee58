"""What ``clipped_noisy(Adam)`` costs beyond the clipping and noise themselves.

For each model shape, three compiled training steps (``tf.function``: tape, gradients, update),
each on its own copy of the model (same initial weights, same batches):

- ``adam``: plain ``keras.optimizers.Adam``;
- ``hand``: a hand-written step that clips the gradients to global norm 1 and adds N(0, σ²)
  noise (one stateless draw keyed by a seed and a step counter kept in a ``tf.Variable``), then
  applies Adam: the cost of the feature itself;
- ``clipped_noisy``: ``rko.clipped_noisy(Adam, clip_norm=1, noise=σ)``.

``hand`` derives its noise key as the wrapper does, so after the warm-up both must hold
bit-identical weights (checked and printed): the two do the same arithmetic, and any difference
in time is the wrapper's. Targets: clipped_noisy / hand <= 1.05; clipped_noisy / adam is shown
beside it (the noise draw itself dominates it on a CPU).

Timing: interleaved rounds; each round times ``--steps`` steps of every variant in turn (the
order rotating from round to round), and each ratio is the median over rounds of the per-round
ratio, with its interquartile range, so that load drifting during the run hits all variants
alike. Wall time is what a GPU user sees; process CPU time (all threads) is shown too.

Run from the repository root (synthetic data; run it alone on the machine):

    python benchmarks/bench_optimizer_overhead.py                 # all shapes
    python benchmarks/bench_optimizer_overhead.py --rounds 2 --steps 2 --batch 8   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from robustkit import optimizers as rko

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from build_example_model import build_model  # the shipped example's CNN

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
CLIP = 1.0
SIGMA = 0.01
SEED = 0
VARIANTS = ("adam", "hand", "clipped_noisy")
TARGET = 1.05


def mlp(inputs: int, widths: list[int], name: str) -> keras.Model:
    layers = [keras.Input((inputs,))]
    layers += [keras.layers.Dense(w, activation="relu") for w in widths]
    layers.append(keras.layers.Dense(10))
    return keras.Sequential(layers, name=name)


# name -> (builder, input shape): few large tensors, many small ones, a tiny model where the
# fixed cost per step counts most, and the shipped MNIST CNN.
SHAPES: dict[str, tuple[Callable[[], keras.Model], tuple[int, ...]]] = {
    "mnist_cnn": (build_model, (28, 28, 1)),
    "deep_mlp_16x128": (lambda: mlp(256, [128] * 16, "deep_mlp"), (256,)),
    "wide_mlp_4096": (lambda: mlp(512, [4096], "wide_mlp"), (512,)),
    "small_mlp_64": (lambda: mlp(32, [64], "small_mlp"), (32,)),
}

Step = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def fresh_model(name: str) -> keras.Model:
    keras.utils.set_random_seed(0)  # every variant starts from the same weights (and dropout)
    return SHAPES[name][0]()


def keras_step(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> Step:
    """A compiled step applying the batch gradient with ``optimizer``."""
    variables = model.trainable_variables
    optimizer.build(variables)

    @tf.function
    def step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = LOSS(y, model(x, training=True))
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    return step


def hand_step(model: keras.Model) -> Step:
    """Clip to global norm CLIP, add N(0, SIGMA²) noise, Adam: written out by hand."""
    variables = model.trainable_variables
    adam = keras.optimizers.Adam(1e-3)
    adam.build(variables)
    counter = tf.Variable(0, dtype=tf.int64, trainable=False)
    sizes = [v.shape.num_elements() for v in variables]

    @tf.function
    def step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = LOSS(y, model(x, training=True))
        grads = tape.gradient(loss, variables)
        grads, _ = tf.clip_by_global_norm(grads, CLIP)
        # The wrapper's key for its second transform: (seed, step) folded with position 1.
        key = tf.stack([tf.constant(SEED, tf.int64), counter.read_value()])
        key = tf.random.experimental.stateless_fold_in(key, 1)
        noise = tf.split(tf.random.stateless_normal([sum(sizes)], seed=key, stddev=SIGMA), sizes)
        grads = [g + tf.reshape(n, g.shape) for g, n in zip(grads, noise, strict=True)]
        adam.apply_gradients(zip(grads, variables, strict=True))
        counter.assign_add(1)
        return loss

    return step


def bench_shape(name: str, args: argparse.Namespace) -> dict[str, object]:
    """Time the three variants on one model shape; the medians and ratios."""
    input_shape = SHAPES[name][1]
    rng = np.random.default_rng(0)
    batches = [
        (
            tf.constant(rng.normal(size=(args.batch, *input_shape)).astype(np.float32)),
            tf.constant(rng.integers(0, 10, args.batch).astype(np.int32)),
        )
        for _ in range(8)
    ]
    models = {variant: fresh_model(name) for variant in VARIANTS}
    steps: dict[str, Step] = {
        "adam": keras_step(models["adam"], keras.optimizers.Adam(1e-3)),
        "hand": hand_step(models["hand"]),
        "clipped_noisy": keras_step(
            models["clipped_noisy"],
            rko.clipped_noisy(keras.optimizers.Adam(1e-3), clip_norm=CLIP, noise=SIGMA, seed=SEED),
        ),
    }
    cursor = dict.fromkeys(VARIANTS, 0)

    def run(variant: str, count: int) -> tuple[float, float]:
        """Wall and process-CPU seconds per step over ``count`` steps on the next batches."""
        wall, cpu = time.perf_counter(), time.process_time()
        loss = None
        for _ in range(count):
            x, y = batches[cursor[variant] % len(batches)]
            cursor[variant] += 1
            loss = steps[variant](x, y)
        loss.numpy()  # wait for the device: the last step's loss and ...
        models[variant].trainable_variables[-1].numpy()  # ... its update
        return (time.perf_counter() - wall) / count, (time.process_time() - cpu) / count

    for variant in VARIANTS:  # trace and warm up, the same steps for all
        run(variant, args.warmup)
    identical = all(
        a.numpy().tobytes() == b.numpy().tobytes()
        for a, b in zip(models["hand"].weights, models["clipped_noisy"].weights, strict=True)
    )
    per_step: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    for round_index in range(args.rounds):
        shift = round_index % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            per_step[variant].append(run(variant, args.steps))

    def ratio(numerator: str, denominator: str, clock: int) -> dict[str, float]:
        ratios = sorted(
            a[clock] / b[clock]
            for a, b in zip(per_step[numerator], per_step[denominator], strict=True)
        )
        if len(ratios) >= 2:
            low, median, high = statistics.quantiles(ratios, n=4, method="inclusive")
        else:
            low = median = high = ratios[0]
        return {"median": median, "q1": low, "q3": high}

    model = models["adam"]
    return {
        "shape": name,
        "weights": int(sum(v.shape.num_elements() for v in model.trainable_variables)),
        "variables": len(model.trainable_variables),
        "hand_equals_clipped_noisy": identical,
        "ms_per_step": {
            v: {
                "wall": 1000 * statistics.median(t[0] for t in per_step[v]),
                "cpu": 1000 * statistics.median(t[1] for t in per_step[v]),
            }
            for v in VARIANTS
        },
        "clipped_noisy/hand": {
            "wall": ratio("clipped_noisy", "hand", 0),
            "cpu": ratio("clipped_noisy", "hand", 1),
        },
        "clipped_noisy/adam": {
            "wall": ratio("clipped_noisy", "adam", 0),
            "cpu": ratio("clipped_noisy", "adam", 1),
        },
        "hand/adam": {"wall": ratio("hand", "adam", 0), "cpu": ratio("hand", "adam", 1)},
    }


def show(value: dict[str, float]) -> str:
    return f"{value['median']:.3f}x ({value['q1']:.3f}-{value['q3']:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=10, help="steps per variant per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per variant")
    parser.add_argument("--json", type=Path, help="also write the results there")
    args = parser.parse_args()

    gpus = tf.config.list_physical_devices("GPU")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {len(gpus)} GPUs, "
        f"TF {tf.__version__}, Keras {keras.__version__}; batch {args.batch}, "
        f"{args.rounds} interleaved rounds of {args.steps} steps per variant, "
        f"clip {CLIP}, noise std {SIGMA}"
    )
    results = []
    for name in args.shapes:
        result = bench_shape(name, args)
        results.append(result)
        ms = result["ms_per_step"]
        print(
            f"\n{name}: {result['weights']:,} weights in {result['variables']} variables; "
            f"hand-written and clipped_noisy weights bit-identical: "
            f"{result['hand_equals_clipped_noisy']}"
        )
        for variant in VARIANTS:
            print(
                f"  {variant:14s} median step {ms[variant]['wall']:8.2f} ms wall, "
                f"{ms[variant]['cpu']:8.2f} ms CPU"
            )
        for label in ("clipped_noisy/hand", "clipped_noisy/adam", "hand/adam"):
            print(
                f"  {label:19s} wall {show(result[label]['wall'])}, "
                f"CPU {show(result[label]['cpu'])}"
            )
    print(f"\ntarget: clipped_noisy / hand <= {TARGET}x (wall, median over rounds)")
    for result in results:
        wall = result["clipped_noisy/hand"]["wall"]["median"]
        verdict = "met" if wall <= TARGET else "MISSED"
        print(
            f"  {result['shape']:16s} {wall:.3f}x {verdict}; vs plain Adam "
            f"{result['clipped_noisy/adam']['wall']['median']:.3f}x"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"arguments": vars(args) | {"json": str(args.json)}, "results": results}, indent=2
            )
        )


if __name__ == "__main__":
    main()
