"""Learning ablation: trains configurations side by side on held-out Synthetic data, one table.

Every configuration is a list of `solution.py` flags on top of its defaults, run through the same
command line a user types, each in a child process, on Synthetic datasets generated with seeds and
settings that no test uses (the tests use seed 0 and small sizes). One row per configuration and
seed, then the mean over seeds:

    python -m benchmarks.bench_learning                       # every configuration, two seeds
    python -m benchmarks.bench_learning --configurations new_defaults,plain_baseline \
        --seeds 101 --epoch_num 20 --steps_per_epoch 40      # the held-out check's budget

Rows are printed as they finish and appended to `<output_folder_path>/results.csv`, so an
interrupted benchmark keeps what it measured. Wall times include TensorFlow's start-up and the
final evaluation; on a shared machine they are noise beyond their ratios.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import time

REPOSITORY_FOLDER_PATH = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPOSITORY_FOLDER_PATH)

# What every run shares: resnet18 from random weights, K4 (input size and P are arguments,
# 128x64 and 16 by default as in the held-out check of issue 8); evaluation only at the end,
# with the default flip test-time augmentation. The data are always drawn at 128x64.
COMMON_FLAGS = [
    "--backbone_model_name=resnet18",
    "--image_num_per_identity=4",
    "--noevaluate_before_training",
]

# The defaults solution.py had before this benchmark chose new ones (README, "Learning").
PREVIOUS_DEFAULT_FLAGS = [
    "--last_stride=2",
    "--use_feature_clipping",
    "--min_value=0.0",
    "--max_value=1.0",
    "--region_num=2",
    "--pooling_mode=GeM",
    "--gem_initial_power=1.0",
    "--regularization_mode=l2",
    "--learning_rate_mode=default",
    "--learning_rate_base=1e-3",
    "--learning_rate_warmup_epochs=2",
    "--learning_rate_lower_bound=2e-6",
    "--use_horizontal_flipping_inside_model",
    "--patch_replacement_probability=0.8",
    "--random_erasing_probability=0.8",
]

# FlipReID's own flag values (its README's training command), with random weights and the
# benchmark's epoch budget: warm-up 10 epochs, base 2e-4, L2 on every weight, clipping to [0, 1].
FLIPREID_RECIPE_FLAGS = [
    "--last_stride=1",
    "--use_feature_clipping",
    "--min_value=0.0",
    "--max_value=1.0",
    "--region_num=2",
    "--pooling_mode=GeM",
    "--gem_initial_power=1.0",
    "--regularization_mode=l2",
    "--learning_rate_mode=default",
    "--learning_rate_base=2e-4",
    "--learning_rate_warmup_epochs=10",
    "--learning_rate_steady_epochs=30",
    "--learning_rate_lower_bound=2e-6",
    "--use_horizontal_flipping_inside_model",
    "--patch_replacement_probability=0.8",
    "--random_erasing_probability=0.8",
]

# A plain global-average-pooling recipe: no clipping, no regional branch, no L2, soft-margin
# batch-hard triplet + softmax ID + flipping MSE, Adam 3e-4 constant, pip tf2cv's last stride,
# crop and flip augmentation only.
PLAIN_BASELINE_FLAGS = [
    "--last_stride=2",
    "--nouse_feature_clipping",
    "--region_num=0",
    "--pooling_mode=Average",
    "--regularization_mode=none",
    "--learning_rate_mode=constant",
    "--learning_rate_start=3e-4",
    "--learning_rate_end=3e-4",
    "--use_horizontal_flipping_inside_model",
    "--patch_replacement_probability=0",
    "--random_erasing_probability=0",
]

# Name -> flags on top of solution.py's current defaults. Single-factor rows change one thing.
CONFIGURATIONS = {
    "new_defaults": [],
    "previous_defaults": PREVIOUS_DEFAULT_FLAGS,
    "flipreid_recipe": FLIPREID_RECIPE_FLAGS,
    "plain_baseline": PLAIN_BASELINE_FLAGS,
    "last_stride_2": ["--last_stride=2"],
    "clipping_0_1": ["--use_feature_clipping", "--min_value=0.0", "--max_value=1.0"],
    "region_num_0": ["--region_num=0"],
    "no_flip_structure": ["--nouse_horizontal_flipping_inside_model"],
    # The FlipReID structure on (the random_init default until issue 20 turned it off).
    "flip_structure": ["--use_horizontal_flipping_inside_model"],
    "l2_coupled": ["--regularization_mode=l2"],
    "weight_decay_decoupled": ["--regularization_mode=decoupled"],
    "constant_learning_rate": [
        "--learning_rate_mode=constant",
        "--learning_rate_start=3.5e-4",
        "--learning_rate_end=3.5e-4",
    ],
    "cosine_from_1e-3": ["--learning_rate_start=1e-3", "--learning_rate_end=1e-5"],
    "crop_flip_only_cosine_from_1e-3": [
        "--patch_replacement_probability=0",
        "--random_erasing_probability=0",
        "--learning_rate_start=1e-3",
        "--learning_rate_end=1e-5",
    ],
    "gem_initial_power_1": ["--gem_initial_power=1.0"],
    "crop_flip_augmentation_only": [
        "--patch_replacement_probability=0",
        "--random_erasing_probability=0",
    ],
    "label_smoothing_0.1": ["--label_smoothing=0.1"],
    # Issue 20 item 7: a larger P (24 identities x K4 = 96 images a batch; the row's flag comes
    # after --identity_num_per_batch, so it wins), the same steps.
    "identity_num_per_batch_24": ["--identity_num_per_batch=24"],
    "average_pooling": ["--pooling_mode=Average"],
    # Issue 20: the same defaults under each mixed-precision policy, named explicitly so the rows
    # mean the same whatever the automatic policy picks on the machine.
    "float32_policy": ["--mixed_precision_policy=float32"],
    "mixed_bfloat16_policy": ["--mixed_precision_policy=mixed_bfloat16"],
    "float32_no_flip_structure": [
        "--mixed_precision_policy=float32",
        "--nouse_horizontal_flipping_inside_model",
    ],
    "mixed_bfloat16_no_flip_structure": [
        "--mixed_precision_policy=mixed_bfloat16",
        "--nouse_horizontal_flipping_inside_model",
    ],
    # Issue 20 item 6: no flip structure for as long as the flip structure trains. Its steps per
    # epoch are --steps_per_epoch times --flip_step_time_ratio (the flip step's cost in no-flip
    # steps, measured by bench_training), so both rows take about the same wall time.
    "no_flip_structure_equal_time": [
        "--nouse_horizontal_flipping_inside_model",
        "--steps_per_epoch={equal_time_steps_per_epoch}",
    ],
    # Issue 16: FlipReID's procedure against the random_init choices. Its identity sampler
    # (identities with fewer than K images skipped) against today's round-robin one; two frozen
    # epochs inside --epoch_num on one schedule against FlipReID's two frozen epochs before
    # --epoch_num more with the schedule restarted (so that row trains two epochs longer).
    "flipreid_sampler": ["--sampling_mode=flipreid"],
    "freeze_2_one_schedule": ["--freeze_backbone_for_N_epochs=2"],
    "freeze_2_restarted_schedule": [
        "--freeze_backbone_for_N_epochs=2",
        "--restart_schedule_after_freezing",
    ],
}

# Held-out Synthetic data: seeds and sizes no test uses; >= 100 identities for training.
DEFAULT_SEEDS = (101, 202)
RESULT_COLUMNS = (
    "configuration",
    "seed",
    "mAP",
    "rank1",
    "mINP",
    "steps",
    "wall_seconds",
    "flags",
)


def generate_held_out_dataset(data_folder_path, seed, num_identities, num_images_per_identity):
    """Writes (or reuses) a Synthetic dataset in Market-1501 layout and returns its folder."""
    from datasets.synthetic import generate_synthetic_dataset

    return generate_synthetic_dataset(
        data_folder_path,
        num_identities=num_identities,
        num_images_per_identity=num_images_per_identity,
        image_height=128,
        image_width=64,
        seed=seed,
    )


def resolve_flags(flags, args):
    """The configuration's flags with their {placeholders} filled in from the arguments.

    Returns:
        (list of flag strings, int steps per epoch the run trains with).
    """
    values = {"equal_time_steps_per_epoch": round(args.steps_per_epoch * args.flip_step_time_ratio)}
    flags = [flag.format(**values) for flag in flags]
    steps_per_epoch = args.steps_per_epoch
    for flag in flags:  # absl keeps the last value of a repeated flag, as here
        if flag.startswith("--steps_per_epoch="):
            steps_per_epoch = int(flag.split("=", 1)[1])
    return flags, steps_per_epoch


def trained_epoch_num(run_folder_path):
    """Epochs a finished run trained: the rows of its history.csv, one per epoch.

    Counted from the run rather than from its flags, so that FlipReID's procedure
    (--restart_schedule_after_freezing: the frozen epochs before --epoch_num more) counts right.
    """
    with open(os.path.join(run_folder_path, "history.csv"), newline="") as file:
        return sum(1 for _ in csv.DictReader(file))


def run_configuration(name, flags, dataset_folder_path, seed, args):
    """Trains and evaluates one configuration in a child `solution.py`; returns a result row."""
    flags, steps_per_epoch = resolve_flags(flags, args)
    output_folder_path = os.path.join(args.output_folder_path, f"{name}_seed{seed}")
    command = [
        sys.executable,
        os.path.join(REPOSITORY_FOLDER_PATH, "solution.py"),
        f"--dataset_name={dataset_folder_path}",
        f"--output_folder_path={output_folder_path}",
        f"--seed={seed}",
        f"--epoch_num={args.epoch_num}",
        f"--steps_per_epoch={args.steps_per_epoch}",
        f"--evaluate_testing_every_N_epochs={args.epoch_num}",
        f"--identity_num_per_batch={args.identity_num_per_batch}",
        f"--image_height={args.image_height}",
        f"--image_width={args.image_width}",
        *COMMON_FLAGS,
        *flags,
    ]
    start_time = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True)
    wall_seconds = time.perf_counter() - start_time
    if completed.returncode != 0:
        raise RuntimeError(
            f"Configuration {name} (seed {seed}) failed with exit code {completed.returncode}:\n"
            f"{' '.join(command)}\n{completed.stdout[-2000:]}\n{completed.stderr[-3000:]}"
        )
    run_folder_paths = sorted(
        (os.path.join(output_folder_path, entry) for entry in os.listdir(output_folder_path)),
        key=os.path.getmtime,
    )
    with open(os.path.join(run_folder_paths[-1], "metrics.json")) as file:
        final = json.load(file)["final"]
    return {
        "configuration": name,
        "seed": seed,
        "mAP": final["mAP"],
        "rank1": final["rank1"],
        "mINP": final["mINP"],
        "steps": trained_epoch_num(run_folder_paths[-1]) * steps_per_epoch,
        "wall_seconds": wall_seconds,
        "flags": " ".join(flags) or "(defaults)",
    }


def format_table(rows, seeds):
    """Markdown table: one row per configuration, each seed's mAP and the means over seeds."""
    lines = [
        "| configuration | "
        + " | ".join(f"mAP seed {seed}" for seed in seeds)
        + " | mean mAP | mean rank-1 | mean mINP | steps | mean wall s |",
        "|---|" + "---|" * (len(seeds) + 5),
    ]
    names = list(dict.fromkeys(row["configuration"] for row in rows))
    for name in names:
        by_seed = {row["seed"]: row for row in rows if row["configuration"] == name}
        done = [by_seed[seed] for seed in seeds if seed in by_seed]

        def mean(key, done=done):
            return sum(row[key] for row in done) / len(done)

        per_seed = [f"{by_seed[seed]['mAP']:.3f}" if seed in by_seed else "-" for seed in seeds]
        lines.append(
            f"| {name} | "
            + " | ".join(per_seed)
            + f" | {mean('mAP'):.3f} | {mean('rank1'):.3f} | {mean('mINP'):.3f} | "
            f"{done[0]['steps']} | {mean('wall_seconds'):.0f} |"
        )
    return "\n".join(lines)


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--configurations",
        default=",".join(CONFIGURATIONS),
        help=f"Comma-separated names among: {', '.join(CONFIGURATIONS)}.",
    )
    parser.add_argument(
        "--seeds",
        default=",".join(str(seed) for seed in DEFAULT_SEEDS),
        help="Comma-separated seeds; each seed draws its own dataset and its own training run.",
    )
    parser.add_argument("--epoch_num", type=int, default=6)
    parser.add_argument("--identity_num_per_batch", type=int, default=16, help="P (K is 4).")
    parser.add_argument(
        "--image_height", type=int, default=128, help="Training and test input height."
    )
    parser.add_argument("--image_width", type=int, default=64, help="Input width.")
    parser.add_argument("--steps_per_epoch", type=int, default=40)
    parser.add_argument(
        "--flip_step_time_ratio",
        type=float,
        default=1.73,
        help="Flip-structure step time over the no-flip step's, for no_flip_structure_equal_time "
        "(bench_training, mixed_bfloat16, 2026-12-03: 1.73).",
    )
    parser.add_argument("--num_identities", type=int, default=240, help="Half train, half test.")
    parser.add_argument("--num_images_per_identity", type=int, default=12)
    parser.add_argument("--data_folder_path", default="/tmp/bench_learning_data")
    parser.add_argument("--output_folder_path", default="/tmp/bench_learning_runs")
    return parser.parse_args()


