from __future__ import annotations

from pathlib import Path

import pytest

from pubwatch_shared.topics import TopicsFileError, load_topics, parse_topics

REPO_ROOT = Path(__file__).resolve().parents[2]

GOOD = """
[[topic]]
slug = "a-topic"
name = "A topic"
query = 'mastocytosis[tiab]'
"""


def test_shipped_topics_file_is_valid() -> None:
    topics = load_topics(REPO_ROOT / "topics.toml")
    slugs = [t.slug for t in topics]
    assert "indolent-systemic-mastocytosis" in slugs
    assert len(slugs) == len(set(slugs))


def test_good_file() -> None:
    (topic,) = parse_topics(GOOD)
    assert (topic.slug, topic.name, topic.query, topic.description) == (
        "a-topic",
        "A topic",
        "mastocytosis[tiab]",
        "",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[topic]\nslug = 1", "not valid TOML"),
        ("", "no topics"),
        (GOOD + GOOD, "line 7 (topic #2): duplicate slug 'a-topic' (first defined at line 2)"),
        (
            GOOD.replace("'mastocytosis[tiab]'", "'  '"),
            "line 2 (topic #1): 'query' is missing or empty",
        ),
        (GOOD.replace('"a-topic"', '"A Topic"'), "must be lowercase letters"),
        (GOOD + 'colour = "red"\n', "unknown key(s) ['colour']"),
        (GOOD.replace("'mastocytosis[tiab]'", "'(mastocytosis'"), "parentheses do not balance"),
        ("[other]\nx = 1\n", "unknown top-level key(s) ['other']"),
    ],
)
def test_bad_files_name_the_line_and_problem(text: str, message: str) -> None:
    with pytest.raises(TopicsFileError) as excinfo:
        parse_topics(text, origin="t.toml")
    assert message in str(excinfo.value)
    assert str(excinfo.value).startswith("t.toml")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TopicsFileError, match="not found; set PUBWATCH_TOPICS_FILE"):
        load_topics(tmp_path / "nope.toml")
