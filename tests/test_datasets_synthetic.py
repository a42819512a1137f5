"""Tests of the procedurally drawn Synthetic dataset and its cache."""

import dataclasses
import json
import os

import cv2
import numpy as np
import pytest

import datasets
from datasets import synthetic, synthetic_appearance, synthetic_rendering

SMALL_OPTIONS = {
    "num_identities": 12,
    "num_cameras": 3,
    "num_images_per_identity": 6,
    "image_height": 64,
    "image_width": 32,
    "num_distractor_images": 3,
    "num_junk_images": 2,
    "difficulty": 1.0,
    "twin_fraction": 0.3,
    "seed": 5,
}


def _folder_contents(folder_path):
    contents = {}
    for directory, _, file_names in os.walk(folder_path):
        for file_name in file_names:
            path = os.path.join(directory, file_name)
            with open(path, "rb") as file:
                contents[os.path.relpath(path, folder_path)] = file.read()
    return contents


def test_same_seed_gives_identical_bytes(tmp_path):
    first = synthetic.generate_synthetic_dataset(str(tmp_path / "a"), **SMALL_OPTIONS)
    second = synthetic.generate_synthetic_dataset(str(tmp_path / "b"), **SMALL_OPTIONS)
    first_contents, second_contents = _folder_contents(first), _folder_contents(second)
    assert len(first_contents) == 12 * 6 + 3 + 2 + 1
    assert first_contents == second_contents
    other_seed = synthetic.generate_synthetic_dataset(
        str(tmp_path / "c"), **{**SMALL_OPTIONS, "seed": 6}
    )
    assert _folder_contents(other_seed) != first_contents


def test_layout_names_and_manifest(tmp_path):
    dataset_dir = synthetic.generate_synthetic_dataset(str(tmp_path), **SMALL_OPTIONS)
    assert os.path.dirname(dataset_dir) == str(tmp_path)
    assert os.path.basename(dataset_dir) == synthetic.synthetic_folder_name(SMALL_OPTIONS)
    with open(os.path.join(dataset_dir, "manifest.json"), encoding="utf-8") as file:
        manifest = json.load(file)
    assert manifest["parameters"] == SMALL_OPTIONS
    for folder_name in ("bounding_box_train", "bounding_box_test", "query"):
        for file_name in os.listdir(os.path.join(dataset_dir, folder_name)):
            datasets.parse_market1501_file_name(file_name)
            image = cv2.imread(os.path.join(dataset_dir, folder_name, file_name))
            assert image.shape == (64, 32, 3)
    gallery_names = os.listdir(os.path.join(dataset_dir, "bounding_box_test"))
    assert sum(name.startswith("0000_") for name in gallery_names) == 3
    assert sum(name.startswith("-1_") for name in gallery_names) == 2
    assert not [p for p in os.listdir(tmp_path) if ".partial-" in p]


def test_cache_is_reused(tmp_path):
    dataset_dir = synthetic.generate_synthetic_dataset(str(tmp_path), **SMALL_OPTIONS)
    image_file_path = os.path.join(
        dataset_dir, "query", sorted(os.listdir(os.path.join(dataset_dir, "query")))[0]
    )
    os.utime(image_file_path, ns=(1, 1))
    again = synthetic.generate_synthetic_dataset(str(tmp_path), **SMALL_OPTIONS)
    assert again == dataset_dir
    assert os.stat(image_file_path).st_mtime_ns == 1  # not rewritten
    # Handing the generated folder itself also reuses it.
    assert synthetic.generate_synthetic_dataset(dataset_dir, **SMALL_OPTIONS) == dataset_dir
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(dataset_dir)]


def test_other_parameters_go_to_another_folder(tmp_path):
    first = synthetic.generate_synthetic_dataset(str(tmp_path), **SMALL_OPTIONS)
    second = synthetic.generate_synthetic_dataset(
        str(tmp_path), **{**SMALL_OPTIONS, "num_cameras": 2}
    )
    assert first != second
    assert os.path.isdir(first) and os.path.isdir(second)
    assert "cams2" in os.path.basename(second)


