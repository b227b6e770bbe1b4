"""Local trials running side by side share the machine's cores instead of each taking all of them."""

from __future__ import annotations

from byoc.tuning.local_tuner import thread_share


def test_each_parallel_trial_gets_its_share_of_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert thread_share(2, cores=2) == {"OMP_NUM_THREADS": "1"}
    assert thread_share(1, cores=2) == {"OMP_NUM_THREADS": "2"}
    assert thread_share(3, cores=8) == {"OMP_NUM_THREADS": "2"}
    assert thread_share(4, cores=2) == {"OMP_NUM_THREADS": "1"}        # never zero threads


def test_a_thread_count_the_user_set_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert thread_share(2, cores=2) == {}
