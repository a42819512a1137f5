"""A whole run on a dataset with planted bad image files: it finishes and counts every one.

The faults are those found in real copies of datasets (see tests/dataset_fixtures.py). Four
fail the cheap load-time check and are skipped by the loader; three keep an intact header and
end marker, so they reach the tf.data pipelines and fail only at decoding: one in training
(replaced in its batch mid-epoch), one in the query and one in the gallery (left out of every
evaluation). None of them may stop the run with a TensorFlow error.
"""

import json
import os
import re
import shutil

import numpy as np
import pytest

from applications.config import build_experiment_config
from applications.experiment import run_experiment
from datasets.image_files import FILE_EMPTY, NOT_AN_IMAGE, TRUNCATED, UNDECODABLE
from datasets.synthetic import generate_synthetic_dataset
from tests.dataset_fixtures import write_bad_image_file

# (split folder, file name, kind, the reason the notes must give). Three training identities
# (0001-0003, six images each) and P = 3 identities per batch put every training identity in
# every batch; with K = 2 all six images of 0002 are drawn within three batches, so the corrupt
# one is met during the first epoch for certain.
PLANTED = (
    ("bounding_box_train", "0001_c1s1_000000_00.jpg", "text_file", NOT_AN_IMAGE),
    ("bounding_box_train", "0001_c1s1_000002_00.jpg", "truncated_jpeg", TRUNCATED),
    ("bounding_box_train", "0002_c1s1_000002_00.jpg", "corrupt_jpeg", UNDECODABLE),
    ("bounding_box_test", "0004_c1s1_000002_00.jpg", "header_only_jpeg", TRUNCATED),
    ("bounding_box_test", "0005_c1s1_000002_00.jpg", "corrupt_jpeg", UNDECODABLE),
    ("query", "0006_c1s1_000000_00.jpg", "empty", FILE_EMPTY),
    # Replaces the query's 0005_c2s1_000001_00.jpg by a PNG of the same name.
    ("query", "0005_c2s1_000001_00.png", "corrupt_png", UNDECODABLE),
)
SPLIT_NAMES = {"bounding_box_train": "train", "bounding_box_test": "gallery", "query": "query"}


def _planted_dataset(tmp_path):
    """A copy of a tiny Synthetic dataset (Market-1501 layout) with the PLANTED faults."""
    generated = generate_synthetic_dataset(
        str(tmp_path / "cache"),
        num_identities=6,
        num_cameras=2,
        num_images_per_identity=6,
        num_distractor_images=0,
        num_junk_images=0,
    )
    dataset_dir = str(tmp_path / "Planted")
    shutil.copytree(generated, dataset_dir)
    os.remove(os.path.join(dataset_dir, "query", "0005_c2s1_000001_00.jpg"))
    for split_folder, file_name, kind, _ in PLANTED:
        file_path = os.path.join(dataset_dir, split_folder, file_name)
        assert file_name.endswith(".png") or os.path.isfile(file_path), file_name
        write_bad_image_file(file_path, kind)
    return dataset_dir


@pytest.mark.slow  # a short training run with three evaluations: about 30-60 s on 2 cores
def test_a_run_skips_and_counts_every_planted_bad_image(tmp_path, capsys):
    dataset_dir = _planted_dataset(tmp_path)
    config = build_experiment_config(
        dataset_name=dataset_dir,
        output_folder_path=str(tmp_path / "outputs"),
        backbone_model_name="resnet18",
        image_height=64,
        image_width=32,
        identity_num_per_batch=3,
        image_num_per_identity=2,
        epoch_num=2,
        steps_per_epoch=3,
        testing_batch_size=4,
        # Before training and after each epoch: a file left out every time is counted once.
        evaluate_testing_every_N_epochs=1,
        save_data_to_disk=True,
    )

    outcome = run_experiment(config)

    run_folder_path = outcome.output_folder_path
    with open(os.path.join(run_folder_path, "metrics.json"), encoding="utf-8") as file:
        results = json.load(file)
    assert 0.0 <= results["final"]["mAP"] <= 1.0
    # Every planted file is named in exactly one note, under its split and reason, and the
    # notes' counts add up to exactly the planted files.
    skip_notes = [note for note in results["dataset_notes"] if ": skipped " in note]
    for split_folder, file_name, _, reason in PLANTED:
        naming = [note for note in skip_notes if file_name in note]
        assert naming == [
            note
            for note in naming
            if note.startswith(f"{dataset_dir} {SPLIT_NAMES[split_folder]}: ")
            and f"({reason})" in note
        ], file_name
        assert len(naming) == 1, (file_name, skip_notes)
    counts = [int(re.search(r": skipped (\d+) image", note).group(1)) for note in skip_notes]
    assert sum(counts) == len(PLANTED), skip_notes
    output = capsys.readouterr().out
    assert "skipped 1 undecodable training image " in output
    assert "left 1 undecodable query and 1 undecodable gallery images out" in output
    assert "Traceback" not in output
    # The evaluated features hold the decodable images only, each with its own record.
    features = np.load(os.path.join(run_folder_path, "features.npz"))
    gallery_files = [os.path.basename(path) for path in features["gallery_image_file_paths"]]
    query_files = [os.path.basename(path) for path in features["query_image_file_paths"]]
    assert len(gallery_files) == 12 - 2 and len(query_files) == 6 - 2
    assert "0005_c1s1_000002_00.jpg" not in gallery_files
    assert "0005_c2s1_000001_00.png" not in query_files
    assert features["gallery_features"].shape[0] == len(gallery_files)
    assert features["gallery_identity_IDs"].tolist() == [int(name[:4]) for name in gallery_files]