def test_a_foreign_folder_of_the_same_name_is_left_alone(tmp_path):
    foreign_dir = tmp_path / synthetic.synthetic_folder_name(SMALL_OPTIONS)
    foreign_dir.mkdir()
    (foreign_dir / "notes.txt").write_text("mine")
    dataset_dir = synthetic.generate_synthetic_dataset(str(tmp_path), **SMALL_OPTIONS)
    assert dataset_dir == str(foreign_dir) + "_2"
    assert (foreign_dir / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(foreign_dir)) == ["notes.txt"]


def test_loader_reads_it(tmp_path):
    dataset = datasets.load_dataset("Synthetic", str(tmp_path), synthetic_options=SMALL_OPTIONS)
    assert dataset.name == "Synthetic"
    assert len(dataset.train) == 6 * 6
    assert dataset.num_train_identities == 6
    train_ids = set(dataset.train["identity_ID"].tolist())
    test_ids = set(dataset.query["identity_ID"].tolist())
    assert train_ids == set(range(1, 7)) and test_ids == set(range(7, 13))
    assert set(dataset.gallery["identity_ID"].tolist()) == test_ids | {0}
    # One query image per (test identity, camera it passes).
    assert not dataset.query.duplicated(["identity_ID", "camera_ID"]).any()
    for row in dataset.query.itertuples():
        same_person = dataset.gallery[dataset.gallery["identity_ID"] == row.identity_ID]
        assert (same_person["camera_ID"] != row.camera_ID).any()
    # Junk is dropped, and the counts agree with the manifest: no mismatch message.
    assert dataset.messages == ["Synthetic gallery: dropped 2 junk images (identity -1)"]


def test_loader_option_errors(tmp_path):
    with pytest.raises(ValueError, match="num_identitys.*num_identities"):
        datasets.load_dataset("Synthetic", str(tmp_path), synthetic_options={"num_identitys": 3})
    with pytest.raises(ValueError, match=r"num_cameras must be an integer in \[2, 99\]; got 1"):
        synthetic.generate_synthetic_dataset(str(tmp_path), num_cameras=1)
    with pytest.raises(ValueError, match="num_images_per_identity"):
        synthetic.generate_synthetic_dataset(str(tmp_path), num_images_per_identity=2.5)
    assert not os.listdir(tmp_path)


def test_options_outside_their_range_are_errors(tmp_path):
    with pytest.raises(ValueError, match=r"difficulty must be a number in \[0.0, 2.0\]; got 3"):
        synthetic.generate_synthetic_dataset(str(tmp_path), difficulty=3)
    with pytest.raises(ValueError, match=r"twin_fraction must be a number in \[0.0, 1.0\]"):
        synthetic.generate_synthetic_dataset(str(tmp_path), twin_fraction=-0.1)
    assert not os.listdir(tmp_path)


def test_a_dataset_of_an_older_generator_is_not_reused(tmp_path):
    dataset_dir = synthetic.generate_synthetic_dataset(str(tmp_path), **SMALL_OPTIONS)
    manifest_path = os.path.join(dataset_dir, "manifest.json")
    with open(manifest_path, encoding="utf-8") as file:
        manifest = json.load(file)
    assert manifest["generator_version"] == synthetic.SYNTHETIC_GENERATOR_VERSION
    assert f"_v{synthetic.SYNTHETIC_GENERATOR_VERSION}" in os.path.basename(dataset_dir)
    # The same parameters written by an older generator: handed over directly, it is neither
    # reused nor touched; a new folder is generated next to nothing of it.
    manifest["generator_version"] = synthetic.SYNTHETIC_GENERATOR_VERSION - 1
    with open(manifest_path, "w", encoding="utf-8") as file:
        json.dump(manifest, file)
    before = _folder_contents(dataset_dir)
    regenerated = synthetic.generate_synthetic_dataset(dataset_dir, **SMALL_OPTIONS)
    assert regenerated != dataset_dir
    assert os.path.dirname(regenerated) == dataset_dir
    assert _folder_contents(dataset_dir).items() >= before.items()


