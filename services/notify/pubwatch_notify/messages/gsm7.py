"""SMS encodings and segment arithmetic (GSM 03.38 and UCS-2).

A message in GSM-7 fits 160 characters in one segment and 153 per segment when split; any
character outside the GSM-7 alphabet makes the whole message UCS-2: 70, then 67 per segment.
Characters of the GSM extension table (``{ } [ ] ~ \\ | ^ €``) take two septets.
"""

from __future__ import annotations

import unicodedata

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

GSM7_SINGLE_SEGMENT_SEPTETS = 160
GSM7_MULTIPART_SEPTETS = 153
UCS2_SINGLE_SEGMENT_UNITS = 70
UCS2_MULTIPART_UNITS = 67

# Common typography in article titles, written the way a GSM-7 phone can show it.
_TRANSLITERATIONS = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
    "\u2026": "...", "\u00a0": " ", "\u2009": " ", "\u202f": " ",
    "\u00b1": "+/-", "\u2265": ">=", "\u2264": "<=", "\u00d7": "x", "\u00b7": ".",
    "\u03b1": "alpha", "\u03b2": "beta", "\u03b3": "gamma", "\u03b4": "delta",
    "\u03ba": "kappa", "\u03bb": "lambda", "\u03bc": "mu", "\u00b5": "mu",
    "\u00ae": "(R)", "\u2122": "(TM)", "\u00a9": "(c)", "\u00b0": " deg",
}  # fmt: skip


def is_gsm7(text: str) -> bool:
    return all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in text)


def gsm7_septets(text: str) -> int:
    return sum(2 if char in GSM7_EXTENSION else 1 for char in text)


def ucs2_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def segment_count(text: str) -> int:
    """How many SMS segments ``text`` is sent as."""
    if is_gsm7(text):
        length, single, multi = (
            gsm7_septets(text),
            GSM7_SINGLE_SEGMENT_SEPTETS,
            GSM7_MULTIPART_SEPTETS,
        )
    else:
        length, single, multi = ucs2_units(text), UCS2_SINGLE_SEGMENT_UNITS, UCS2_MULTIPART_UNITS
    if length <= single:
        return 1
    return -(-length // multi)


def capacity(segments: int, gsm7: bool) -> int:
    """Septets (GSM-7) or UTF-16 units (UCS-2) that fit in ``segments`` segments."""
    if gsm7:
        return GSM7_SINGLE_SEGMENT_SEPTETS if segments == 1 else segments * GSM7_MULTIPART_SEPTETS
    return UCS2_SINGLE_SEGMENT_UNITS if segments == 1 else segments * UCS2_MULTIPART_UNITS


def to_gsm7(text: str) -> str:
    """``text`` with common typography and accents replaced by GSM-7 equivalents where one
    exists. Characters with no equivalent are kept: check the result with :func:`is_gsm7`."""
    out: list[str] = []
    for char in text:
        if char in GSM7_BASIC or char in GSM7_EXTENSION:
            out.append(char)
        elif char in _TRANSLITERATIONS:
            out.append(_TRANSLITERATIONS[char])
        else:
            stripped = "".join(
                c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)
            )
            out.append(stripped if stripped and is_gsm7(stripped) else char)
    return "".join(out)


def truncate_to(text: str, budget: int, gsm7: bool, ellipsis: str = "...") -> str:
    """The longest prefix of ``text`` (cut at a word where possible) that, with ``ellipsis``,
    fits ``budget`` septets or units. Empty when not even a word fits."""
    measure = gsm7_septets if gsm7 else ucs2_units
    if measure(text) <= budget:
        return text
    room = budget - measure(ellipsis)
    if room <= 0:
        return ""
    cut = ""
    for char in text:
        if measure(cut + char) > room:
            break
        cut += char
    if " " in cut.strip():
        cut = cut[: cut.rstrip().rfind(" ")]
    cut = cut.rstrip(" ,;:-")
    return f"{cut}{ellipsis}" if cut else ""
