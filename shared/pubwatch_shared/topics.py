"""The topics file (``PUBWATCH_TOPICS_FILE``): which conditions PubWatch follows.

Both services read it: ingest for the PubMed queries, notify for the names and pages. A bad
file stops start-up with a message that names the line and the problem.

Format::

    [[topic]]
    slug = "indolent-systemic-mastocytosis"
    name = "Indolent systemic mastocytosis"
    query = '"mastocytosis, systemic"[MeSH Terms] AND indolent[tiab]'
    description = "A slow-moving form of systemic mastocytosis."   # optional
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pubwatch_shared.events import SLUG_PATTERN

_SLUG = re.compile(SLUG_PATTERN)
_TOPIC_HEADER = re.compile(r"^\s*\[\[\s*topic\s*\]\]\s*(#.*)?$")
_KNOWN_KEYS = {"slug", "name", "query", "description"}


class TopicsFileError(ValueError):
    """The topics file cannot be used; ``str()`` names the file, line and problem."""


@dataclass(frozen=True)
class Topic:
    slug: str
    name: str
    query: str
    description: str = ""


def _topic_lines(text: str) -> list[int]:
    """1-based line number of each ``[[topic]]`` header, in order."""
    return [n for n, line in enumerate(text.splitlines(), start=1) if _TOPIC_HEADER.match(line)]


def parse_topics(text: str, origin: str = "topics file") -> list[Topic]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already carries "(at line N, column M)".
        raise TopicsFileError(f"{origin}: not valid TOML: {exc}") from None
    unknown_tables = set(data) - {"topic"}
    if unknown_tables:
        raise TopicsFileError(
            f"{origin}: unknown top-level key(s) {sorted(unknown_tables)}; "
            "each topic is a [[topic]] table"
        )
    entries = data.get("topic")
    if not isinstance(entries, list) or not entries:
        raise TopicsFileError(f"{origin}: no topics; add at least one [[topic]] table")
    lines = _topic_lines(text)
    topics: list[Topic] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        line = lines[index] if index < len(lines) else 0
        where = f"{origin}, line {line} (topic #{index + 1})"
        unknown = set(entry) - _KNOWN_KEYS
        if unknown:
            raise TopicsFileError(
                f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KNOWN_KEYS)}"
            )
        values: dict[str, str] = {}
        for key in ("slug", "name", "query"):
            value = entry.get(key)
            if not isinstance(value, str) or not value.strip():
                raise TopicsFileError(f"{where}: {key!r} is missing or empty")
            values[key] = value.strip()
        description = entry.get("description", "")
        if not isinstance(description, str):
            raise TopicsFileError(f"{where}: 'description' must be a string")
        slug = values["slug"]
        if not _SLUG.match(slug) or len(slug) > 100:
            raise TopicsFileError(
                f"{where}: slug {slug!r} must be lowercase letters, digits and single hyphens"
            )
        if slug in seen:
            raise TopicsFileError(
                f"{where}: duplicate slug {slug!r} (first defined at line {seen[slug]})"
            )
        if values["query"].count("(") != values["query"].count(")"):
            raise TopicsFileError(f"{where}: the query's parentheses do not balance")
        if values["query"].count('"') % 2:
            raise TopicsFileError(f"{where}: the query has an unclosed double quote")
        seen[slug] = line
        topics.append(Topic(slug, values["name"], values["query"], " ".join(description.split())))
    return topics


def load_topics(path: Path) -> list[Topic]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TopicsFileError(
            f"topics file {path} not found; set PUBWATCH_TOPICS_FILE or create it"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TopicsFileError(f"topics file {path} cannot be read: {exc}") from None
    return parse_topics(text, origin=str(path))
