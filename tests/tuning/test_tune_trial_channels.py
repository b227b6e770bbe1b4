"""A local trial gets the training and validation channels only: its objective is a validation metric,
and its test pass cost a whole forward pass over the test split per trial (issue 25)."""

from __future__ import annotations

from byoc.datasets.synthetic import make_dataset
from byoc.tuning.local_tuner import channels_from_data_dir, trial_channels


def test_trials_get_no_test_channel_and_the_final_job_keeps_it(tmp_path):
    root = make_dataset(tmp_path / "ds", num_classes=2, per_class=1, size=16)
    channels = channels_from_data_dir(root)
    assert set(channels) == {"training", "validation", "test"}           # what the final job is given
    assert trial_channels(channels) == {"training": str(root / "train"), "validation": str(root / "valid")}
    assert trial_channels({"features": "/x"}) == {"features": "/x"}       # a features channel is kept