def main():
    args = parse_arguments()
    names = [name.strip() for name in args.configurations.split(",") if name.strip()]
    unknown = [name for name in names if name not in CONFIGURATIONS]
    if unknown:
        sys.exit(f"Unknown --configurations {unknown}; valid names: {', '.join(CONFIGURATIONS)}.")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    os.makedirs(args.output_folder_path, exist_ok=True)
    results_file_path = os.path.join(args.output_folder_path, "results.csv")
    print(
        f"resnet18 {args.image_height}x{args.image_width} from random weights, "
        f"P{args.identity_num_per_batch} x K4, "
        f"{args.epoch_num} epochs x "
        f"{args.steps_per_epoch} steps; held-out Synthetic seeds {seeds}, "
        f"{args.num_identities} identities, {args.num_images_per_identity} images each."
    )
    datasets = {
        seed: generate_held_out_dataset(
            args.data_folder_path, seed, args.num_identities, args.num_images_per_identity
        )
        for seed in seeds
    }
    rows = []
    # Configuration by configuration, both seeds each, so a stopped run has whole rows.
    for name in names:
        for seed in seeds:
            row = run_configuration(name, CONFIGURATIONS[name], datasets[seed], seed, args)
            rows.append(row)
            print(
                f"{name} seed {seed}: mAP {row['mAP']:.3f}, rank-1 {row['rank1']:.3f}, "
                f"mINP {row['mINP']:.3f}, {row['wall_seconds']:.0f} s",
                flush=True,
            )
            is_new_file = not os.path.exists(results_file_path)
            with open(results_file_path, "a", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=RESULT_COLUMNS)
                if is_new_file:
                    writer.writeheader()
                writer.writerow(row)
    print()
    print(format_table(rows, seeds))


if __name__ == "__main__":
    main()
