"""CMC / mAP / mINP: hand-computed cases and comparisons with plain loop references."""

import numpy as np
import pytest

from evaluation.metrics import CMC_CONFIGS, CMCConfig, compute_CMC_mAP, evaluate_ranking
from evaluation.reference import reference_market1501, reference_open_reid_cmc


def _hand_case():
    # Query 0 (pid 1, cam 0): g0 is the same camera (removed); valid order g1 x, g2 ok, g3 x,
    # g4 ok. Query 1 (pid 2, cam 1): its only gallery image is the same camera -> excluded.
    # Query 2 (pid 3, cam 1): g3 (pid 3, cam 0) is closest.
    distmat = np.array(
        [
            [0.1, 0.2, 0.3, 0.4, 0.5],
            [0.5, 0.1, 0.2, 0.3, 0.4],
            [0.9, 0.8, 0.7, 0.0, 0.6],
        ]
    )
    q_pids, q_camids = np.array([1, 2, 3]), np.array([0, 1, 1])
    g_pids, g_camids = np.array([1, 2, 1, 3, 1]), np.array([0, 1, 1, 0, 2])
    return distmat, q_pids, g_pids, q_camids, g_camids


def test_market1501_hand_computed():
    result = evaluate_ranking(*_hand_case(), max_rank=4)
    # Query 0: first match at rank 2, AP = (1/2 + 2/4) / 2, INP = 2/4. Query 2: all ones.
    np.testing.assert_allclose(result.cmc, [0.5, 1.0, 1.0, 1.0])
    assert result.mAP == pytest.approx((0.5 + 1.0) / 2)
    assert result.mINP == pytest.approx((0.5 + 1.0) / 2)
    assert result.num_valid_queries == 2
    assert result.num_excluded_queries == 1
    cmc, mean_ap = compute_CMC_mAP(*_hand_case(), max_rank=4)
    np.testing.assert_array_equal(cmc, result.cmc)
    assert mean_ap == result.mAP


def test_allshots_hand_computed():
    # Query 0: matches have 1 and 2 wrong matches before them -> 1/2 at ranks 2 and 3.
    result = evaluate_ranking(*_hand_case(), max_rank=4, cmc_config="allshots")
    np.testing.assert_allclose(result.cmc, [0.5, 0.75, 1.0, 1.0])
    assert result.mAP == pytest.approx(0.75)


def test_ties_follow_gallery_order():
    distmat = np.full((1, 3), 0.5)
    result = evaluate_ranking(distmat, [1], [2, 1, 1], [0], [1, 1, 1], max_rank=3)
    # Stable order g0 (wrong), g1, g2 -> matches at ranks 2 and 3.
    np.testing.assert_allclose(result.cmc, [0.0, 1.0, 1.0])
    assert result.mAP == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert result.mINP == pytest.approx(2 / 3)


def test_cmc_is_padded_beyond_the_gallery():
    result = evaluate_ranking(*_hand_case(), max_rank=10)
    assert result.cmc.shape == (10,)
    np.testing.assert_allclose(result.cmc[3:], 1.0)


def test_cuhk03_hand_computed():
    # Query pid 1 cam 0. g3 shares the query camera and is removed; the sampled images are
    # always g1 (pid 2) then the match g0, so the match sits at position 2 in every draw.
    distmat = np.array([[0.3, 0.1, 0.5, 0.05]])
    result = evaluate_ranking(
        distmat, [1], [1, 2, 3, 1], [0], [1, 1, 2, 0], max_rank=3, cmc_config="cuhk03"
    )
    np.testing.assert_allclose(result.cmc, [0.0, 1.0, 1.0])


def test_cuhk03_draws_average_over_repeats():
    # pid 2 has one image before and one after the match: each draw puts the match first
    # or second, so cmc[0] is a multiple of 1/10 strictly between the extremes for this seed.
    distmat = np.array([[0.3, 0.1, 0.5]])
    args = (distmat, [1], [1, 2, 2], [0], [1, 1, 2])
    result = evaluate_ranking(*args, max_rank=2, cmc_config="cuhk03")
    assert result.cmc[1] == pytest.approx(1.0)
    assert 0.0 < result.cmc[0] < 1.0
    assert result.cmc[0] * 10 == pytest.approx(round(result.cmc[0] * 10))
    again = evaluate_ranking(*args, max_rank=2, cmc_config="cuhk03")
    np.testing.assert_array_equal(result.cmc, again.cmc)


