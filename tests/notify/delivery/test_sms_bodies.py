"""Every SMS fits two segments: every level, every topic in topics.toml, awkward titles."""

from __future__ import annotations

import pytest

from pubwatch_notify.messages.content import Correction, MessageContent, MessageItem
from pubwatch_notify.messages.gsm7 import is_gsm7, segment_count
from pubwatch_notify.messages.sms import STOP_LINE, render_sms
from pubwatch_shared.events import EventType, EvidenceLevel
from pubwatch_shared.topics import load_topics
from tests.notify.delivery.helpers import REPO_ROOT

TOPICS = load_topics(REPO_ROOT / "topics.toml")
LINK = "https://pubwatch.example.org/e/1234567"
TITLES = [
    "Short title.",
    "Efficacy of avapritinib versus placebo in indolent systemic mastocytosis: a randomised, "
    "double-blind trial with 52-week follow-up and long-term extension in 212 adults " * 2,
    # Greek letters and typographic quotes, as PubMed titles have them.
    "Tryptase \u03b1/\u03b2 heterotetramers and \u201chereditary \u03b1-tryptasemia\u201d "
    "\u2014 a cohort study \u2265 18 years",
    "肥大細胞症の患者における新しい治療法の無作為化比較試験の結果について詳しく報告する" * 3,
    "Mastocytose systémique indolente : étude observationnelle française [ISM] {2026}",
]


def _item(title: str, level: EvidenceLevel) -> MessageItem:
    return MessageItem(
        title=title, url="https://pubmed.ncbi.nlm.nih.gov/1/", summary="s", level=level
    )


@pytest.mark.parametrize("topic", TOPICS, ids=lambda t: t.slug)
@pytest.mark.parametrize("level", list(EvidenceLevel))
def test_every_level_and_topic_fits_two_segments(topic, level):
    for title in TITLES:
        for content in (
            MessageContent(topic.slug, topic.name, new_items=[_item(title, level)]),
            MessageContent(
                topic.slug, topic.name, new_items=[_item(title, level)] * 3, digest="weekly"
            ),
            MessageContent(
                topic.slug,
                topic.name,
                corrections=[Correction(EventType.RETRACTED.value, _item(title, level))],
            ),
            MessageContent(topic.slug, topic.name, notices=[_item(title, level)]),
        ):
            body = render_sms(content, LINK)
            assert segment_count(body) <= 2, body
            assert body.endswith(f"{LINK} {STOP_LINE}")


def test_titles_stay_gsm7_when_typography_can_be_transliterated():
    content = MessageContent(
        "t", "Hereditary alpha-tryptasemia", new_items=[_item(TITLES[2], EvidenceLevel.OTHER)]
    )
    body = render_sms(content, LINK)
    assert is_gsm7(body)
    assert "alpha" in body


def test_a_title_that_needs_ucs2_is_kept_only_if_enough_of_it_fits():
    content = MessageContent(
        "t", "Cutaneous mastocytosis", new_items=[_item(TITLES[3], EvidenceLevel.RCT)]
    )
    body = render_sms(content, LINK)
    assert segment_count(body) <= 2
    assert "肥大細胞症" in body or is_gsm7(body)
