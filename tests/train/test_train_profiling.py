"""Profiling records: the system sampler's adaptive interval and the phase timer."""

from __future__ import annotations

import json
import threading

import pytest

from container_train.contract import PHASES_FILE, SYSTEM_METRICS_FILE
from container_train.profiling import (
    MAX_SAMPLE_INTERVAL_S,
    MIN_SAMPLE_INTERVAL_S,
    Phases,
    SystemSampler,
    sample_interval,
)


def test_sampling_is_dense_for_short_jobs_and_sparse_for_long_ones():
    assert sample_interval(0) == sample_interval(29) == MIN_SAMPLE_INTERVAL_S
    assert sample_interval(600) == pytest.approx(5.0)
    assert sample_interval(4 * 3600) == MAX_SAMPLE_INTERVAL_S
    # Samples in the first 10 s of any job: at least 20 (what the demo's report needs).
    assert 10 / sample_interval(10) >= 20


def test_phases_are_recorded_even_when_the_block_raises(tmp_path):
    phases = Phases(tmp_path)
    with phases.phase("data preparation"):
        pass
    with pytest.raises(RuntimeError), phases.phase("training", epoch=1):
        raise RuntimeError("boom")
    with pytest.raises(ValueError, match="unknown phase"):
        phases.record("lunch", 0.0, 1.0)
    phases.close()
    records = [json.loads(line) for line in (tmp_path / PHASES_FILE).read_text().splitlines()]
    assert [r["phase"] for r in records] == ["data preparation", "training"]
    assert records[1]["epoch"] == 1 and records[1]["seconds"] >= 0


def test_a_record_made_inside_a_block_is_taken_out_of_the_block(tmp_path):
    """A 61 s wait recorded inside a feature extraction that lasted far less in this test: the block's own
    record keeps none of it (never below 0), so the records still sum to the job's wall time."""
    phases = Phases(tmp_path)
    with phases.phase("feature extraction"):
        phases.record("waiting", 0.0, 61.0)
    with phases.phase("training", epoch=1):
        pass
    phases.close()
    records = [json.loads(line) for line in (tmp_path / PHASES_FILE).read_text().splitlines()]
    assert [(r["phase"], r["seconds"]) for r in records][:2] == [("waiting", 61.0), ("feature extraction", 0.0)]
    assert records[2]["phase"] == "training"         # the next block is not charged for the wait


def test_the_sampler_writes_samples_while_it_runs(tmp_path):
    """Paced by the file itself: wait until three samples are there, then stop (never a sleep race)."""
    path = tmp_path / SYSTEM_METRICS_FILE
    seen = threading.Event()
    with SystemSampler(tmp_path, interval_s=0.01):
        for _ in range(2000):
            if path.is_file() and len(path.read_text().splitlines()) >= 3:
                seen.set()
                break
            seen.wait(0.01)
    assert seen.is_set()
    sample = json.loads(path.read_text().splitlines()[0])
    assert {"cpu_percent", "cpu_per_core", "mem_percent", "proc_rss_mb"} <= set(sample)
