"""Damaged or unfitting weights files get one line naming the file and what was expected."""

import pytest

from applications.core.backend import keras
from applications.model import build_flipreid_models
from applications.weights_file import (
    WeightsFileError,
    check_weights_file,
    check_weights_file_readable,
)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    keras.utils.set_random_seed(0)
    training_model, inference_model = build_flipreid_models("resnet18", 64, 32, 4, region_num=0)
    training_model.save_weights(str(folder / "training_model.h5"))
    inference_model.save_weights(str(folder / "inference_model.h5"))
    return folder, training_model, inference_model


def _single_line(error):
    text = str(error.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", r"is empty \(0 bytes\)"),
        (b"epoch,loss\n1,0.5\n", r"is not an HDF5 file \(it starts with b'epoch,lo'\)"),
    ],
)
def test_empty_and_foreign_files(tmp_path, content, expected):
    file_path = tmp_path / "training_model.h5"
    file_path.write_bytes(content)
    with pytest.raises(WeightsFileError, match=expected) as raised:
        check_weights_file_readable(str(file_path))
    text = _single_line(raised)
    assert text.startswith(f"--pretrained_model_file_path {file_path}")
    assert "expected an HDF5 weights file" in text


def test_truncated_file(saved_models, tmp_path):
    folder, _, _ = saved_models
    content = (folder / "training_model.h5").read_bytes()
    for size in (100, len(content) // 2):
        file_path = tmp_path / f"cut_{size}.h5"
        file_path.write_bytes(content[:size])
        with pytest.raises(WeightsFileError, match=rf"cut_{size}.h5 is damaged or truncated") as e:
            check_weights_file_readable(str(file_path))
        _single_line(e)


def test_missing_file_folder_and_hdf5_without_weights(tmp_path):
    import h5py

    with pytest.raises(WeightsFileError, match="no such file"):
        check_weights_file_readable(str(tmp_path / "absent.h5"))
    with pytest.raises(WeightsFileError, match="is a folder"):
        check_weights_file_readable(str(tmp_path))
    with h5py.File(tmp_path / "data.h5", "w") as file:
        file["features"] = [1.0, 2.0]
    with pytest.raises(WeightsFileError, match="holds no Keras weights"):
        check_weights_file_readable(str(tmp_path / "data.h5"), flag_name="--weights")


def test_files_are_matched_to_the_model_they_fit(saved_models):
    folder, training_model, inference_model = saved_models
    models = {"training model": training_model, "inference model": inference_model}
    assert check_weights_file(str(folder / "training_model.h5"), models) == "training model"
    assert check_weights_file(str(folder / "inference_model.h5"), models) == "inference model"


def test_weights_of_another_architecture_name_the_first_difference(saved_models):
    folder, _, _ = saved_models
    keras.utils.set_random_seed(0)
    other_training, other_inference = build_flipreid_models("resnet18", 64, 32, 7, region_num=0)
    models = {"training model": other_training, "inference model": other_inference}
    with pytest.raises(WeightsFileError) as raised:
        check_weights_file(str(folder / "training_model.h5"), models)
    text = _single_line(raised)
    assert "holds the weights of another model" in text
    # The classifier has 4 identities in the file and 7 in the model built from the flags.
    assert "(512, 4), the training_model built from the flags has (512, 7)" in text
    assert "; inference model: it holds 2 layers" in text
