"""Every DDP variant ``bench/bench_ddp_scaling.py --variants`` measures trains to the same answers
(issue 27 item 2): two real Gloo ranks on 127.0.0.1 (``container_train.distributed.wrap`` with each
:class:`~container_train.distributed.DdpOptions`), each on its half of a tiny fixed data set, against one
process on the whole batch (DDP averages the two halves' gradients: the same mean gradient). Exact
all-reduce variants (bucket size, gradients as bucket views) match to float32 rounding; the 16-bit
compression hooks within their rounding, and predict the same class for every image."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from container_train.distributed import DdpOptions, Ranks, wrap

STEPS, BATCH = 6, 16
VARIANTS = {
    "default": DdpOptions(),
    "tiny buckets": DdpOptions(bucket_cap_mb=0.001),   # one bucket per parameter or so: many all-reduces
    "bucket view": DdpOptions(gradient_as_bucket_view=True),
    "bf16": DdpOptions(compression="bf16"),
    "fp16": DdpOptions(compression="fp16", gradient_as_bucket_view=True),
}


def _data():
    g = torch.Generator().manual_seed(27)
    x = torch.randn(BATCH, 3, 12, 12, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + (x[:, 0].mean(dim=(1, 2)) > 0.1).long()
    return x, y


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


def _train(module: nn.Module, x, y) -> None:
    opt = torch.optim.SGD(module.parameters(), lr=0.5, momentum=0.9)
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(module(x), y).backward()
        opt.step()


def _rank(rank: int, port: int, options: DdpOptions, out) -> None:
    import os

    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        x, y = _data()
        half = slice(rank * BATCH // 2, (rank + 1) * BATCH // 2)
        module = wrap(_model(), Ranks(rank, 2, rank), torch.device("cpu"), options)
        _train(module, x[half], y[half])
        out.put((rank, {k: v.detach().numpy().copy() for k, v in module.module.state_dict().items()}))  # plain pickles
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(options: DdpOptions) -> dict:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank, args=(r, port, options, out)) for r in range(2)]
    for p in procs:
        p.start()
    states = {r: {k: torch.from_numpy(v) for k, v in s.items()} for r, s in (out.get(timeout=300) for _ in procs)}
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), f"ranks disagree on {k}"
    return states[0]


@pytest.fixture(scope="module")
def single():
    x, y = _data()
    module = _model()
    _train(module, x, y)
    return module.state_dict(), x


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_ddp_variant_trains_to_the_single_process_answer(name, single):
    reference, x = single
    got = _two_ranks(VARIANTS[name])
    exact = VARIANTS[name].compression == "none"
    for k, v in reference.items():
        tol = 1e-5 if exact else 2e-2
        assert torch.allclose(got[k], v, atol=tol, rtol=tol), f"{name}: {k} off by {(got[k] - v).abs().max()}"
    if not exact:  # the hook did run: 16-bit gradients leave float32-rounding-sized traces at least
        assert any(not torch.allclose(got[k], v, atol=1e-7, rtol=0) for k, v in reference.items())
    with torch.no_grad():
        trained, ref_net = _model(), _model()
        trained.load_state_dict(got)
        ref_net.load_state_dict(reference)
        assert torch.equal(trained(x).argmax(1), ref_net(x).argmax(1))
    assert any(not torch.equal(v, _model().state_dict()[k]) for k, v in got.items())  # it did train


def test_ddp_options_refuse_unknown_values():
    with pytest.raises(ValueError, match="compression"):
        DdpOptions(compression="int8")
    with pytest.raises(ValueError, match="bucket"):
        DdpOptions(bucket_cap_mb=0)
