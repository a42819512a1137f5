"""Training throughput of the FlipReID model under float32 and mixed_bfloat16, side by side.

Prints, from one run, one column per mixed-precision policy (and their ratio):
1. training images per second with and without the flip structure, and their step-time ratio
   (every image passes the network twice with it, so 2.0 is the FLOP floor);
2. feature extraction (inference) images per second with and without flip test-time
   augmentation;
3. each policy's matrix-multiply peak (in its compute dtype) and the training step's achieved
   FLOP rate as a fraction of that peak (step FLOPs: 3x the forward FLOPs counted by
   TensorFlow's profiler, the usual rule for the forward plus the two backward products);
4. the training input pipeline alone (read, decode, resize, albumentations augmentation) at
   256x128 from 128x64 JPEGs, and how many times what the model consumes it delivers.

Every variant (policy x flip structure) lives in this one process and is timed round-robin, one
step of each in turn, and each figure is the median of its steps: on a shared machine the
neighbours' load then falls on every variant alike, so the ratios hold even where the absolute
figures do not. The load average is printed before and after.

Usage:
    python benchmarks/bench_training.py --backbone resnet18 --image_height 128 \
        --image_width 64 --batch_size 16 --steps 20
    python benchmarks/bench_training.py --policies mixed_float16   # on a GPU
    python benchmarks/bench_training.py --compare_onednn   # also with oneDNN off, for the ratio

TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, at import, so --compare_onednn measures each
setting in a child process of its own.
"""

import argparse
import gc
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import numpy as np  # noqa: E402

from applications.core.backend import keras, tf  # noqa: E402
from applications.embedding import embedding_function  # noqa: E402
from applications.model import build_flipreid_models  # noqa: E402
from applications.optimizers import FusedAdam  # noqa: E402
from applications.precision import emulation_note, num_visible_gpus, read_cpu_flags  # noqa: E402

_WARMUP_STEPS = 2
POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


def _random_batch(args, num_identities):
    images = tf.random.uniform(
        (args.batch_size, args.image_height, args.image_width, 3), maxval=256, dtype=tf.int32
    )
    labels = tf.range(args.batch_size, dtype=tf.int32) // 4 % num_identities
    return tf.cast(images, tf.uint8), labels


def _build(args, policy, use_flipping):
    """Builds and compiles the models under `policy` (the global policy is restored after)."""
    num_identities = max(args.batch_size // 4, 2)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        training_model, inference_model = build_flipreid_models(
            args.backbone,
            args.image_height,
            args.image_width,
            num_identities,
            use_horizontal_flipping_inside_model=use_flipping,
            flip_batch_norm_mode=args.flip_batch_norm_mode,
        )
        # The default run's optimizer (regularization_mode none: Adam with the fused update).
        optimizer = (FusedAdam if args.adam_update == "fused" else keras.optimizers.Adam)(2e-4)
        if policy == "mixed_float16":
            optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
        training_model.compile(optimizer, jit_compile=args.jit_compile or None)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    return training_model, inference_model, num_identities


def _round_robin(step_functions, steps):
    """Times one call of each function in turn, `steps` rounds; returns name -> median seconds.

    Each function must block until its result is computed.
    """
    for function in step_functions.values():
        for _ in range(_WARMUP_STEPS):
            function()
    seconds = {name: [] for name in step_functions}
    for _ in range(steps):
        for name, function in step_functions.items():
            start = time.perf_counter()
            function()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def training_step_function(training_model, args, num_identities):
    """One training step on a fixed random batch, as `fit` runs it (blocks until done)."""
    dataset = tf.data.Dataset.from_tensors(_random_batch(args, num_identities)).repeat()
    iterator = iter(dataset)
    train_function = training_model.make_train_function()
    return lambda: float(train_function(iterator)["loss"])


def extraction_function(inference_model, use_flipping, args):
    """One float32-embedding extraction of a uint8 batch, with or without flip averaging."""
    forward = embedding_function(inference_model, use_flipping)
    images, _ = _random_batch(args, 2)
    return lambda: forward(images).numpy()


def count_forward_flops(training_model, args):
    """Floating-point operations of one forward pass of the branch network over one batch.

    With the flip structure the network sees 2B images; TensorFlow's profiler counts each
    multiply-add as 2 operations in the traced graph (convolutions and matrix products).
    """
    batch = args.batch_size * (2 if training_model.use_horizontal_flipping_inside_model else 1)
    branch_network = training_model.branch_network
    function = tf.function(lambda images: branch_network(images, training=True), autograph=False)
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


def matmul_function(dtype, size):
    """Four chained square matrix products in `dtype` (blocks until done)."""
    a = tf.cast(tf.random.normal((size, size), dtype=tf.float32), dtype)
    b = tf.cast(tf.random.normal((size, size), dtype=tf.float32), dtype)

    @tf.function(autograph=False)
    def products(a, b):
        c = a
        for _ in range(4):
            c = tf.matmul(c, b) * tf.cast(1e-3, dtype)
        return tf.reduce_sum(tf.cast(c, tf.float32))

    return lambda: products(a, b).numpy()


