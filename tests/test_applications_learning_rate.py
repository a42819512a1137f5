"""Learning-rate modes against hand-computed values."""

import math

import pytest

from applications.learning_rate import (
    LEARNING_RATE_FUNCTIONS,
    build_learning_rate_function,
    schedule_epoch_index,
)


def test_constant():
    function = build_learning_rate_function(
        "constant", learning_rate_start=1e-3, learning_rate_end=1e-3
    )
    assert [function(epoch) for epoch in (0, 5, 100)] == [1e-3, 1e-3, 1e-3]


def test_linear():
    function = build_learning_rate_function(
        "linear",
        epoch_num=5,
        learning_rate_start=1e-3,
        learning_rate_end=5e-3,
        learning_rate_lower_bound=0.0,
    )
    assert [function(epoch) for epoch in range(5)] == pytest.approx([1e-3, 2e-3, 3e-3, 4e-3, 5e-3])


def test_cosine():
    function = build_learning_rate_function(
        "cosine",
        epoch_num=3,
        learning_rate_start=1e-3,
        learning_rate_end=1e-4,
        learning_rate_lower_bound=0.0,
    )
    assert function(0) == pytest.approx(1e-3)
    assert function(1) == pytest.approx(5.5e-4)
    assert function(2) == pytest.approx(1e-4)
    # A one-epoch run (e.g. --epoch_num 1 with the default cosine mode) stays at the start.
    one_epoch = build_learning_rate_function(
        "cosine", epoch_num=1, learning_rate_start=1e-3, learning_rate_end=1e-4
    )
    assert one_epoch(0) == pytest.approx(1e-3)


def test_warmup_ramps_then_holds():
    function = build_learning_rate_function(
        "warmup",
        learning_rate_start=0.0,
        learning_rate_end=3e-3,
        learning_rate_warmup_epochs=4,
        learning_rate_lower_bound=0.0,
    )
    assert [function(epoch) for epoch in range(6)] == pytest.approx(
        [0.0, 1e-3, 2e-3, 3e-3, 3e-3, 3e-3]
    )


def test_default_with_flipreid_flag_defaults():
    function = build_learning_rate_function("default")
    # Warm-up from 2e-6 to 2e-4 over epochs 0..9, steady until 39, then / 10 every 30 epochs.
    assert function(0) == pytest.approx(2e-6)
    assert function(1) == pytest.approx(2e-6 + (2e-4 - 2e-6) / 9)
    assert function(9) == pytest.approx(2e-4)
    assert function(39) == pytest.approx(2e-4)
    assert function(40) == pytest.approx(2e-5)
    assert function(70) == pytest.approx(2e-6)
    assert function(200) == pytest.approx(2e-6)  # the lower bound


def test_default_with_derived_drop_factor():
    function = build_learning_rate_function(
        "default",
        epoch_num=30,
        learning_rate_warmup_epochs=5,
        learning_rate_steady_epochs=10,
        learning_rate_drop_factor=0,
        learning_rate_base=1e-2,
        learning_rate_lower_bound=1e-4,
    )
    factor = math.exp(10 / (30 - 10) * math.log(1e-2 / 1e-4))  # = 10
    assert function(14) == pytest.approx(1e-2)
    assert function(15) == pytest.approx(1e-2 / factor)
    assert function(25) == pytest.approx(1e-4)


def test_registry_and_validation_errors():
    assert set(LEARNING_RATE_FUNCTIONS) == {
        "constant", "linear", "cosine", "warmup", "default", "exponential", "staircase"
    }  # fmt: skip
    with pytest.raises(ValueError, match="constant, linear, cosine, warmup, default, exponential"):
        build_learning_rate_function("step")
    with pytest.raises(ValueError, match="learning_rate_start == learning_rate_end"):
        build_learning_rate_function("constant", learning_rate_start=1.0, learning_rate_end=2.0)
    with pytest.raises(ValueError, match="epoch_num"):
        build_learning_rate_function("linear")
    with pytest.raises(ValueError, match="learning_rate_start > learning_rate_end"):
        build_learning_rate_function("cosine", epoch_num=10)


