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


def test_the_steps_column_counts_the_epochs_the_run_wrote_to_its_history(tmp_path):
    # FlipReID's procedure at the benchmark's budget: 2 frozen epochs, then 6 more.
    rows = "".join(f"{epoch},0.001,1.0\n" for epoch in range(1, 9))
    (tmp_path / "history.csv").write_text("epoch,learning_rate,loss\n" + rows)
    assert trained_epoch_num(tmp_path) == 8
