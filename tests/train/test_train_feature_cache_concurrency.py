"""Parallel tuning trials that share data and backbone must compute the cache once and share it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]

# Each process: wait at a file barrier so both ask for the cache at the same moment, then build
# the train/valid features of the same data with the same (seeded) backbone.
WORKER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import torch
    from byoc_common.architectures import build_classifier
    from byoc_common.artifact import ModelConfig
    from container_train.data import load_splits
    from container_train.feature_cache import features_for_splits

    data, cache_dir, barrier, me, out = sys.argv[1:]
    barrier = Path(barrier)
    torch.manual_seed(0)
    model = build_classifier("resnet18", 3)
    splits = load_splits({"training": Path(data)})
    (barrier / f"ready-{me}").touch()
    deadline = time.monotonic() + 60
    while len(list(barrier.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    logs = []
    fs = features_for_splits(cache_dir, splits, model, "resnet18", ModelConfig("resnet18", 3, 32, 36),
                             batch_size=8, log=logs.append)
    torch.save({k: v.features for k, v in fs.items()}, out)
    print(json.dumps(logs))
""")


def test_two_processes_compute_one_cache(cache_data, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cache_dir, barrier = tmp_path / "cache", tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, str(script), str(cache_data), str(cache_dir), str(barrier), str(i),
                          str(tmp_path / f"out{i}.pt")], cwd=REPO, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    results = [p.communicate(timeout=180) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    logs = [json.loads(out.strip().splitlines()[-1]) for out, _ in results]
    wrote = [line for lines in logs for line in lines if line.startswith("feature cache: wrote")]
    hits = [line for lines in logs for line in lines if line.startswith("feature cache: hit")]
    assert len(wrote) == 2, logs        # train and valid, each computed by exactly one process
    assert len(hits) == 2, logs         # ... and loaded by the other
    assert sorted(p.name.split("-")[0] for p in cache_dir.glob("*.pt")) == ["train", "valid"]
    assert list(cache_dir.glob(".*.tmp")) == []
    a, b = (torch.load(tmp_path / f"out{i}.pt", weights_only=True) for i in range(2))
    for split in ("train", "valid"):
        assert torch.equal(a[split], b[split])
