"""The log filter that keeps TensorFlow's own INFO lines out of what a user reads."""

import logging
import os

from applications.core.backend import keras, quiet_library_info_logs, tf


def _record(level, path):
    return logging.LogRecord("absl", level, path, 1, "message", None, None)


def test_library_info_lines_are_dropped_and_warnings_and_project_lines_kept():
    logger = logging.getLogger("test_quiet_library_info_logs")
    quiet_library_info_logs(logger)
    quiet_library_info_logs(logger)  # a second call adds no second filter
    assert len(logger.filters) == 1
    tf_file = os.path.join(os.path.dirname(tf.__file__), "python", "checkpoint", "saver.py")
    keras_file = os.path.join(os.path.dirname(keras.__file__), "src", "engine", "training.py")
    project_file = os.path.abspath(__file__)
    assert not logger.filter(_record(logging.INFO, tf_file))
    assert not logger.filter(_record(logging.DEBUG, keras_file))
    assert logger.filter(_record(logging.WARNING, tf_file))
    assert logger.filter(_record(logging.ERROR, keras_file))
    assert logger.filter(_record(logging.INFO, project_file))


def test_checkpoint_write_logs_no_info_line_once_quietened(tmp_path, caplog):
    from absl import logging as absl_logging

    quiet_library_info_logs()
    absl_logging.set_verbosity(absl_logging.INFO)
    with caplog.at_level(logging.INFO, logger="absl"):
        tf.train.Checkpoint(v=tf.Variable(1.0)).write(str(tmp_path / "checkpoint"))
        absl_logging.info("project line")
    messages = [record.getMessage() for record in caplog.records]
    assert "project line" in messages
    assert not any("Sharding callback" in message for message in messages)
