"""Tests of the procedurally drawn Synthetic dataset and its cache."""

import json
import os

import cv2
import numpy as np
import pytest

import datasets
from datasets import synthetic

SMALL_OPTIONS = {
    "num_identities": 12,
    "num_cameras": 3,
    "num_images_per_identity": 6,
    "image_height": 64,
    "image_width": 32,
    "num_distractor_images": 3,
    "num_junk_images": 2,
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
    image_file_path = os.path.join(dataset_dir, "query", sorted(os.listdir(
        os.path.join(dataset_dir, "query")))[0])  # fmt: skip
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


def test_identity_traits_are_fixed_and_independent_of_order():
    traits = [synthetic.draw_identity_traits(0, identity_ID) for identity_ID in range(1, 41)]
    assert synthetic.draw_identity_traits(0, 17) == traits[16]
    assert synthetic.draw_identity_traits(1, 17) != traits[16]
    # Small palettes: identities differ, yet many share a trait.
    assert len(set(traits)) == 40
    assert len({t.upper_colour for t in traits}) < 10
    assert len({t.lower_colour for t in traits}) < 8


def test_rendered_torso_shows_the_identity_clothes():
    neutral_camera = synthetic.CameraConditions(
        background_colour=(128, 128, 128),
        texture_colour=(100, 100, 100),
        background_texture="gradient",
        horizon_fraction=0.7,
        illumination_gain=1.0,
        white_balance=(1.0, 1.0, 1.0),
        blur_sigma=0.0,
        noise_std=0.0,
        scale=1.0,
        vertical_offset=0.0,
    )
    generator = np.random.default_rng(0)
    for identity_ID in range(1, 9):
        traits = synthetic.draw_identity_traits(3, identity_ID)
        for _ in range(3):
            variation = synthetic.draw_image_variation(generator, occlusion_probability=0.0)
            variation = synthetic.ImageVariation(**{**variation.__dict__, "mirror": False})
            image = synthetic.render_image(traits, neutral_camera, variation, 128, 64)
            layout = synthetic.compute_body_layout(traits, neutral_camera, variation, 128, 64)
            x0, y0, x1, y1 = layout.torso_box
            torso = image[int(y0) + 2 : int(y1) - 1, int(x0) + 2 : int(x1) - 1].reshape(-1, 3)
            colours = {tuple(int(v) for v in pixel) for pixel in torso}
            # Straps and bag straps may cross the torso; everything else is the clothing.
            allowed = {traits.upper_colour, traits.pattern_colour, traits.accessory_colour}
            share = np.mean([colour in allowed for colour in map(tuple, torso.tolist())])
            assert share > 0.7, (identity_ID, colours)
            assert traits.upper_colour in colours


def test_identity_signal_is_present_but_not_trivial(tmp_path):
    dataset = datasets.load_dataset(
        "Synthetic",
        str(tmp_path),
        synthetic_options={**SMALL_OPTIONS, "num_identities": 40, "num_images_per_identity": 8},
    )

    def clothing_colours(records):
        """Mean colour where the upper and the lower clothes usually are: (N, 6) float32."""
        vectors = []
        for path in records["image_file_path"]:
            image = cv2.imread(path).astype(np.float32)
            upper = image[18:29, 13:19].reshape(-1, 3).mean(axis=0)
            lower = image[42:51, 10:22].reshape(-1, 3).mean(axis=0)
            vectors.append(np.concatenate([upper, lower]))
        return np.stack(vectors)

    query_features = clothing_colours(dataset.query)
    gallery_features = clothing_colours(dataset.gallery)
    query_ids = dataset.query["identity_ID"].to_numpy()
    gallery_ids = dataset.gallery["identity_ID"].to_numpy()
    query_cameras = dataset.query["camera_ID"].to_numpy()
    gallery_cameras = dataset.gallery["camera_ID"].to_numpy()
    distances = ((query_features[:, None] - gallery_features[None]) ** 2).sum(axis=-1)
    # Market-1501 protocol: the same person seen by the same camera does not count.
    same_view = (query_ids[:, None] == gallery_ids[None]) & (
        query_cameras[:, None] == gallery_cameras[None]
    )
    distances[same_view] = np.inf
    rank1 = np.mean(gallery_ids[np.argmin(distances, axis=1)] == query_ids)
    chance = 1 / 20
    # Clothing colours find the person across cameras far more often than chance, yet camera
    # colour casts and shared palette colours keep it far from always.
    assert 3 * chance < rank1 < 0.8
