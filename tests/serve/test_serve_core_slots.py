"""container_serve.core_slots on a host whose other processes hold cores (issue 27): a worker takes only
the cores nothing else on the host is running on, read from a loadavg-format file (the kernel's
``/proc/loadavg``: fourth field running/total, the reader included)."""

from __future__ import annotations

from container_serve.core_slots import CoreSlots, make_slot_files, runnable_elsewhere


def _loadavg(tmp_path, running: int):
    path = tmp_path / f"loadavg-{running}"
    path.write_text(f"9.50 8.00 7.00 {running}/512 31337\n")
    return path


def test_runnable_elsewhere_leaves_out_the_reader_and_unreadable_files_count_as_idle(tmp_path):
    assert runnable_elsewhere(_loadavg(tmp_path, 1)) == 0
    assert runnable_elsewhere(_loadavg(tmp_path, 5)) == 4
    assert runnable_elsewhere(tmp_path / "missing") == 0
    garbled = tmp_path / "garbled"
    garbled.write_text("no fields")
    assert runnable_elsewhere(garbled) == 0


def test_a_busy_host_gets_the_minimum_and_leaves_the_slots_free(tmp_path):
    slots = tmp_path / "slots"
    make_slot_files(slots, 4)
    busy = CoreSlots(slots, 1, 4, _loadavg(tmp_path, 6))      # 5 others runnable on 4 cores
    partly = CoreSlots(slots, 1, 4, _loadavg(tmp_path, 3))    # 2 others: 2 cores free
    idle = CoreSlots(slots, 1, 4, _loadavg(tmp_path, 1))
    try:
        with busy.threads() as n:
            assert n == 1
            with idle.threads() as m:
                assert m == 4  # the busy worker held no slot
        with partly.threads() as n:
            assert n == 2
        with idle.threads() as n:
            assert n == 4
    finally:
        for s in (busy, partly, idle):
            s.close()


def test_a_cgroup_cpu_quota_caps_the_cores_workers_and_threads_are_sized_from(tmp_path):
    """``docker run --cpus 1`` leaves the affinity at every host core; cgroup v2's ``cpu.max`` says 1."""
    from container_serve.settings import ServeSettings, cpu_count

    unlimited = tmp_path / "unlimited"
    unlimited.mkdir()
    (unlimited / "cpu.max").write_text("max 100000\n")
    host = cpu_count(unlimited)
    quota = tmp_path / "quota"
    quota.mkdir()
    (quota / "cpu.max").write_text("100000 100000\n")
    assert cpu_count(quota) == 1 and host >= 1
    s = ServeSettings.from_env({"BYOC_CGROUP_DIR": str(quota)})
    assert (s.workers_per_model, s.max_torch_threads) == (1, 1)
    (quota / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: rounded up, as the JVM does
    assert cpu_count(quota) == min(host, 2)
    assert ServeSettings.from_env({"BYOC_CGROUP_DIR": str(unlimited)}).workers_per_model == host