def measure_matmul_peaks(dtypes, args):
    """FLOP/s of repeated square matrix products per dtype: the best of interleaved timings.

    The best, not the median: on a shared machine the slower timings measure the neighbours.
    """
    functions = {dtype: matmul_function(dtype, args.matmul_size) for dtype in dtypes}
    for function in functions.values():
        function()
    best_seconds = dict.fromkeys(dtypes, float("inf"))
    for _ in range(args.matmul_repeats):
        for dtype, function in functions.items():
            start = time.perf_counter()
            function()
            best_seconds[dtype] = min(best_seconds[dtype], time.perf_counter() - start)
    return {dtype: 4 * 2 * args.matmul_size**3 / best_seconds[dtype] for dtype in dtypes}


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


def _load():
    return "load average " + " / ".join(f"{value:.2f}" for value in os.getloadavg())


def _table(title, policies, values, formatter):
    """Markdown table row: title | value per policy | ratio last/first (with two policies)."""
    cells = [formatter(values[policy]) for policy in policies]
    if len(policies) == 2:
        cells.append(f"{values[policies[1]] / values[policies[0]]:.2f}x")
    return f"| {title} | " + " | ".join(cells) + " |"


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image_height", type=int, default=128)
    parser.add_argument("--image_width", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument(
        "--policies",
        default="float32,mixed_bfloat16",
        help=f"comma-separated mixed-precision policies to compare, among {', '.join(POLICIES)}",
    )
    parser.add_argument(
        "--mixed_precision_policy",
        choices=POLICIES,
        help="measure this one policy only (the same as --policies with one name)",
    )
    parser.add_argument(
        "--flip_batch_norm_mode",
        default="shared",
        choices=["shared", "separate"],
        help="batch-norm statistics of the flip structure's two passes (see solution.py)",
    )
    parser.add_argument("--jit_compile", action="store_true", help="XLA for the training step")
    parser.add_argument(
        "--adam_update",
        choices=("fused", "tf_keras"),
        default="fused",
        help="Adam's update: one fused kernel per variable (what training uses) or tf_keras's "
        "own ops (before 2026-12-03), for the difference",
    )
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
    return parser.parse_args()


def selected_policies(args):
    """The policies to measure, from --mixed_precision_policy or --policies (exits if unknown)."""
    policies = (
        [args.mixed_precision_policy]
        if args.mixed_precision_policy
        else [name.strip() for name in args.policies.split(",") if name.strip()]
    )
    unknown = [name for name in policies if name not in POLICIES]
    if unknown or not policies:
        sys.exit(f"--policies {args.policies!r}: use names among {', '.join(POLICIES)}.")
    return policies


def print_header(args, policies):
    devices = [device.name for device in tf.config.list_logical_devices()]
    processor = platform.processor() or platform.machine()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')} {platform.node()} {processor}, {os.cpu_count()} "
        f"CPUs, devices {devices}, TensorFlow {tf.__version__}; {_load()}"
    )
    print(
        f"backbone={args.backbone} image={args.image_height}x{args.image_width} "
        f"batch_size={args.batch_size} steps={args.steps} (median, after {_WARMUP_STEPS} warm-up "
        f"steps, variants timed round-robin) policies={','.join(policies)} "
        f"flip_batch_norm_mode={args.flip_batch_norm_mode} jit_compile={args.jit_compile} "
        f"adam_update={args.adam_update}"
    )
    cpu_flags, num_gpus = read_cpu_flags(), num_visible_gpus()
    for policy in policies:
        note = emulation_note(policy, cpu_flags=cpu_flags, num_gpus=num_gpus)
        if note:
            print(f"note: {policy}: {note.removeprefix('; ')}.")


def measure_training(args, policies):
    """Times every (policy, flip structure) training step round-robin and prints the rates.

    Returns:
        (models by variant, images per second by variant, flip/no-flip step ratio by policy).
    """
    variants = [(policy, flip) for policy in policies for flip in (False, True)]
    models = {variant: _build(args, *variant) for variant in variants}
    step_seconds = _round_robin(
        {
            variant: training_step_function(models[variant][0], args, models[variant][2])
            for variant in variants
        },
        args.steps,
    )
    images_per_second = {variant: args.batch_size / step_seconds[variant] for variant in variants}
    for policy, flip in variants:
        print(
            f"train {policy} flip={flip}: {1 / step_seconds[(policy, flip)]:.3f} steps/s, "
            f"{images_per_second[(policy, flip)]:.1f} images/s"
        )
    flip_ratio = {
        policy: step_seconds[(policy, True)] / step_seconds[(policy, False)] for policy in policies
    }
    for policy in policies:
        print(
            f"train {policy} step-time ratio flip / no flip: {flip_ratio[policy]:.2f} "
            "(floor of the FLOP count: 2.0)"
        )
    return models, images_per_second, flip_ratio


