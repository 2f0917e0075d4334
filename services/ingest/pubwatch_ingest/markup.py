"""Inline markup in PubMed text reduced to clean plain text.

PubMed titles and abstracts carry inline HTML (``<i>``, ``<b>``, ``<sup>``, ``<sub>``) and
MathML. :mod:`pubwatch_ingest.articles` reads records with ``Entrez.read(escape=True)``,
so every text field arrives as a well-formed XML fragment: markup as tags, a literal ``<``
as ``&lt;``. That lets this module parse the fragment instead of guessing with regular
expressions (``r<sup>2</sup>&lt;0.25`` must become ``r²<0.25``, not lose the ``<0.25``).
"""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET

_SUPERSCRIPTS = str.maketrans("0123456789+-\u2212=()ni", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁻⁼⁽⁾ⁿⁱ")
_SUBSCRIPTS = str.maketrans("0123456789+-\u2212=()aeoxhklmnpst", "₀₁₂₃₄₅₆₇₈₉₊₋₋₌₍₎ₐₑₒₓₕₖₗₘₙₚₛₜ")
_SUPERSCRIPT_SOURCE = set("0123456789+-\u2212=()ni")
_SUBSCRIPT_SOURCE = set("0123456789+-\u2212=()aeoxhklmnpst")

# MathML parts that repeat the formula in another notation (TeX, content MathML).
_DROPPED = frozenset({"annotation", "annotation-xml"})


def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].rsplit(":", 1)[-1].lower()


def _superscript(text: str) -> str:
    text = text.strip()
    if text and set(text) <= _SUPERSCRIPT_SOURCE:
        return text.translate(_SUPERSCRIPTS)
    return f"^{text}" if len(text) <= 1 else f"^({text})"


def _subscript(text: str) -> str:
    text = text.strip()
    if text and set(text) <= _SUBSCRIPT_SOURCE:
        return text.translate(_SUBSCRIPTS)
    return f"_{text}" if len(text) <= 1 else f"_({text})"


def _element_text(element: ET.Element) -> str:
    """The text of ``element`` itself (not its tail), with markup interpreted."""
    name = _local_name(element.tag)
    if name in _DROPPED:
        return ""
    if name == "semantics":
        # The first child is the presentation; the rest are annotations.
        return _element_text(element[0]) if len(element) else ""
    parts = [_element_text(child) for child in element]
    inner = (element.text or "") + "".join(
        part + (child.tail or "") for part, child in zip(parts, element, strict=True)
    )
    if name == "sup":
        return _superscript(inner)
    if name == "sub":
        return _subscript(inner)
    if name == "msup" and len(parts) == 2:
        return parts[0] + _superscript(parts[1])
    if name == "msub" and len(parts) == 2:
        return parts[0] + _subscript(parts[1])
    if name == "msubsup" and len(parts) == 3:
        return parts[0] + _subscript(parts[1]) + _superscript(parts[2])
    if name == "mfrac" and len(parts) == 2:
        return f"{parts[0]}/{parts[1]}"
    if name == "msqrt":
        return f"√({inner.strip()})"
    return inner


def clean_text(fragment: str) -> str:
    """Plain single-paragraph text from a PubMed text field (an escaped XML fragment)."""
    if "<" not in fragment and "&" not in fragment:
        return " ".join(fragment.split())
    try:
        root = ET.fromstring(f"<fragment>{fragment}</fragment>")  # noqa: S314
    except ET.ParseError:
        # Not a fragment after all (a caller passed unescaped text): unescape and keep it.
        return " ".join(html.unescape(fragment).split())
    return " ".join(_element_text(root).split())
