"""The Jinja environments messages and notify's own pages render with."""

from __future__ import annotations

from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


@cache
def template_environment() -> Environment:
    """HTML templates are autoescaped; ``.txt`` templates (email text, SMS) are not."""
    return Environment(
        loader=PackageLoader("pubwatch_notify", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2")),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
