"""The JSON Schema of the change event, exported from the models.

``shared/event.schema.json`` is generated from :class:`ChangeEvent`; a test fails when the
committed file and the models disagree, so other systems can validate before posting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pubwatch_shared.events import ChangeEvent

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "event.schema.json"


def event_json_schema() -> dict[str, Any]:
    schema = ChangeEvent.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://pubwatch.example/schemas/change-event-v1.json"
    return schema


def render() -> str:
    return json.dumps(event_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    SCHEMA_FILE.write_text(render())
    print(f"wrote {SCHEMA_FILE}")