def test_exponential_follows_alignedreids_formula():
    # AlignedReID's adjust_lr_exp at its defaults: base 2e-4, 150 epochs, decay from epoch 76
    # (1-based): lr(e) = base * 0.001 ** ((e + 1 - 76) / (150 + 1 - 76)) for e >= 76.
    function = build_learning_rate_function(
        "exponential",
        epoch_num=150,
        learning_rate_base=2e-4,
        exponential_decay_start_epoch=76,
        learning_rate_lower_bound=0.0,
    )
    assert function(0) == pytest.approx(2e-4)
    assert function(74) == pytest.approx(2e-4)  # epoch 75
    assert function(75) == pytest.approx(2e-4 * 0.001 ** (1 / 75))  # epoch 76
    assert function(100) == pytest.approx(2e-4 * 0.001 ** (26 / 75))  # epoch 101
    assert function(149) == pytest.approx(2e-7)  # epoch 150: base / 1000


def test_exponential_is_floored_by_the_lower_bound():
    function = build_learning_rate_function(
        "exponential", epoch_num=10, exponential_decay_start_epoch=1, learning_rate_lower_bound=1e-5
    )
    assert function(9) == pytest.approx(1e-5)


def test_staircase_multiplies_at_the_start_of_listed_epochs():
    function = build_learning_rate_function(
        "staircase",
        learning_rate_base=1e-3,
        staircase_decay_epochs=(51, 101),
        staircase_decay_factor=0.1,
        learning_rate_lower_bound=0.0,
    )
    # 0-based index 49 is AlignedReID's epoch 50, index 50 its epoch 51.
    assert [function(index) for index in (0, 49, 50, 99, 100, 500)] == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5]
    )


@pytest.mark.parametrize(
    "mode, settings, message",
    [
        ("exponential", dict(epoch_num=10, exponential_decay_start_epoch=0), ">= 1"),
        ("exponential", dict(epoch_num=10, exponential_decay_start_epoch=11), "epoch_num >="),
        ("exponential", dict(epoch_num=None), "epoch_num >="),
        ("staircase", dict(staircase_decay_epochs=(20, 10)), "increasing"),
        ("staircase", dict(staircase_decay_epochs=(0,)), "increasing"),
        ("staircase", dict(staircase_decay_factor=1.5), r"\(0, 1\]"),
    ],
)
def test_alignedreid_modes_reject_bad_settings(mode, settings, message):
    with pytest.raises(ValueError, match=message):
        build_learning_rate_function(mode, **settings)


def _flipreid_default_rate(epoch_index, epoch_num):
    """FlipReID's "default" rule at its flag defaults, by hand: warm-up over 10 epochs from 2e-6
    to 2e-4, then a division by 10 every 30 epochs, floored at 2e-6."""
    del epoch_num  # only its drop factor 0 would read it
    if epoch_index < 10:
        rate = (2e-4 - 2e-6) / 9 * epoch_index + 2e-6
    else:
        rate = 2e-4 / 10 ** int((epoch_index - 10) / 30)
    return max(rate, 2e-6)


def test_restart_after_freezing_gives_flipreids_two_schedules():
    # FlipReID: fit(epochs=20) frozen, then fit(epochs=200): its scheduler sees 0..19, then
    # 0..199, both with epoch_num 200.
    function = build_learning_rate_function("default", epoch_num=200, restart_epoch=20)
    expected = [_flipreid_default_rate(index, 200) for index in [*range(20), *range(200)]]
    assert [function(epoch) for epoch in range(220)] == pytest.approx(expected, rel=1e-12)
    assert function(0) == function(20) == pytest.approx(2e-6)  # two warm-ups
    assert function(19) == function(29) == pytest.approx(2e-4)
    assert function(59) == pytest.approx(2e-4) and function(60) == pytest.approx(2e-5)
    # Without the restart one schedule runs over the whole run.
    single = build_learning_rate_function("default", epoch_num=220)
    assert single(20) == pytest.approx(2e-4) and single(40) == pytest.approx(2e-5)


def test_schedule_epoch_index_restarts_at_the_unfreezing_epoch():
    assert [schedule_epoch_index(epoch, 3) for epoch in range(6)] == [0, 1, 2, 0, 1, 2]
    assert [schedule_epoch_index(epoch, 0) for epoch in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="restart_epoch must be an int >= 0"):
        build_learning_rate_function("default", restart_epoch=-1)
