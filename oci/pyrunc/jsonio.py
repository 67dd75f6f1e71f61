"""JSON for pyrunc without `import json`: the `json` package imports `re` (and `enum` through
it) and compiles its patterns at import, about 10 ms of every short-lived pyrunc command. The C
accelerator `_json` behind it needs none of that, so reading and writing go to it directly.

The results are the json module's, byte for byte; whatever the fast path does not cover (bad
input, a non-str key, a type json would reject, a BOM) goes to the json module itself, so that
its errors, with their wording, are the ones raised.
"""

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every short-lived command
    from typing import Any

_WS = " \t\n\r"  # json's WHITESPACE


class _Decoder:
    """What _json.make_scanner reads from json.JSONDecoder() with its defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__
    memo: dict[str, str] = {}


_scan = _json.make_scanner(_Decoder())


class _Slow(Exception):
    """The fast path does not cover this input: let the json module deal with it."""


def _default(o: object) -> object:
    raise _Slow


def _compact_encoder(item_sep: str, key_sep: str) -> "Any":
    # the arguments json.JSONEncoder passes for its defaults (check_circular, ensure_ascii,
    # allow_nan, no sort_keys, no skipkeys), with our default that defers to the json module
    return _json.make_encoder({}, _default, _json.encode_basestring_ascii, None, key_sep, item_sep,
                              False, False, True)


def loads(data: bytes | str) -> "Any":
    """json.loads(data)."""
    try:
        s = data.decode() if isinstance(data, bytes) else data
        obj, end = _scan(s, len(s) - len(s.lstrip(_WS)))
        if end != len(s) and s[end:].strip(_WS):
            raise _Slow
        return obj
    except Exception:  # noqa: BLE001 - json.loads raises the error, worded as json words it
        import json
        return json.loads(data)


def dumps(obj: object, *, indent: int | None = None, separators: tuple[str, str] | None = None) -> str:
    """json.dumps(obj, indent=indent, separators=separators), other arguments at their defaults."""
    item_sep, key_sep = separators or ((",", ": ") if indent is not None else (", ", ": "))
    try:
        if indent is None:
            return "".join(_compact_encoder(item_sep, key_sep)(obj, 0))
        out: list[str] = []
        _pretty(obj, 0, " " * indent, item_sep, key_sep, _compact_encoder(item_sep, key_sep), {}, out)
        return "".join(out)
    except _Slow:
        import json
        return json.dumps(obj, indent=indent, separators=separators)


def _pretty(o: object, level: int, step: str, item_sep: str, key_sep: str, scalar: "Any",
            seen: dict[int, object], out: list[str]) -> None:
    """json's indented layout (json.encoder._make_iterencode) for dicts and lists of str keys
    and plain values; anything else is _Slow."""
    if isinstance(o, dict):
        if not o:
            out.append("{}")
            return
        items: Any = o.items()
        opening, closing = "{", "}"
    elif isinstance(o, list | tuple):
        if not o:
            out.append("[]")
            return
        items = o
        opening, closing = "[", "]"
    else:
        out.append("".join(scalar(o, 0)))
        return
    if id(o) in seen:
        raise _Slow  # circular: json raises its own ValueError
    seen[id(o)] = o
    inner = "\n" + step * (level + 1)
    out.append(opening)
    sep = inner
    for item in items:
        out.append(sep)
        sep = item_sep + inner
        if opening == "{":
            k, item = item
            if not isinstance(k, str):
                raise _Slow  # json turns int, float, bool and None keys into strings
            out.append(_json.encode_basestring_ascii(k))
            out.append(key_sep)
        _pretty(item, level + 1, step, item_sep, key_sep, scalar, seen, out)
    out.append("\n" + step * level + closing)
    del seen[id(o)]
