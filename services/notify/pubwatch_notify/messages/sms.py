"""SMS bodies: at most two segments, GSM-7 whenever possible, always the STOP line.

Shape: ``PubWatch: <what changed>[: "<title>"]. <link> Reply STOP to end``. The title is the
only part that may not fit: it is transliterated to GSM-7 where it can be, shortened to fit,
and only when it cannot be written in GSM-7 does the message fall back to UCS-2 (with far
less room); if too little of it would remain, the title is left out and the link carries it.
"""

from __future__ import annotations

from pubwatch_notify.messages.content import MessageContent
from pubwatch_notify.messages.gsm7 import capacity, gsm7_septets, is_gsm7, to_gsm7, truncate_to
from pubwatch_notify.messages.levels import level_words

MAX_SEGMENTS = 2
STOP_LINE = "Reply STOP to end"
# Below this many characters a title says too little to be worth switching to UCS-2 for.
MIN_USEFUL_TITLE_CHARS = 30


def summary_phrase(content: MessageContent) -> str:
    """What changed, in a few words."""
    parts: list[str] = []
    if content.new_items:
        count = len(content.new_items)
        strongest = content.strongest_new_level
        prefix = f"{content.digest} digest, " if content.digest else ""
        if count == 1 and strongest is not None:
            parts.append(f"{prefix}new {level_words(strongest)} on {content.topic_name}")
        elif strongest is not None:
            same = sum(1 for item in content.new_items if item.level == strongest)
            parts.append(
                f"{prefix}{count} new studies on {content.topic_name} "
                f"incl. {same} {level_words(strongest, same)}"
            )
    if content.notices:
        parts.append(f"update on {content.topic_name}")
    if content.corrections:
        kinds = {correction.verb for correction in content.corrections}
        verb = kinds.pop() if len(kinds) == 1 else "was retracted or corrected"
        count = len(content.corrections)
        what = "a study" if count == 1 else f"{count} studies"
        were = verb if count == 1 else verb.replace("was ", "were ")
        parts.append(f"correction: {what} we sent you on {content.topic_name} {were}")
    return "; ".join(parts)


def _single_title(content: MessageContent) -> str | None:
    items = [c.item for c in content.corrections] + content.new_items + content.notices
    return items[0].title if len(items) == 1 else None


def render_sms(content: MessageContent, link: str) -> str:
    head = f"PubWatch: {summary_phrase(content)}"
    tail = f" {link} {STOP_LINE}"
    title = _single_title(content)
    if title is not None:
        with_title = _with_title(head, title, tail)
        if with_title is not None:
            return with_title
    return _fit(head + "." + tail, head, tail)


def _with_title(head: str, title: str, tail: str) -> str | None:
    gsm_title = to_gsm7(title)
    frame = f'{head}: "".{tail}'
    if is_gsm7(gsm_title) and is_gsm7(frame):
        budget = capacity(MAX_SEGMENTS, gsm7=True) - gsm7_septets(frame)
        short = truncate_to(gsm_title, budget, gsm7=True)
        return f'{head}: "{short}".{tail}' if short else None
    budget = capacity(MAX_SEGMENTS, gsm7=False) - len(frame.encode("utf-16-le")) // 2
    short = truncate_to(title, budget, gsm7=False, ellipsis="…")
    if len(short) < MIN_USEFUL_TITLE_CHARS:
        return None
    return f'{head}: "{short}".{tail}'


def _fit(body: str, head: str, tail: str) -> str:
    """``body`` if it fits; otherwise the head shortened (topic names are the long part)."""
    gsm = is_gsm7(body)
    if not gsm:
        head = to_gsm7(head)
        gsm = is_gsm7(head + tail)
    limit = capacity(MAX_SEGMENTS, gsm7=gsm)
    measure = gsm7_septets if gsm else (lambda text: len(text.encode("utf-16-le")) // 2)
    if measure(head + "." + tail) <= limit:
        return head + "." + tail
    return truncate_to(head, limit - measure(tail), gsm7=gsm) + tail
