"""Training speed of the FlipReID model with and without the flip structure, side by side.

Usage:
    python benchmarks/bench_training.py --backbone resnet18 --image_height 128 \
        --image_width 64 --batch_size 16 --steps 20
    python benchmarks/bench_training.py --compare_onednn   # also with oneDNN off, for the ratio

TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, at import, so --compare_onednn measures each
setting in a child process of its own.
"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from applications.backend import keras, tf  # noqa: E402
from applications.model import build_flipreid_models  # noqa: E402

_WARMUP_STEPS = 2


def measure_steps_per_second(use_flipping, args):
    """Builds and compiles one model, traces it, then times `args.steps` training steps."""
    num_identities = max(args.batch_size // 4, 2)
    training_model, _ = build_flipreid_models(
        args.backbone,
        args.image_height,
        args.image_width,
        num_identities,
        use_horizontal_flipping_inside_model=use_flipping,
    )
    training_model.compile(keras.optimizers.Adam(2e-4))
    images = tf.random.uniform(
        (args.batch_size, args.image_height, args.image_width, 3), maxval=256, dtype=tf.int32
    )
    images = tf.cast(images, tf.uint8)
    labels = tf.range(args.batch_size, dtype=tf.int32) // 4 % num_identities
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    training_model.fit(dataset, steps_per_epoch=_WARMUP_STEPS, epochs=1, verbose=0)
    start = time.perf_counter()
    training_model.fit(dataset, steps_per_epoch=args.steps, epochs=1, verbose=0)
    return args.steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image_height", type=int, default=128)
    parser.add_argument("--image_width", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument(
        "--compare_onednn",
        action="store_true",
        help="run the measurement with TF_ENABLE_ONEDNN_OPTS=1 and =0 and print the ratios",
    )
    args = parser.parse_args()
    if args.compare_onednn:
        compare_onednn(args)
        return

    print(
        f"backbone={args.backbone} image={args.image_height}x{args.image_width} "
        f"batch_size={args.batch_size} steps={args.steps} (after {_WARMUP_STEPS} warm-up steps)"
    )
    results = {}
    for use_flipping in (False, True):
        steps_per_second = measure_steps_per_second(use_flipping, args)
        results[use_flipping] = steps_per_second
        print(
            f"flip={use_flipping}: {steps_per_second:.3f} steps/s, "
            f"{steps_per_second * args.batch_size:.1f} images/s"
        )
    print(f"step time ratio flip / no flip: {results[False] / results[True]:.2f}")


def compare_onednn(args):
    """Runs this script once per oneDNN setting, then prints the speed-up of oneDNN."""
    child_arguments = [
        sys.executable,
        os.path.abspath(__file__),
        "--backbone",
        args.backbone,
        "--image_height",
        str(args.image_height),
        "--image_width",
        str(args.image_width),
        "--batch_size",
        str(args.batch_size),
        "--steps",
        str(args.steps),
    ]
    steps_per_second = {}
    for setting in ("1", "0"):
        environment = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=setting)
        output = subprocess.run(
            child_arguments, env=environment, capture_output=True, text=True, check=True
        ).stdout
        print(f"TF_ENABLE_ONEDNN_OPTS={setting}:\n{output}")
        for line in output.splitlines():
            if line.startswith("flip="):
                flip = line.split(":")[0]
                steps_per_second[(setting, flip)] = float(line.split()[1])
    for flip in ("flip=False", "flip=True"):
        ratio = steps_per_second[("1", flip)] / steps_per_second[("0", flip)]
        print(f"{flip}: oneDNN on / off speed ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
