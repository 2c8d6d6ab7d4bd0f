"""Canonical MessagePack: one value, one encoding.

Maps have string keys sorted by their UTF-8 bytes, integers take their
shortest form, and only nil, bool, int, str, bin, array and map occur.
"""

from __future__ import annotations

from typing import Any

import msgpack


class CodecError(ValueError):
    """Bytes that are not a canonical encoding; `reason` names the fault."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_SCALARS = (type(None), bool, int, str, bytes)
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1


def _sorted(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _sorted(obj[k]) for k in sorted(obj, key=_key_bytes)}
    if isinstance(obj, (list, tuple)):
        return [_sorted(v) for v in obj]
    return obj


def _key_bytes(key: Any) -> bytes:
    if not isinstance(key, str):
        raise CodecError("malformed", f"map key {key!r} is not a string")
    return key.encode()


def pack(obj: Any) -> bytes:
    """The canonical encoding of `obj` (maps are sorted here)."""
    check_types(obj)
    return msgpack.packb(_sorted(obj), use_bin_type=True)


def pack_flat(obj: Any) -> bytes:
    """The canonical encoding of a value the node built from scalars and lists only.

    Without maps msgpack's own encoding is the canonical one, so the checks and
    sorting of `pack` would only cost time (state values, receipts, tx entries).
    """
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def check_types(obj: Any, depth: int = 0) -> None:
    """Raises CodecError unless `obj` holds only the canonical types."""
    if depth > 32:
        raise CodecError("malformed", "nesting deeper than 32")
    if isinstance(obj, dict):
        for key, value in obj.items():
            _key_bytes(key)
            check_types(value, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            check_types(value, depth + 1)
    elif not isinstance(obj, _SCALARS):
        raise CodecError("malformed", f"type {type(obj).__name__} is not allowed")
    elif isinstance(obj, int) and not INT_MIN <= obj <= INT_MAX:
        raise CodecError("malformed", "integer out of range")


def _refuse_ext(code: int, data: bytes) -> Any:
    raise CodecError("malformed", f"extension type {code} is not allowed")


def _sorted_map(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    """Builds a decoded map, refusing non-string keys and keys out of canonical order.

    Code-point order of str equals the byte order of their UTF-8 encodings.
    """
    previous = None
    for key, _ in pairs:
        if type(key) is not str:
            raise CodecError("malformed", f"map key {key!r} is not a string")
        if previous is not None and key <= previous:
            raise CodecError("not_canonical", "map keys are not sorted and unique")
        previous = key
    return dict(pairs)


_DECODED_SCALARS = frozenset((type(None), bool, int, str, bytes))


def _check_decoded(obj: Any, depth: int) -> None:
    """Decoded values are canonical types already, but for floats; limits nesting too."""
    if depth > 32:
        raise CodecError("malformed", "nesting deeper than 32")
    values = obj.values() if type(obj) is dict else obj
    for value in values:
        kind = type(value)
        if kind in _DECODED_SCALARS:
            continue
        if kind is list or kind is dict:
            _check_decoded(value, depth + 1)
        else:
            raise CodecError("malformed", f"type {kind.__name__} is not allowed")


def unpack(data: bytes) -> Any:
    """Decodes `data`, refusing anything that is not its own canonical encoding."""
    try:
        obj = msgpack.unpackb(
            data, raw=False, use_list=True, ext_hook=_refuse_ext, object_pairs_hook=_sorted_map
        )
    except CodecError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CodecError("malformed", f"not MessagePack ({exc.__class__.__name__})") from None
    kind = type(obj)
    if kind is list or kind is dict:
        _check_decoded(obj, 0)
    elif kind not in _DECODED_SCALARS:
        raise CodecError("malformed", f"type {kind.__name__} is not allowed")
    if msgpack.packb(obj, use_bin_type=True) != data:
        raise CodecError("not_canonical", "bytes differ from the canonical encoding")
    return obj
