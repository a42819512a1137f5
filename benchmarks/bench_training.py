"""Training throughput of the FlipReID model, measured against what the hardware allows.

Prints, from one run:
1. training images per second with and without the flip structure, and their step-time ratio
   (every image passes the network twice with it, so 2.0 is the FLOP floor);
2. feature extraction (inference) images per second with and without flip test-time
   augmentation;
3. the training input pipeline alone (read, decode, resize, albumentations augmentation) at
   256x128 from 128x64 JPEGs, and how many times what the model consumes it delivers;
4. the training step's achieved FLOP rate as a fraction of a matrix-multiply peak measured in
   the same run (step FLOPs: 3x the forward FLOPs counted by TensorFlow's profiler, the usual
   rule for the forward plus the two backward products).

Usage:
    python benchmarks/bench_training.py --backbone resnet18 --image_height 128 \
        --image_width 64 --batch_size 16 --steps 20
    python benchmarks/bench_training.py --mixed_precision_policy mixed_bfloat16   # on a GPU
    python benchmarks/bench_training.py --compare_onednn   # also with oneDNN off, for the ratio

TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, at import, so --compare_onednn measures each
setting in a child process of its own.
"""

import argparse
import gc
import os
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import numpy as np  # noqa: E402

from applications.backend import keras, tf  # noqa: E402
from applications.model import build_flipreid_models  # noqa: E402

_WARMUP_STEPS = 2


def _random_batch(args, num_identities):
    images = tf.random.uniform(
        (args.batch_size, args.image_height, args.image_width, 3), maxval=256, dtype=tf.int32
    )
    labels = tf.range(args.batch_size, dtype=tf.int32) // 4 % num_identities
    return tf.cast(images, tf.uint8), labels


