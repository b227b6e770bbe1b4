"""How many scans libjpeg will decode in a JPEG, counted from its markers before any decoding.

A progressive JPEG is a series of scans, and libjpeg-turbo's progressive decoder visits every block of
the image (of the component) in every scan, whatever the scan holds: an AC scan that is one end-of-band
run codes the whole image in a few bytes. So decode time grows with scans x pixels, and a few hundred
kilobytes can ask for minutes (libjpeg-turbo's report "Two Issues with the JPEG Standard", LJT-01-003;
libjpeg-turbo issues #252, #284; NVIDIA DALI refuses more than 500 scans by default, DALI PR #5316).
Encoders write few: libjpeg's progressive script has 10 scans for colour, 6 for grey.

:func:`count_scans` walks the markers the way libjpeg reads them: marker segments are skipped by their
length (libjpeg consumes exactly that, or fails), entropy-coded data up to the next marker (``FF 00`` is a
stuffed byte, ``FF D0``-``FF D7`` restart markers, ``FF FF`` fill), and it stops at EOI. Every scan libjpeg
decodes starts with an SOS marker this walk sees, so the count is never lower than libjpeg's. Linear in
the body (the searches run in C) and it stops as soon as the count passes the caller's limit.
"""

from __future__ import annotations

import re

SOI, SOS, EOI, TEM = 0xD8, 0xDA, 0xD9, 0x01
# The next marker: FF then a code that is not a stuffed zero, a restart marker or another fill byte.
NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def count_scans(data: bytes, stop_after: int) -> int:
    """SOS markers before EOI; counting stops once it exceeds ``stop_after``."""
    scans, pos = 0, 2  # after SOI
    while scans <= stop_after:
        found = NEXT_MARKER.search(data, pos)
        if found is None:
            break
        code, pos = data[found.start() + 1], found.end()
        if code == EOI:
            break
        if code in (SOI, TEM):  # no length follows (libjpeg: SOI again is an error, TEM is skipped)
            continue
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length < 2:
            break  # libjpeg: "Bogus marker length", the decode fails here
        pos += length
        if code == SOS:
            scans += 1
    return scans
