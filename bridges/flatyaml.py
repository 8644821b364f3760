"""Top-level `key: value` lines of a flat YAML file, without importing yaml.

`csext forward` and `csext ipmitool` run once per CloudStack action and must start in tens of
milliseconds; `import yaml` alone costs more than their whole start. Their config files are flat
(`amqp_url: ...`, `ipmitool_route_1: "..."`), so this reader handles exactly that: top-level
keys, values optionally quoted ('...' or "...") and, when unquoted, followed by ` # comment`.
Nested mappings, lists, anchors and multi-line values are not supported.
"""

from __future__ import annotations


def read_keys(path: str) -> dict[str, str] | None:
    """Every top-level `key: value` of `path`; None when the file does not exist.

    Other OS errors (permissions, a directory) propagate: the caller words them.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return None
    found: dict[str, str] = {}
    for line in lines:
        name, sep, rest = line.partition(":")
        if sep and name and name == name.strip() and not name.startswith("#"):
            found.setdefault(name, scalar(rest.strip()))
    return found


def scalar(text: str) -> str:
    """A YAML scalar as the flat files write it: quoted, or plain with an optional comment."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        inner = text[1:-1]
        return inner.replace("''", "'") if text[0] == "'" else inner.replace('\\"', '"')
    if text[:1] in ("'", '"'):
        quote = text[0]
        end = text.find(quote, 1)
        if end > 0:
            return text[1:end]
    return text.split(" #", 1)[0].strip()
