"""The dataclasses of `crm.models` are held to the Rust types they come from."""

import dataclasses
import json
from typing import Any, Dict, Set

import pytest

import crm.models
from crm import _native
from crm.errors import CrmError
from crm.models import Lead, WorkspaceInfo

#: Results Python builds itself (from a tuple), with no Rust type of their own.
PYTHON_ONLY = {"Model", "IdempotencyClaim"}

_ALL: Dict[str, Any] = json.loads(_native.model_schemas())
SCHEMAS: Dict[str, Any] = _ALL["models"]
COMPONENTS: Dict[str, Any] = _ALL["components"]


def properties(schema: Dict[str, Any]) -> Set[str]:
    """The property names of an object schema, through `allOf` (a flattened
    field) and `$ref`s to components."""
    if "$ref" in schema:
        return properties(COMPONENTS[schema["$ref"].rsplit("/", 1)[-1]])
    names = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        names |= properties(part)
    return names


@pytest.mark.parametrize("name", sorted(set(crm.models.__all__) - PYTHON_ONLY))
def test_each_dataclass_has_the_fields_of_its_rust_type(name: str) -> None:
    cls = getattr(crm.models, name)
    fields = {f.name for f in dataclasses.fields(cls)}
    assert name in SCHEMAS, f"no Rust schema for {name}"
    assert fields == properties(SCHEMAS[name])


def test_every_rust_schema_has_a_dataclass() -> None:
    assert set(SCHEMAS) == set(crm.models.__all__) - PYTHON_ONLY


def test_a_shape_that_does_not_match_fails_loudly() -> None:
    info = {"id": "00000000-0000-0000-0000-000000000000", "name": "x", "created_at": "2026-01-01T00:00:00Z"}
    assert WorkspaceInfo.from_dict(info).name == "x"
    renamed = dict(info, title=info.pop("name"))
    with pytest.raises(CrmError) as e:
        WorkspaceInfo.from_dict(renamed)
    assert e.value.code == "internal_error"
    assert "missing ['name'], unknown ['title']" in str(e.value)
    with pytest.raises(CrmError):
        Lead.from_dict({})
