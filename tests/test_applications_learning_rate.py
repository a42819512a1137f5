"""Learning-rate modes against hand-computed values."""

import math

import pytest

from applications.learning_rate import LEARNING_RATE_FUNCTIONS, build_learning_rate_function


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
    assert set(LEARNING_RATE_FUNCTIONS) == {"constant", "linear", "cosine", "warmup", "default"}
    with pytest.raises(ValueError, match="constant, linear, cosine, warmup, default"):
        build_learning_rate_function("step")
    with pytest.raises(ValueError, match="learning_rate_start == learning_rate_end"):
        build_learning_rate_function("constant", learning_rate_start=1.0, learning_rate_end=2.0)
    with pytest.raises(ValueError, match="epoch_num"):
        build_learning_rate_function("linear")
    with pytest.raises(ValueError, match="learning_rate_start > learning_rate_end"):
        build_learning_rate_function("cosine", epoch_num=10)
