"""Spec problems in words: pydantic's errors rewritten as one line each that names the field path,
e.g. ``schedule.tokens_per_task: must be greater than 0``, with "did you mean" hints for misspelled
keys and renamed fields; nothing here lets a pydantic traceback reach the user."""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import ValidationError

from plasticity_ray.errors import UserError
from plasticity_ray.spec.schema import FIELD_NAMES, MITIGATION_NAMES, ExperimentSpec


class SpecError(UserError):
    """A spec that cannot be used; `problems` holds one readable line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join([f"{source}: {len(problems)} problem(s)"] + [f"  {p}" for p in problems]))


# Fields that were renamed: what to write instead.
_RENAMED = {"after_languages": "now probe.extended: {languages: [...], cycles: [from, to]} (cycles optional)"}


def _format_loc(loc: tuple) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("builtin", "hf", "files") and text.endswith("source"):
            continue  # the union's tag adds nothing a user typed
        elif part in MITIGATION_NAMES and text.startswith("mitigations["):
            continue
        elif isinstance(part, str) and part.startswith(("function-", "constrained-")):
            continue
        else:
            text += ("." if text else "") + str(part)
    return text


def _readable(error: dict) -> list[str]:
    loc = _format_loc(error["loc"])
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        if key in _RENAMED:
            return [f"{loc}: {_RENAMED[key]}"]
        guess = difflib.get_close_matches(key, FIELD_NAMES, n=1, cutoff=0.7)
        return [f"{loc}: unknown field" + (f" (did you mean {guess[0]!r}?)" if guess else "")]
    if kind == "missing":
        return [f"{loc}: required"]
    if kind == "union_tag_invalid":
        tag, expected = str(error["ctx"]["tag"]), re.findall(r"'([^']+)'", error["ctx"]["expected_tags"])
        guess = difflib.get_close_matches(tag, expected, n=1, cutoff=0.6)
        hint = f"did you mean {guess[0]!r}? " if guess else ""
        return [f"{loc}.{error['ctx']['discriminator'].strip(chr(39))}: unknown {tag!r} ({hint}one of {', '.join(expected)})"]
    msg = re.sub(r"^(Value|Assertion) error, ", "", msg)
    msg = msg.replace("Input should be", "must be").replace("Input tag", "tag")
    lines = msg.split("\n")
    if not loc:  # cross-field problems already name their fields
        return lines
    return [f"{loc}: {line}" for line in lines]


def problems_of(raw: Any) -> list[str]:
    """One readable line per problem of a raw spec mapping (none: it validates)."""
    if not isinstance(raw, dict):
        return ["the file must be a YAML mapping of sections (name, model, data, ...)"]
    try:
        ExperimentSpec.model_validate(raw)
    except ValidationError as err:
        return [line for e in err.errors() for line in _readable(e)]
    return []


def validated(raw: Any, source: str) -> ExperimentSpec:
    """The spec of a raw mapping; SpecError naming `source` and every problem."""
    problems = problems_of(raw)
    if problems:
        raise SpecError(source, problems)
    return ExperimentSpec.model_validate(raw)
