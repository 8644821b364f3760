"""Turning store data into page text, safely: Markdown without HTML, diffs, times, errors."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup, escape

# CommonMark with tables; raw HTML in a README is shown as text, never run (html=False), and
# markdown-it refuses javascript:, vbscript:, file: and data: links by itself.
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def markdown(text: str) -> Markup:
    return Markup(_MARKDOWN.render(text or ""))  # html disabled: markdown-it escapes it


def diff_lines(text: str) -> Markup:
    """A unified diff as escaped lines with a class per kind (added, removed, hunk, file);
    each line is a block (static/app.css), so no newline goes between them."""
    out = []
    for line in (text or "").splitlines():
        kind = "ctx"
        if line.startswith(("+++", "---", "diff ", "index ", "new file", "deleted file")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        out.append(f'<span class="d-{kind}">{escape(line)}</span>')
    return Markup("".join(out))  # every line escaped above


def when(epoch: Any) -> str:
    try:
        moment = datetime.fromtimestamp(float(epoch), tz=UTC)
    except (TypeError, ValueError, OverflowError):
        return "-"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(epoch: Any) -> str:
    try:
        seconds = datetime.now(tz=UTC).timestamp() - float(epoch)
    except (TypeError, ValueError):
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{max(int(seconds), 0)}s ago"


def short_date(iso: str) -> str:
    return (iso or "").replace("T", " ")[:16]


def json_pretty(value: Any) -> str:
    import orjson

    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


FILTERS: dict[str, Callable[..., Any]] = {
    "markdown": markdown,
    "diff_lines": diff_lines,
    "when": when,
    "ago": ago,
    "short_date": short_date,
    "json_pretty": json_pretty,
}


def problem_field(problem: Any) -> str:
    where = [str(p) for p in problem.get("loc", ()) if p not in ("body", "query", "path")]
    return ".".join(where) or str(problem.get("loc", ["body"])[0])


_FIXES = {
    "missing": "it is required",
    "extra_forbidden": "this field is not accepted; remove it",
    "enum": "use one of the listed values",
    "json_invalid": "the body is not valid JSON",
}


def describe_problem(problem: Any) -> str:
    """`field: what is wrong (what to do)` for one request validation error."""
    field = problem_field(problem)
    message = str(problem.get("msg", "invalid"))
    fix = _FIXES.get(str(problem.get("type")), "")
    return f"{field}: {message}" + (f" ({fix})" if fix and fix not in message else "")