def measure_hardware(args, policies, models):
    """Extraction rates, matmul peaks, step FLOPs and the input pipeline, in one dict."""
    extraction_seconds = _round_robin(
        {
            (policy, flip): extraction_function(models[(policy, True)][1], flip, args)
            for policy in policies
            for flip in (False, True)
        },
        args.steps,
    )
    compute_dtypes = {
        policy: keras.mixed_precision.Policy(policy).compute_dtype for policy in policies
    }
    peaks = measure_matmul_peaks(sorted(set(compute_dtypes.values())), args)
    # The same network in every policy: count its FLOPs once, in the float32 graph.
    step_flops = {}
    for flip in (False, True):
        training_model = models.get(("float32", flip), models[(policies[0], flip)])[0]
        step_flops[flip] = 3 * count_forward_flops(training_model, args)
    return dict(
        extraction={key: args.batch_size / value for key, value in extraction_seconds.items()},
        peaks={policy: peaks[compute_dtypes[policy]] for policy in policies},
        step_flops=step_flops,
        pipeline_speed=measure_pipeline(args),
    )


def print_speed_table(args, policies, images_per_second, flip_ratio, hardware):
    """The Markdown table of training, extraction and FLOP rates, one column per policy."""
    print()
    print(
        "| measurement | " + " | ".join(policies) + (" | ratio |" if len(policies) == 2 else " |")
    )
    print("|---|" + "---|" * (len(policies) + (len(policies) == 2)))
    for flip, title in ((False, "training, no flip structure"), (True, "training, flip structure")):
        print(
            _table(
                title + " (images/s)",
                policies,
                {policy: images_per_second[(policy, flip)] for policy in policies},
                lambda value: f"{value:.1f}",
            )
        )
    print(_table("step-time ratio flip / no flip", policies, flip_ratio, lambda v: f"{v:.2f}"))
    for flip, title in ((False, "extraction, no flip TTA"), (True, "extraction, flip TTA")):
        print(
            _table(
                title + " (images/s)",
                policies,
                {policy: hardware["extraction"][(policy, flip)] for policy in policies},
                lambda value: f"{value:.1f}",
            )
        )
    peak_by_policy = hardware["peaks"]
    print(
        _table(
            f"matmul peak {args.matmul_size}^2 in the compute dtype (GFLOP/s)",
            policies,
            peak_by_policy,
            lambda value: f"{value / 1e9:.1f}",
        )
    )
    step_flops = hardware["step_flops"]
    for flip in (False, True):
        achieved = {
            policy: step_flops[flip] * images_per_second[(policy, flip)] / args.batch_size
            for policy in policies
        }
        cells = " | ".join(
            f"{achieved[policy] / 1e9:.1f} = {achieved[policy] / peak_by_policy[policy]:.0%}"
            for policy in policies
        )
        extra = (
            f" | {achieved[policies[1]] / achieved[policies[0]]:.2f}x" if len(policies) == 2 else ""
        )
        print(
            f"| achieved GFLOP/s = share of its own peak, flip={flip} "
            f"({step_flops[flip] / 1e9:.2f} GFLOP/step) | {cells}{extra} |"
        )


def print_pipeline_line(policies, images_per_second, pipeline_speed):
    consumed = max(images_per_second[(policy, True)] for policy in policies)
    print(
        f"\ninput pipeline alone, 256x128 with augmentation: {pipeline_speed:.0f} images/s = "
        f"{pipeline_speed / consumed:.1f}x what the fastest flip training step above consumes "
        f"({consumed:.1f} images/s; targets: >= 3x and >= 2,000 images/s)"
    )


def main():
    args = parse_arguments()
    if args.compare_onednn:
        compare_onednn(args)
        return
    policies = selected_policies(args)
    print_header(args, policies)
    models, images_per_second, flip_ratio = measure_training(args, policies)
    if not args.training_only:
        hardware = measure_hardware(args, policies, models)
        print_speed_table(args, policies, images_per_second, flip_ratio, hardware)
        print_pipeline_line(policies, images_per_second, hardware["pipeline_speed"])
    print(_load())


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
        "--policies",
        "float32",
    ]
    steps_per_second = {}
    for setting in ("1", "0"):
        environment = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=setting)
        output = subprocess.run(
            child_arguments, env=environment, capture_output=True, text=True, check=True
        ).stdout
        print(f"TF_ENABLE_ONEDNN_OPTS={setting}:\n{output}")
        for line in output.splitlines():
            if line.startswith("train float32 flip="):
                flip = line.split(":")[0].split()[-1]
                steps_per_second[(setting, flip)] = float(line.split()[3])
    for flip in ("flip=False", "flip=True"):
        ratio = steps_per_second[("1", flip)] / steps_per_second[("0", flip)]
        print(f"{flip}: oneDNN on / off speed ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
