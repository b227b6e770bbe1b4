"""Decoder bombs that pass every size limit (issue 28, items 7-9), against the real server in process mode
(gate + multi-model-server + our handler): each gets a JSON 4xx with the worker's peak memory growing
less than 100 MB, the same worker keeps serving, and the legitimate image beside each bomb is answered 200.

* a progressive JPEG with its last scan repeated 600 times (libjpeg decodes each over the whole image:
  a 36-megapixel one took 34 s here);
* a TIFF declaring a 64x64 image in one 32768x32768 tile (libtiff sizes its buffer by the tile);
* a 7600x1 PNG (89 bytes; resizing its short side to 36 px makes 273,600 x 36 pixels, to 256 px 1.5 GB).
"""

from __future__ import annotations

import pytest
from PIL import Image

from byoc.local.endpoint import LocalEndpoint
from tests.serve import hostile
from tests.serve.hostile import VICTIM
from tests.serve.test_serve_input_checks import encoded, huge_tile_tiff, progressive_jpeg

pytestmark = pytest.mark.slow

BOMBS = {  # name -> (bomb, its legitimate neighbour, content type)
    "repeated-scans": (lambda: progressive_jpeg((4000, 4000), repeat_last_scan=600),
                       lambda: progressive_jpeg((4000, 4000)), "image/jpeg"),
    "huge-tile-tiff": (huge_tile_tiff, lambda: encoded(Image.new("L", (64, 64), 90), "PNG"), "application/x-image"),
    "stretched-png": (lambda: encoded(Image.new("RGB", (7600, 1)), "PNG"),
                      lambda: encoded(Image.new("RGB", (760, 38)), "PNG"), "image/png"),
}


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("bombs")
    with LocalEndpoint(model_root=root / "models", multi_model=True, log_file=root / "endpoint.log") as ep:
        hostile.load_victim(ep)
        yield ep


@pytest.mark.parametrize("name", list(BOMBS))
def test_bomb_is_refused_before_work_and_the_worker_keeps_serving(endpoint, name):
    make_bomb, make_good, content_type = BOMBS[name]
    good = make_good()
    assert endpoint.client.invoke(good, content_type, target_model=VICTIM).status == 200  # warm, and served
    workers = hostile.worker_processes(VICTIM)
    peak = hostile.PeakMemory(workers)
    reply = endpoint.client.invoke(make_bomb(), content_type, target_model=VICTIM)
    growth = peak.growth_bytes()
    print(f"{name}: {reply.status} {reply.body[:160]!r}, worker peak +{growth / 2**20:.1f} MiB")
    assert 400 <= reply.status < 500, reply.body[:300]
    assert reply.json()["code"] == reply.status and reply.json()["error"]
    assert growth < hostile.BOMB_MEMORY_LIMIT
    assert endpoint.client.invoke(good, content_type, target_model=VICTIM).status == 200
    assert [(p.pid, p.create_time()) for p in hostile.worker_processes(VICTIM)] == \
        [(p.pid, p.create_time()) for p in workers]
