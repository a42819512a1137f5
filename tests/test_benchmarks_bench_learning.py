"""The learning benchmark's rows: the flags each configuration passes and the steps it trains."""

import argparse

from benchmarks.bench_learning import CONFIGURATIONS, resolve_flags, trained_epoch_num


def _arguments(steps_per_epoch=40, flip_step_time_ratio=1.73):
    return argparse.Namespace(
        steps_per_epoch=steps_per_epoch, flip_step_time_ratio=flip_step_time_ratio
    )


def test_the_equal_time_row_trains_the_flip_step_cost_in_no_flip_steps():
    flags, steps_per_epoch = resolve_flags(
        CONFIGURATIONS["no_flip_structure_equal_time"], _arguments(40, 1.73)
    )
    assert flags == ["--nouse_horizontal_flipping_inside_model", "--steps_per_epoch=69"]
    assert steps_per_epoch == 69  # round(40 * 1.73)
    _, steps_per_epoch = resolve_flags(
        CONFIGURATIONS["no_flip_structure_equal_time"], _arguments(10, 2.0)
    )
    assert steps_per_epoch == 20


def test_rows_without_placeholders_keep_their_flags_and_the_budget():
    for name, flags in CONFIGURATIONS.items():
        if any("{" in flag for flag in flags):
            continue
        resolved, steps_per_epoch = resolve_flags(flags, _arguments(40))
        assert resolved == flags, name
        assert steps_per_epoch == 40, name


def test_the_restarted_schedule_row_counts_its_frozen_epochs_on_top():
    # FlipReID's procedure: 2 frozen epochs, then --epoch_num more on a restarted schedule.
    assert trained_epoch_num(CONFIGURATIONS["freeze_2_restarted_schedule"], 6) == 8
    assert trained_epoch_num(CONFIGURATIONS["freeze_2_one_schedule"], 6) == 6
    assert trained_epoch_num(CONFIGURATIONS["new_defaults"], 6) == 6
    assert trained_epoch_num(["--restart_schedule_after_freezing"], 6) == 6
    flags = ["--freeze_backbone_for_N_epochs=3", "--restart_schedule_after_freezing"]
    assert trained_epoch_num(flags + ["--norestart_schedule_after_freezing"], 6) == 6
