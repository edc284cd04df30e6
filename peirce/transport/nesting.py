"""How deep a msgpack buffer nests, found without recursion (a guard before decoding).

Why: msgspec decodes nested arrays and maps recursively and raises RecursionError at
about a thousand levels, a limit that also depends on how deep the calling thread
already is. A peer can send `0x91` a hundred thousand times in a few hundred KiB.
`nesting_exceeds` answers "deeper than `limit`?" with a flat loop and an explicit
stack, so the answer is the same in every thread and costs O(header bytes).

Fast path: nesting can only reach `d` if at least `d` bytes could open a non-empty
container (fixmap/fixarray 0x81-0x8f/0x91-0x9f, map/array 16/32 0xdc-0xdf); counting
those bytes is one C-speed `translate`, so ordinary headers never enter the loop.
Malformed msgpack is left to the real decoder (this reports False for it).
"""

from __future__ import annotations

_SKIP, _LEN, _FIXC, _LENC, _BAD = range(5)


def _entry(b: int) -> tuple[int, int, int]:
    """(kind, a, m) for a msgpack first byte: see `_scan` for what a and m mean per kind."""
    if b <= 0x7F or b >= 0xE0 or b in (0xC0, 0xC2, 0xC3):  # fixints, nil, false, true
        return _SKIP, 0, 0
    if b <= 0x8F:
        return _FIXC, (b & 0x0F) * 2, 0  # fixmap: keys and values
    if b <= 0x9F:
        return _FIXC, b & 0x0F, 0  # fixarray
    if b <= 0xBF:
        return _SKIP, b & 0x1F, 0  # fixstr
    fixed = {0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8,
             0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}  # floats, ints, fixext (type byte + data)
    if b in fixed:
        return _SKIP, fixed[b], 0
    sized = {0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0), 0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0),  # bin, str
             0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1)}  # ext: length, then a type byte
    if b in sized:
        return _LEN, *sized[b]
    containers = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}  # array16/32, map16/32
    if b in containers:
        return _LENC, *containers[b]
    return _BAD, 0, 0  # 0xC1: never used


_TABLE = tuple(_entry(b) for b in range(256))
_OPENERS = bytes([*range(0x81, 0x90), *range(0x91, 0xA0), *range(0xDC, 0xE0)])


def nesting_exceeds(buf: bytes | memoryview, limit: int) -> bool:
    """True if the msgpack object in `buf` has more than `limit` containers open at once."""
    data = bytes(buf)
    if len(data) - len(data.translate(None, _OPENERS)) <= limit:
        return False
    return _scan(data, limit)


def _scan(data: bytes, limit: int) -> bool:
    """Walk the tokens; `stack[k]` is how many items the k-th open container still holds."""
    stack = [1]  # the root: one object
    i, n, table = 0, len(data), _TABLE
    while i < n:
        kind, a, m = table[data[i]]
        i += 1
        stack[-1] -= 1
        if kind == _SKIP:  # a: payload bytes
            i += a
        elif kind == _LEN:  # a: width of the big-endian length, m: extra bytes (ext type)
            i += a + m + int.from_bytes(data[i : i + a], "big")
        elif kind == _FIXC or kind == _LENC:  # a: item count (fix) or width of the count (16/32)
            count = a if kind == _FIXC else int.from_bytes(data[i : i + a], "big") * m
            if kind == _LENC:
                i += a
            if count:
                stack.append(count)
                if len(stack) - 1 > limit:
                    return True
                continue
        else:
            return False
        while stack[-1] == 0:
            stack.pop()
            if not stack:
                return False
    return False