def test_difficulty_and_twins_go_to_other_folders(tmp_path):
    folders = {
        synthetic.generate_synthetic_dataset(str(tmp_path), **{**SMALL_OPTIONS, **change})
        for change in ({}, {"difficulty": 0.5}, {"twin_fraction": 0.0})
    }
    assert len(folders) == 3


def test_identity_traits_are_fixed_and_independent_of_order():
    traits = [
        synthetic_appearance.draw_identity_traits(0, identity_ID, 0.3)
        for identity_ID in range(1, 41)
    ]
    assert synthetic_appearance.draw_identity_traits(0, 17, 0.3) == traits[16]
    assert synthetic_appearance.draw_identity_traits(1, 17, 0.3) != traits[16]
    # Small palettes: identities differ, yet many share a trait.
    assert len(set(traits)) == 40
    assert len({t.upper_colour for t in traits}) < 12
    assert len({t.lower_colour for t in traits}) < 8


def test_twins_differ_in_one_or_two_visible_attributes():
    num_pairs = 300
    pairs = [
        (
            synthetic_appearance.draw_identity_traits(4, 2 * pair - 1, 0.3),
            synthetic_appearance.draw_identity_traits(4, 2 * pair, 0.3),
        )
        for pair in range(1, num_pairs + 1)
    ]
    twins = [(first, second) for first, second in pairs if second.twin_of is not None]
    # About the asked fraction of pairs are twins (binomial: 90 +- 8 of 300).
    assert 60 <= len(twins) <= 120
    camera = dataclasses.replace(
        synthetic_appearance.draw_camera_conditions(0, 1, difficulty=0.0), noise_std=0.0
    )
    variation = synthetic_appearance.draw_image_variation(
        np.random.default_rng(1), occlusion_probability=0.0, passer_by_probability=0.0
    )
    variation = dataclasses.replace(variation, facing_back=False, mirror=False)
    for index, (first, second) in enumerate(twins):
        assert second.twin_of is not None and first.twin_of is None
        differing = synthetic_appearance.differing_attributes(first, second)
        assert 1 <= len(differing) <= 2, differing
        assert set(differing) <= set(synthetic_appearance.TWIN_MUTABLE_ATTRIBUTES)
        # The difference shows: the same view of both is not the same picture.
        if index < 40:
            first_image, second_image = (
                synthetic_rendering.render_image(traits, camera, variation, 128, 64)
                for traits in (first, second)
            )
            assert (first_image != second_image).any(axis=-1).sum() >= 4, differing
    # Unrelated people differ in many attributes; without twins nobody is a look-alike.
    others = [
        len(synthetic_appearance.differing_attributes(first, second))
        for first, second in pairs
        if second.twin_of is None
    ]
    assert np.mean(others) > 6
    assert all(
        synthetic_appearance.draw_identity_traits(4, identity_ID, 0.0).twin_of is None
        for identity_ID in range(1, 101)
    )


def test_differing_attributes_against_a_hand_built_pair():
    person = synthetic_appearance.draw_identity_traits(0, 1)
    person = dataclasses.replace(person, hat="none", bag="none", upper_pattern="solid")
    # Colours of absent things do not show.
    invisible = dataclasses.replace(person, hat_colour=(1, 2, 3), bag_colour=(4, 5, 6))
    assert synthetic_appearance.differing_attributes(person, invisible) == []
    changed = dataclasses.replace(person, hat="cap", shoe_colour=(7, 8, 9))
    assert synthetic_appearance.differing_attributes(person, changed) == ["hat", "shoes"]


