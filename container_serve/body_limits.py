"""Checks a request body passes before anything in it is decoded.

A few KB can ask for gigabytes: an ``.npy`` header may claim any shape, a JSON list may hold thousands
of tiny images, and every image, however small, becomes a ``3 x image_size x image_size`` float tensor.
So the image count is read from the ``.npy`` header or the JSON structure and checked first; the header's
shape times its item size must equal the bytes that follow it; JSON nesting and number size are bounded
before and while it is parsed (Python's parser would otherwise raise ``RecursionError`` on deep nesting
and ``ValueError`` on an integer over 4300 digits, both 500s).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass

import numpy as np

from container_serve.errors import BadRequestError

MAX_JSON_DEPTH = 8         # {"instances": [ image[H][W][C] ]} is 5 deep
MAX_JSON_NUMBER_CHARS = 32
MAX_NPY_HEADER_BYTES = 10_000  # numpy's own default limit for np.load
QUOTE, BACKSLASH = ord('"'), ord("\\")
OPEN_BRACKETS, CLOSE_BRACKETS = (ord("["), ord("{")), (ord("]"), ord("}"))


DEPTH_BLOCK = 1 << 20  # the running depth is summed a MiB at a time, so its int32s stay 4 MiB


def _inside_strings(text: np.ndarray) -> np.ndarray:
    """1 where a byte lies inside a JSON string (after its opening quote, up to its closing quote).
    A quote preceded by an odd run of backslashes is escaped. Vectorised and linear (a regex over the
    strings backtracked quadratically on ``["`` followed by thousands of ``\\"``)."""
    quote = text == QUOTE
    backslash = np.concatenate(([False], text == BACKSLASH, [False])).view(np.int8)
    if backslash.any():
        edges = np.diff(backslash)
        run_starts, run_ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        after_odd_run = run_ends[((run_ends - run_starts) % 2 == 1) & (run_ends < text.size)]
        quote[after_odd_run] = False
    return np.bitwise_xor.accumulate(quote.view(np.uint8))


def json_depth(body: bytes) -> int:
    """Deepest nesting of arrays and objects in ``body`` (brackets inside strings do not count).

    Exact for valid JSON and for every prefix of a body up to its first syntax error, which is as far
    as ``json.loads`` recurses before it gives up."""
    text = np.frombuffer(body, dtype=np.uint8)
    step = ((text == OPEN_BRACKETS[0]) | (text == OPEN_BRACKETS[1])).view(np.int8) \
        - ((text == CLOSE_BRACKETS[0]) | (text == CLOSE_BRACKETS[1])).view(np.int8)
    if QUOTE in text:
        step[_inside_strings(text).view(bool)] = 0
    depth = deepest = 0
    for start in range(0, step.size, DEPTH_BLOCK):
        running = np.cumsum(step[start:start + DEPTH_BLOCK], dtype=np.int32)
        deepest = max(deepest, depth + int(running.max()))
        depth += int(running[-1])
    return deepest


def _number(text: str, convert):
    if len(text) > MAX_JSON_NUMBER_CHARS:
        raise BadRequestError(f"a JSON number of {len(text)} characters; at most {MAX_JSON_NUMBER_CHARS} are accepted")
    value = convert(text)
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRequestError(f"JSON number {text!r} is not finite")
    return value


def _no_constant(name: str):
    raise BadRequestError(f"JSON constant {name} is not accepted (numbers must be finite)")


def load_json(body: bytes):
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH:
        raise BadRequestError(f"JSON nested {depth} levels deep; at most {MAX_JSON_DEPTH} are accepted")
    try:
        return json.loads(body.decode("utf-8"), parse_int=lambda s: _number(s, int),
                          parse_float=lambda s: _number(s, float), parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise BadRequestError(f"malformed JSON body: {e}") from e


def nested_list_shape(item) -> tuple[int, ...]:
    """The shape nested lists claim, read along their first elements (no conversion)."""
    shape = []
    while isinstance(item, list) and len(shape) <= MAX_JSON_DEPTH:
        shape.append(len(item))
        item = item[0] if item else None
    return tuple(shape)


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int  # where the data starts in the body


def read_npy_header(body: bytes) -> NpyHeader:
    """The header of an ``.npy`` body, checked against the body's length. Never unpickles."""
    f = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=MAX_NPY_HEADER_BYTES)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=MAX_NPY_HEADER_BYTES)
        else:
            raise BadRequestError(f"npy format version {version} is not accepted (1.0 and 2.0 are)")
    except (ValueError, EOFError, OSError, SyntaxError) as e:
        raise BadRequestError(f"not a loadable .npy array: {e}") from e
    if dtype.hasobject:
        raise BadRequestError("not a loadable .npy array: object arrays would need pickle, which is refused")
    expected = math.prod(shape) * dtype.itemsize
    present = len(body) - f.tell()
    if expected != present:
        raise BadRequestError(f"the npy header describes shape {shape} of {dtype} ({expected} bytes) "
                              f"but {present} bytes follow it")
    return NpyHeader(tuple(int(n) for n in shape), dtype, bool(fortran), f.tell())


def npy_array(body: bytes, header: NpyHeader) -> np.ndarray:
    """A read-only view of the checked body (no copy)."""
    count = math.prod(header.shape)
    flat = np.frombuffer(body, dtype=header.dtype, count=count, offset=header.offset)
    return flat.reshape(header.shape, order="F" if header.fortran_order else "C")
