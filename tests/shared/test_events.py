from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from pydantic.config import JsonDict

from pubwatch_shared.events import EXAMPLE_EVENT, ChangeEvent, EventType, EvidenceLevel
from pubwatch_shared.schema import SCHEMA_FILE, render


def _event(**overrides: object) -> dict[str, object]:
    payload: dict[str, object] = json.loads(json.dumps(EXAMPLE_EVENT))
    payload.update(overrides)
    return payload


def _example_item() -> JsonDict:
    items = EXAMPLE_EVENT["items"]
    assert isinstance(items, list)
    item = items[0]
    assert isinstance(item, dict)
    return dict(item)


def test_levels_are_ordered_strongest_first() -> None:
    order = [level.value for level in sorted(EvidenceLevel, key=lambda lv: lv.rank)]
    assert order == [
        "guideline",
        "systematic_review",
        "rct",
        "clinical_trial",
        "observational",
        "review",
        "case_report",
        "other",
    ]
    assert EvidenceLevel.RCT.at_least(EvidenceLevel.CLINICAL_TRIAL)
    assert not EvidenceLevel.REVIEW.at_least(EvidenceLevel.CLINICAL_TRIAL)
    assert EvidenceLevel.GUIDELINE.at_least(EvidenceLevel.GUIDELINE)


def test_example_event_is_valid_and_round_trips() -> None:
    event = ChangeEvent.model_validate(EXAMPLE_EVENT)
    assert event.type is EventType.NEW
    assert event.strongest_level is EvidenceLevel.RCT
    assert ChangeEvent.model_validate(event.to_payload()) == event


def test_strongest_level_is_derived_from_items() -> None:
    item = _example_item()
    weak = {**item, "evidence_level": "case_report"}
    strong = {**item, "evidence_level": "systematic_review"}
    event = ChangeEvent.model_validate(_event(items=[weak, strong]))
    assert event.strongest_level is EvidenceLevel.SYSTEMATIC_REVIEW


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"type": "evidence.maybe"}, "type"),
        ({"topic": "Not A Slug"}, "topic"),
        ({"occurred_at": "2026-11-25T06:00:00"}, "occurred_at"),
        ({"items": []}, "items"),
        ({"id": "has space"}, "id"),
        ({"schema_version": 2}, "schema_version"),
        ({"unexpected": True}, "unexpected"),
    ],
)
def test_invalid_events_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        ChangeEvent.model_validate(_event(**overrides))
    assert field in {str(error["loc"][0]) for error in excinfo.value.errors()}


def test_item_published_must_be_partial_iso_date() -> None:
    item = _example_item()
    with pytest.raises(ValidationError, match="YYYY"):
        ChangeEvent.model_validate(_event(items=[{**item, "published": "March 2024"}]))


def test_committed_json_schema_matches_the_models() -> None:
    assert SCHEMA_FILE.read_text() == render(), (
        "shared/event.schema.json is stale: run `uv run python -m pubwatch_shared.schema`"
    )
