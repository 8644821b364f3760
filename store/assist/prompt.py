"""The conversation sent to the model: the hook's contract, the scaffold, the operator's words.

The first user message carries everything the model needs and nothing it must guess: the
hook's own description (its handler module's docstring: what stdout means), the exit-code map
and failure policy in force for the scaffolded manifest, the JSON Schemas of the payload file
and of the result, the scaffold's entry point (a working skeleton), example test cases, and
the description. A repair message carries the errors of the last draft, verbatim but capped.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from csext.handlers import get_handler, json_schemas
from csext.handlers.base import exit_meanings
from csext.schemas import testcase
from csext.schemas.hooks.common import FailurePolicy
from csext.schemas.manifest import HookType
from csext.store.registry import MANIFEST_FILE, parse_manifest
from csext.store.scaffold import Language
from csext.store.testcases import load_cases

from .client import Message

SCHEMA_CAP = 12_000
"""Characters of one JSON Schema in the prompt (compact JSON; the largest is ~10 KB)."""
EXAMPLE_CASES = 2
REPAIR_CAP = 6_000
"""Characters of validation and test output sent back per round."""

LANG_NAMES = {Language.BASH: "bash", Language.PYTHON: "python"}
LANG_RULES = {
    Language.BASH: (
        "bash, starting with #!/usr/bin/env bash; use only bash and coreutils (jq and curl "
        "may be missing: parse JSON with python3 -c if you must)"
    ),
    Language.PYTHON: (
        "Python 3.11, starting with #!/usr/bin/env python3; the standard library only "
        "(no pip packages)"
    ),
}


@dataclass(frozen=True, slots=True)
class Scaffold:
    """What `csext new` wrote for this hook and language: the draft's starting point."""

    folder: Path
    entry: str

    @property
    def entry_text(self) -> str:
        return (self.folder / self.entry).read_text(encoding="utf-8")


def system_message(lang: Language) -> Message:
    name = LANG_NAMES[lang]
    text = f"""You write one csext extension: a single executable file that csext runs for \
Apache CloudStack as `<entry> <action> <payload-file> <timeout-seconds>`.
Rules for the file:
- {LANG_RULES[lang]};
- read the JSON payload from the file named by the second argument, never from stdin;
- print the answer on stdout, diagnostics on stderr; exit with the codes given below;
- finish well within the timeout; no network access unless the description asks for it;
- keep the structure of the scaffold you are given: one branch per action.
Answer with exactly three fenced blocks, in this order, and nothing else but short notes:
1. ```{name}  the whole entry point file (one file, no other code blocks);
2. ```markdown  a README section (starting with a ## heading) saying what it does and how to \
configure it;
3. ```yaml  a YAML list of test cases, each a mapping with `name` (lower case, a-z 0-9 - _), \
`action`, an inline `payload` and `expect`, covering what the description asks for.
The test cases are run with `csext test`; the extension is saved only when they all pass."""
    return {"role": "system", "content": text}


def first_message(hook: HookType, lang: Language, scaffold: Scaffold, description: str) -> Message:
    parts = [
        f"# Hook: {hook.value}",
        hook_doc(hook),
        "## Exit codes and failure policy",
        exit_code_text(hook, scaffold.folder),
        "## Payload file (JSON Schema)",
        _schema_block(json_schemas(hook)["input"]),
        "## Result csext derives from stdout (JSON Schema)",
        _schema_block(json_schemas(hook)["result"]),
        f"## Scaffold (`{scaffold.entry}`, passes its tests unmodified)",
        f"```{LANG_NAMES[lang]}\n{scaffold.entry_text.rstrip()}\n```",
        "## Test case format",
        (testcase.__doc__ or "").strip(),
        "Examples, in the list form your answer uses (inline payloads; no payloadFile):",
        f"```yaml\n{example_cases(scaffold.folder)}```",
        "## What the extension must do",
        description.strip(),
    ]
    return {"role": "user", "content": "\n\n".join(parts)}


def repair_message(round_no: int, problems: list[str]) -> Message:
    text = "\n".join(problems)
    if len(text) > REPAIR_CAP:
        text = text[:REPAIR_CAP] + "\n... (cut)"
    content = (
        f"Draft {round_no} was not accepted:\n\n{text}\n\n"
        "Fix the entry point (and the test cases if they were wrong about the hook's contract) "
        "and answer again with the same three fenced blocks."
    )
    return {"role": "user", "content": content}


def hook_doc(hook: HookType) -> str:
    """The hook handler module's docstring: what its stdout and exit codes mean."""
    module = inspect.getmodule(type(get_handler(hook)))
    return inspect.cleandoc(module.__doc__ or "") if module else ""


def exit_code_text(hook: HookType, folder: Path) -> str:
    handler = get_handler(hook)
    spec = parse_manifest(folder / MANIFEST_FILE).spec
    meanings = exit_meanings(spec, handler.defaults)
    lines = [f"- exit {code}: {meaning.value}" for code, meaning in sorted(meanings.items())]
    lines.append(f"- any other exit code: {handler.defaults.unlisted.value}")
    policies: tuple[FailurePolicy, ...] = handler.defaults.failure_policies
    lines.append(
        f"- failure policy: {policies[0].value} (on a timeout, crash or unparsable output the "
        f"caller gets {_policy_meaning(policies[0])})"
    )
    return "\n".join(lines)


def _policy_meaning(policy: FailurePolicy) -> str:
    return {
        FailurePolicy.FAIL_CLOSED: "the deny answer",
        FailurePolicy.FAIL_OPEN: "the neutral answer",
        FailurePolicy.ERROR: "an error",
    }[policy]


def example_cases(folder: Path) -> str:
    """The scaffold's first cases as a YAML list with inline payloads."""
    cases, _ = load_cases(folder)
    items: list[dict[str, Any]] = []
    for loaded in cases[:EXAMPLE_CASES]:
        raw = loaded.case.model_dump(
            mode="json", by_alias=True, exclude_defaults=True, exclude={"payload_file"}
        )
        items.append({"name": loaded.name, **raw, "payload": loaded.payload})
    return str(yaml.safe_dump(items, sort_keys=False))


def _schema_block(schema: dict[str, Any] | None) -> str:
    if schema is None:
        return "(none: this hook's stdout is not parsed)"
    text = orjson.dumps(schema).decode()
    if len(text) > SCHEMA_CAP:
        text = text[:SCHEMA_CAP] + " ... (cut; `csext schema` prints all of it)"
    return f"```json\n{text}\n```"
