"""Which SageMaker instance types the images can run on: x86-64 only.

Both images are built for ``linux/amd64`` (``buildspec.yml``, ``scripts/build_and_push.sh``). AWS
Graviton instances are arm64: SageMaker would pull the image and the job or endpoint would fail on
the first instruction ("exec format error") after the instance was billed. Their family names carry a
``g`` right after the generation digit (ml.c6g, ml.c6gd, ml.c6gn, ml.c7g, ml.m6g, ml.m6gd, ml.m7g,
ml.r6g, ml.r6gd, ml.r7g, ml.r8g, ml.c8g, ml.m8g, ml.t4g, ml.g5g): EC2's "Instance type naming
conventions" put the processor right after the generation, ``g`` for AWS Graviton, ``i`` Intel, ``a``
AMD. x86 families have nothing or another letter there (ml.g4dn, ml.c7i, ml.m6id, ml.p4de, ml.gr6). So
a type is refused when its family matches ``<letters><digits>g<letters>``, before any request is sent.
"""

from __future__ import annotations

import re

from byoc.aws.errors import LaunchError

_GRAVITON_FAMILY = re.compile(r"ml\.[a-z]+\d+g[a-z]*\.")


def is_graviton(instance_type: str) -> bool:
    return bool(_GRAVITON_FAMILY.match(instance_type))


def check_amd64_instance_type(instance_type: str, what: str) -> str:
    """``instance_type`` when it is x86-64; :class:`LaunchError` naming ``what`` (the setting) when it
    is a Graviton (arm64) type."""
    if is_graviton(instance_type):
        family = instance_type.split(".")[1]
        raise LaunchError(f"{what} {instance_type} is a Graviton (arm64) instance type ({family}), but the "
                          "byoc images are built for linux/amd64 only: use an x86 type (e.g. ml.m5.large, "
                          "ml.c7i.xlarge, ml.g4dn.xlarge)")
    return instance_type
