"""The side-by-side serving bench's own arithmetic and its TorchServe configuration (no server started)."""

from __future__ import annotations

from pathlib import Path

from bench import bench_serving as bs
from bench.bench_serve_torchserve import MODEL_NAME, TorchServe


def test_parse_env():
    assert bs.parse_env("default") == {}
    assert bs.parse_env("A=1;B=x=y") == {"A": "1", "B": "x=y"}
    assert bs.parse_env(bs.BEFORE_ENV) == {"BYOC_MODEL_FORM": "fp32", "BYOC_MAX_TORCH_THREADS": "1"}


def test_summary_pools_rounds_and_ratios_use_torchserves_best_setting_per_figure():
    def level(lat, wall):
        return {"lat": lat, "ok": len(lat), "sent": len(lat), "wall_s": wall, "per_round": []}

    raw = {label: {c: level(lat, wall) for c in bs.CONCURRENCY} for label, lat, wall in (
        ("ours", [0.05, 0.06, 0.07], 0.2), ("TS a", [0.10, 0.10, 0.30], 0.6), ("TS b", [0.20, 0.20, 0.20], 0.3))}
    summary = bs.summarise(raw)
    assert summary[("ours", 1)]["p50_ms"] == 60.0 and summary[("ours", 1)]["req_per_s"] == 15.0
    rows = bs.ratios(summary, ["ours"], ["TS a", "TS b"])
    assert rows[0] == ["ours", 1, "0.60x", "0.35x", "1.50x"]  # p50 vs a's 100, p99 vs b's 200, req/s vs b's 10


def test_torchserve_listens_on_loopback_only_without_token_auth_or_default_grpc_ports(tmp_path):
    ts = TorchServe(tmp_path / "store" / f"{MODEL_NAME}.mar", tmp_path, "2x1")
    config = ts._config()
    addresses = [ln.split("=", 1)[1] for ln in config.splitlines() if "_address=" in ln]
    assert addresses and all("127.0.0.1" in a for a in addresses)
    assert "disable_token_authorization=true" in config and "default_workers_per_model=2" in config
    assert "grpc_inference_port=7070" not in config
    assert ts.url.startswith("http://127.0.0.1:") and isinstance(ts.work, Path)
