"""Every crm_core::Error kind maps to its class, attributes and code."""

import pickle

import pytest

import crm
from crm import _native

KINDS = {
    "validation_failed": crm.ValidationError,
    "not_found": crm.NotFoundError,
    "conflict": crm.ConflictError,
    "key_revoked": crm.ConflictError,
    "quota_exceeded": crm.ConflictError,
    "unauthorized": crm.UnauthorizedError,
    "forbidden": crm.ForbiddenError,
    "rate_limited": crm.RateLimitedError,
    "integration_failed": crm.IntegrationError,
    "webhook_verification_failed": crm.WebhookVerificationError,
    "configuration_error": crm.CrmError,
    "file_too_large": crm.CrmError,
    "unsupported_media_type": crm.CrmError,
    "storage_unavailable": crm.CrmError,
    "internal_error": crm.CrmError,
}


@pytest.mark.parametrize("code", KINDS)
def test_each_kind_maps_to_its_class(code: str) -> None:
    with pytest.raises(crm.CrmError) as e:
        _native.sample_error(code)
    assert type(e.value) is KINDS[code] and e.value.code == code
    assert isinstance(e.value, Exception) and not isinstance(e.value, ValueError)
    copy = pickle.loads(pickle.dumps(e.value))
    assert type(copy) is type(e.value) and str(copy) == str(e.value)
    assert copy.status == e.value.status and copy.to_problem() == e.value.to_problem()


def test_attributes() -> None:
    with pytest.raises(crm.ValidationError) as v:
        _native.sample_error("validation_failed")
    assert v.value.errors == [("email", "is not an email"), ("tags[1]", "is empty")]
    assert v.value.errors[1].field == "tags[1]"
    with pytest.raises(crm.NotFoundError) as n:
        _native.sample_error("not_found")
    assert n.value.entity == "lead" and str(n.value) == "lead not found"
    with pytest.raises(crm.ConflictError) as c:
        _native.sample_error("conflict")
    assert c.value.existing_id == "00000000-0000-0000-0000-000000000000" and c.value.field == "email"
    with pytest.raises(crm.UnauthorizedError) as u:
        _native.sample_error("unauthorized")
    assert u.value.reason == "revoked_key"
    with pytest.raises(crm.RateLimitedError) as r:
        _native.sample_error("rate_limited")
    assert r.value.retry_after == 1.5
    with pytest.raises(crm.WebhookVerificationError) as w:
        _native.sample_error("webhook_verification_failed")
    assert w.value.kind == "timestamp"
    with pytest.raises(crm.CrmError) as i:
        _native.sample_error("internal_error")
    assert "sealed" in str(i.value) and i.value.code == "internal_error"
    with pytest.raises(crm.ValidationError):
        _native.sample_error("nope")


def test_file_errors_render_as_the_router_does() -> None:
    for code, status in [("file_too_large", 413), ("unsupported_media_type", 415), ("storage_unavailable", 503)]:
        with pytest.raises(crm.CrmError) as e:
            _native.sample_error(code)
        problem = e.value.to_problem()
        assert (e.value.status, problem["status"], problem["code"]) == (status, status, code)
    with pytest.raises(crm.CrmError) as e:
        _native.sample_error("unsupported_media_type")
    assert "application/x-executable" in e.value.to_problem()["detail"]
    with pytest.raises(crm.CrmError) as e:
        _native.sample_error("storage_unavailable")
    assert e.value.to_problem()["detail"] == "the file storage is unavailable; nothing was written"