def _random_case(rng, num_query, num_gallery, tie_mode):
    if tie_mode == "integers":
        distmat = rng.integers(0, 4, (num_query, num_gallery)).astype(np.float32)
    elif tie_mode == "constant":
        distmat = np.full((num_query, num_gallery), 0.25)
    elif tie_mode == "duplicates":
        base = rng.random((num_query, max(1, num_gallery // 3)))
        distmat = base[:, rng.integers(0, base.shape[1], num_gallery)]
    else:
        distmat = rng.random((num_query, num_gallery))
    num_identities = int(rng.integers(1, 6))
    return (
        distmat,
        rng.integers(0, num_identities, num_query),
        rng.integers(0, num_identities, num_gallery),
        rng.integers(0, 3, num_query),
        rng.integers(0, 3, num_gallery),
    )


def _random_cases(num_cases):
    rng = np.random.default_rng(1234)
    modes = ("continuous", "integers", "constant", "duplicates")
    cases = []
    while len(cases) < num_cases:
        num_query = 1 if len(cases) % 7 == 0 else int(rng.integers(1, 25))
        num_gallery = int(rng.integers(1, 80))
        case = _random_case(rng, num_query, num_gallery, modes[len(cases) % 4])
        distmat, q_pids, g_pids, q_camids, g_camids = case
        has_match = (q_pids[:, None] == g_pids[None]) & (q_camids[:, None] != g_camids[None])
        if has_match.any():
            cases.append((case, int(rng.integers(1, 100))))
    return cases


@pytest.mark.parametrize("case_index", range(0, 240, 40))
def test_market1501_matches_loop_reference(case_index):
    for case, max_rank in _random_cases(240)[case_index : case_index + 40]:
        result = evaluate_ranking(*case, max_rank=max_rank)
        cmc, mean_ap, mean_inp, num_valid = reference_market1501(*case, max_rank=max_rank)
        np.testing.assert_array_equal(result.cmc, cmc)
        assert abs(result.mAP - mean_ap) < 1e-9
        assert abs(result.mINP - mean_inp) < 1e-9
        assert result.num_valid_queries == num_valid
        assert result.num_excluded_queries == case[0].shape[0] - num_valid


@pytest.mark.parametrize("cmc_config", ["market1501", "allshots", "cuhk03"])
def test_cmc_configs_match_open_reid_transcription(cmc_config):
    config = CMC_CONFIGS[cmc_config]
    for case, max_rank in _random_cases(120):
        expected = reference_open_reid_cmc(
            *case,
            topk=max_rank,
            separate_camera_set=config.separate_camera_set,
            single_gallery_shot=config.single_gallery_shot,
            first_match_break=config.first_match_break,
            random_state=np.random.RandomState(0),
        )
        result = evaluate_ranking(*case, max_rank=max_rank, cmc_config=cmc_config, seed=0)
        np.testing.assert_allclose(result.cmc, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "separate_camera_set, single_gallery_shot, first_match_break",
    [(True, False, True), (True, False, False), (False, True, False)],
)
def test_every_switch_of_a_custom_config_matches_open_reid(
    separate_camera_set, single_gallery_shot, first_match_break
):
    # The three combinations no named protocol uses: each switch is read, not just stored.
    config = CMCConfig(separate_camera_set, single_gallery_shot, first_match_break)
    for case, max_rank in _random_cases(80):
        expected = reference_open_reid_cmc(
            *case,
            topk=max_rank,
            separate_camera_set=separate_camera_set,
            single_gallery_shot=single_gallery_shot,
            first_match_break=first_match_break,
            random_state=np.random.RandomState(0),
        )
        result = evaluate_ranking(*case, max_rank=max_rank, cmc_config=config, seed=0)
        np.testing.assert_allclose(result.cmc, expected, rtol=0, atol=1e-12)


def test_single_gallery_shot_with_first_match_break_is_refused():
    with pytest.raises(ValueError, match="first_match_break"):
        CMCConfig(separate_camera_set=True, single_gallery_shot=True, first_match_break=True)


def test_mean_ap_is_the_same_for_every_config():
    case, _ = _random_cases(1)[0]
    values = {name: evaluate_ranking(*case, cmc_config=name).mAP for name in CMC_CONFIGS}
    assert len(set(values.values())) == 1


def test_larger_random_case_with_float32_ties():
    rng = np.random.default_rng(7)
    distmat = np.round(rng.random((60, 700)), 2).astype(np.float32)
    labels = (
        rng.integers(0, 30, 60),
        rng.integers(0, 30, 700),
        rng.integers(0, 6, 60),
        rng.integers(0, 6, 700),
    )
    result = evaluate_ranking(distmat, *labels, max_rank=50)
    cmc, mean_ap, mean_inp, _ = reference_market1501(distmat, *labels, max_rank=50)
    np.testing.assert_array_equal(result.cmc, cmc)
    assert abs(result.mAP - mean_ap) < 1e-9
    assert abs(result.mINP - mean_inp) < 1e-9


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: {**a, "distmat": np.zeros(5)}, "distmat"),
        (lambda a: {**a, "distmat": np.zeros((0, 5))}, "distmat"),
        (lambda a: {**a, "distmat": np.zeros((3, 0))}, "distmat"),
        (lambda a: {**a, "distmat": np.where(np.eye(3, 5) > 0, np.nan, a["distmat"])}, "NaN"),
        (lambda a: {**a, "distmat": np.where(np.eye(3, 5) > 0, np.inf, a["distmat"])}, "inf"),
        (lambda a: {**a, "q_pids": np.array([1, 2])}, "q_pids"),
        (lambda a: {**a, "g_pids": np.array([1, 2])}, "g_pids"),
        (lambda a: {**a, "q_camids": np.array([1, 2, 3, 4])}, "q_camids"),
        (lambda a: {**a, "g_camids": np.zeros((5, 1))}, "g_camids"),
        (lambda a: {**a, "max_rank": 0}, "max_rank"),
        (lambda a: {**a, "cmc_config": "viper"}, "cuhk03"),
        (lambda a: {**a, "g_pids": np.full(5, 9)}, "correct match"),
    ],
)
def test_bad_input_raises_value_error(change, message):
    distmat, q_pids, g_pids, q_camids, g_camids = _hand_case()
    arguments = dict(
        distmat=distmat, q_pids=q_pids, g_pids=g_pids, q_camids=q_camids, g_camids=g_camids
    )
    with pytest.raises(ValueError, match=message):
        evaluate_ranking(**change(arguments))