def test_rendered_torso_shows_the_identity_clothes():
    neutral_camera = dataclasses.replace(
        synthetic_appearance.draw_camera_conditions(0, 1, difficulty=0.0), noise_std=0.0
    )
    assert neutral_camera.channel_gains == (1.0, 1.0, 1.0)
    generator = np.random.default_rng(0)
    for identity_ID in range(1, 13):
        traits = synthetic_appearance.draw_identity_traits(3, identity_ID)
        for _ in range(3):
            variation = synthetic_appearance.draw_image_variation(
                generator, occlusion_probability=0.0, passer_by_probability=0.0
            )
            variation = dataclasses.replace(variation, mirror=False, brightness=1.0)
            image = synthetic_rendering.render_image(traits, neutral_camera, variation, 128, 64)
            layout = synthetic_rendering.compute_body_layout(
                traits, neutral_camera, variation, 128, 64
            )
            x0, y0, x1, y1 = layout.torso_box
            torso = image[int(y0) + 3 : int(y1) - 1, int(x0) + 3 : int(x1) - 2].reshape(-1, 3)
            colours = {tuple(int(v) for v in pixel) for pixel in torso}
            # Bag straps and a backpack seen from behind may cover the torso; nothing else.
            allowed = {traits.upper_colour, traits.pattern_colour, traits.bag_colour}
            share = np.mean([colour in allowed for colour in map(tuple, torso.tolist())])
            assert share > 0.7, (identity_ID, colours)
            if not (traits.bag == "backpack" and variation.facing_back):
                assert traits.upper_colour in colours


def _split_features(records, feature):
    return np.stack([feature(cv2.imread(path).astype(np.float32)) for path in records])


def _cross_camera_rank1(dataset, feature):
    """Rank-1 of nearest-neighbour search by ``feature`` under the Market-1501 protocol."""
    query_features = _split_features(dataset.query["image_file_path"], feature)
    gallery_features = _split_features(dataset.gallery["image_file_path"], feature)
    query_ids, gallery_ids = (
        dataset.query["identity_ID"].to_numpy(),
        dataset.gallery["identity_ID"].to_numpy(),
    )
    query_cameras = dataset.query["camera_ID"].to_numpy()
    gallery_cameras = dataset.gallery["camera_ID"].to_numpy()
    distances = ((query_features[:, None] - gallery_features[None]) ** 2).sum(axis=-1)
    nearest_camera = gallery_cameras[np.argmin(distances, axis=1)]
    same_view = (query_ids[:, None] == gallery_ids[None]) & (
        query_cameras[:, None] == gallery_cameras[None]
    )
    distances[same_view] = np.inf
    rank1 = np.mean(gallery_ids[np.argmin(distances, axis=1)] == query_ids)
    return rank1, np.mean(nearest_camera == query_cameras)


def _centre_colours(image):
    """Mean colour where the upper and lower clothes usually are (128x64 images): (6,)."""
    upper = image[40:62, 26:38].reshape(-1, 3).mean(axis=0)
    lower = image[80:100, 22:42].reshape(-1, 3).mean(axis=0)
    return np.concatenate([upper, lower])


def _whole_image_colour(image):
    """Mean colour of each of 4x2 cells of the whole image: (24,)."""
    return cv2.resize(image, (2, 4), interpolation=cv2.INTER_AREA).ravel()


def test_cameras_hide_people_from_features_that_do_not_learn(tmp_path):
    options = {
        **SMALL_OPTIONS,
        "num_identities": 40,
        "num_images_per_identity": 8,
        "image_height": 128,
        "image_width": 64,
    }
    clean = datasets.load_dataset(
        "Synthetic", str(tmp_path), synthetic_options={**options, "difficulty": 0.0}
    )
    hard = datasets.load_dataset("Synthetic", str(tmp_path), synthetic_options=options)
    chance = 1 / 20
    clean_rank1, _ = _cross_camera_rank1(clean, _centre_colours)
    hard_rank1, _ = _cross_camera_rank1(hard, _centre_colours)
    # Clean cameras: the clothes' colours find the person across cameras most of the time.
    # Casts, clutter, occluders and passers-by take most of that away.
    assert clean_rank1 > 0.5
    assert hard_rank1 < clean_rank1 - 0.2
    # Whole-image colour mostly finds the camera, and barely finds the person.
    whole_rank1, same_camera = _cross_camera_rank1(hard, _whole_image_colour)
    assert same_camera > 0.6
    assert whole_rank1 < 4 * chance