def _build(args, use_flipping):
    num_identities = max(args.batch_size // 4, 2)
    keras.utils.set_random_seed(0)
    training_model, inference_model = build_flipreid_models(
        args.backbone,
        args.image_height,
        args.image_width,
        num_identities,
        use_horizontal_flipping_inside_model=use_flipping,
    )
    training_model.compile(keras.optimizers.Adam(2e-4), jit_compile=args.jit_compile or None)
    return training_model, inference_model, num_identities


def measure_training(use_flipping, args):
    """Returns (steps per second, the training model) after warm-up steps."""
    training_model, _, num_identities = _build(args, use_flipping)
    dataset = tf.data.Dataset.from_tensors(_random_batch(args, num_identities)).repeat()
    training_model.fit(dataset, steps_per_epoch=_WARMUP_STEPS, epochs=1, verbose=0)
    start = time.perf_counter()
    training_model.fit(dataset, steps_per_epoch=args.steps, epochs=1, verbose=0)
    return args.steps / (time.perf_counter() - start), training_model


def measure_extraction(inference_model, use_flipping, args):
    """Inference images per second on uint8 batches, with or without flip averaging."""

    @tf.function
    def forward(images):
        if not use_flipping:
            return inference_model(images, training=False)
        both = tf.concat([images, tf.image.flip_left_right(images)], axis=0)
        original, flipped = tf.split(inference_model(both, training=False), 2, axis=0)
        return (original + flipped) / 2

    images, _ = _random_batch(args, 2)
    for _ in range(_WARMUP_STEPS):
        forward(images).numpy()
    start = time.perf_counter()
    for _ in range(args.steps):
        forward(images).numpy()
    return args.steps * args.batch_size / (time.perf_counter() - start)


def count_forward_flops(training_model, args):
    """Floating-point operations of one forward pass of the branch network over one batch.

    With the flip structure the network sees 2B images; TensorFlow's profiler counts each
    multiply-add as 2 operations in the traced graph (convolutions and matrix products).
    """
    batch = args.batch_size * (2 if training_model.use_horizontal_flipping_inside_model else 1)
    branch_network = training_model.branch_network
    function = tf.function(lambda images: branch_network(images, training=True))
    concrete = function.get_concrete_function(
        tf.TensorSpec((batch, args.image_height, args.image_width, 3), tf.float32)
    )
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # the v1 profiler warns that it is a v1 API
    try:
        profile = tf.compat.v1.profiler.profile(graph=concrete.graph, options=options)
    finally:
        logger.setLevel(level)
    return profile.total_float_ops


def measure_matmul_peak(args):
    """FLOP/s of repeated square matrix products, in the compute dtype of the policy."""
    size = args.matmul_size
    dtype = keras.mixed_precision.global_policy().compute_dtype
    a = tf.random.normal((size, size), dtype=tf.float32)
    b = tf.random.normal((size, size), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)

    @tf.function
    def products(a, b):
        c = a
        for _ in range(4):
            c = tf.matmul(c, b) * tf.cast(1e-3, dtype)
        return tf.reduce_sum(tf.cast(c, tf.float32))

    products(a, b).numpy()
    # The best of several timings: on a shared machine the slower ones measure the neighbours.
    best_seconds = float("inf")
    for _ in range(args.matmul_repeats):
        start = time.perf_counter()
        products(a, b).numpy()
        best_seconds = min(best_seconds, time.perf_counter() - start)
    return 4 * 2 * size**3 / best_seconds, dtype


def measure_pipeline(args):
    """Training-pipeline images per second at 256x128 (decode, resize, augment, batch)."""
    import cv2

    from datasets.pipeline import build_training_dataset

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder_path:
        file_paths, labels = [], []
        for index in range(args.pipeline_image_num):
            file_path = os.path.join(folder_path, f"{index:05d}.jpg")
            pixels = rng.integers(0, 256, (128, 64, 3), dtype=np.uint8)
            cv2.imwrite(file_path, cv2.GaussianBlur(pixels, (5, 5), 0))
            file_paths.append(file_path)
            labels.append(index // 4)
        dataset = build_training_dataset(
            file_paths,
            labels,
            identity_num_per_batch=16,
            image_num_per_identity=4,
            image_height=256,
            image_width=128,
        )
        iterator = iter(dataset)
        for _ in range(3):
            next(iterator)
        batch_num = args.pipeline_batch_num
        start = time.perf_counter()
        for _ in range(batch_num):
            images, _ = next(iterator)
        _ = images.numpy()
        images_per_second = batch_num * 64 / (time.perf_counter() - start)
        # Stop the prefetching threads before the folder goes, or they read deleted files.
        del iterator, dataset
        gc.collect()
    return images_per_second


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image_height", type=int, default=128)
    parser.add_argument("--image_width", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument(
        "--mixed_precision_policy",
        default="float32",
        choices=["float32", "mixed_float16", "mixed_bfloat16"],
    )
    parser.add_argument("--jit_compile", action="store_true", help="XLA for the training step")
    parser.add_argument("--matmul_size", type=int, default=2048, help="side of the peak matmul")
    parser.add_argument("--matmul_repeats", type=int, default=8, help="timings of the peak")
    parser.add_argument("--pipeline_image_num", type=int, default=500)
    parser.add_argument("--pipeline_batch_num", type=int, default=40, help="64-image batches")
    parser.add_argument(
        "--compare_onednn",
        action="store_true",
        help="run the training measurement with TF_ENABLE_ONEDNN_OPTS=1 and =0 and print ratios",
    )
    parser.add_argument("--training_only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compare_onednn:
        compare_onednn(args)
        return
    if args.mixed_precision_policy != "float32":
        keras.mixed_precision.set_global_policy(args.mixed_precision_policy)

    devices = [device.name for device in tf.config.list_logical_devices()]
    processor = platform.processor() or platform.machine()
    print(
        f"{time.strftime('%Y-%m-%d')} {platform.node()} {processor}, {os.cpu_count()} CPUs, "
        f"devices {devices}, TensorFlow {tf.__version__}"
    )
    print(
        f"backbone={args.backbone} image={args.image_height}x{args.image_width} "
        f"batch_size={args.batch_size} steps={args.steps} (after {_WARMUP_STEPS} warm-up steps) "
        f"policy={args.mixed_precision_policy} jit_compile={args.jit_compile}"
    )
    training_speed, models = {}, {}
    for use_flipping in (False, True):
        training_speed[use_flipping], models[use_flipping] = measure_training(use_flipping, args)
        print(
            f"train flip={use_flipping}: {training_speed[use_flipping]:.3f} steps/s, "
            f"{training_speed[use_flipping] * args.batch_size:.1f} images/s"
        )
    ratio = training_speed[False] / training_speed[True]
    print(f"train step-time ratio flip / no flip: {ratio:.2f} (floor of the FLOP count: 2.0)")
    if args.training_only:
        return

    _, inference_model, _ = _build(args, True)
    extraction = {flip: measure_extraction(inference_model, flip, args) for flip in (False, True)}
    print(
        f"extraction: {extraction[False]:.1f} images/s without flip TTA, {extraction[True]:.1f} "
        f"with it (ratio {extraction[False] / extraction[True]:.2f})"
    )

    pipeline_speed = measure_pipeline(args)
    consumed = training_speed[True] * args.batch_size
    print(
        f"input pipeline alone, 256x128 with augmentation: {pipeline_speed:.0f} images/s = "
        f"{pipeline_speed / consumed:.1f}x what the flip training step above consumes "
        f"({consumed:.1f} images/s; targets: >= 3x and >= 2,000 images/s)"
    )

    peak, dtype = measure_matmul_peak(args)
    for use_flipping in (False, True):
        step_flops = 3 * count_forward_flops(models[use_flipping], args)
        achieved = step_flops * training_speed[use_flipping]
        print(
            f"train flip={use_flipping}: {step_flops / 1e9:.2f} GFLOP per step, "
            f"{achieved / 1e9:.1f} GFLOP/s = {achieved / peak:.1%} of the {dtype} matmul peak "
            f"{peak / 1e9:.1f} GFLOP/s ({args.matmul_size}^2; target >= 60%)"
        )


def compare_onednn(args):
    """Runs the training measurement once per oneDNN setting, then prints the speed-up."""
    child_arguments = [
        sys.executable,
        os.path.abspath(__file__),
        "--training_only",
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
            if line.startswith("train flip="):
                flip = line.split(":")[0]
                steps_per_second[(setting, flip)] = float(line.split()[2])
    for flip in ("train flip=False", "train flip=True"):
        ratio = steps_per_second[("1", flip)] / steps_per_second[("0", flip)]
        print(f"{flip}: oneDNN on / off speed ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
