"""Keyloom's OpenAPI document, and a bounded schemathesis run against it: no 5xx, no response that breaks it."""
from __future__ import annotations

import importlib
import pkgutil

import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from server.openapi import document
from tests.conftest import PASSWORD


def _import_schemathesis_now() -> None:
    """Import every module of schemathesis here, at collection, not lazily in the middle of a test: pytest rewrites
    them (schemathesis is a pytest plugin), and CPython 3.11.7's parser raised "AST constructor recursion depth
    mismatch" rewriting one mid-run, after other tests of the same worker had run (seen twice in full runs)."""
    for info in pkgutil.walk_packages(schemathesis.__path__, "schemathesis."):
        try:
            importlib.import_module(info.name)
        except ImportError:  # optional integrations whose framework is not installed
            pass


_import_schemathesis_now()


def test_the_document_is_valid_openapi_3_1_and_served(keyloom):
    with keyloom.http() as h:
        served = h.get("/openapi.json").json()
    assert served == document()
    assert served["openapi"] == "3.1.0"
    for schema in served["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    assert {"/v1/chat/completions", "/v1/models", "/v1/models/{model}", "/health"} <= set(served["paths"])


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzzed_requests_get_documented_answers_and_never_a_5xx(start_keyloom, fake, mode):
    """Every operation, with data that fits the document (positive) and data that does not (negative):
    each answer must be one the document allows, and none may be a 5xx."""
    # no client limits in tests; fuzzed model ids are refused locally as unknown; fuzzed wrong credentials would
    # be throttled (429) after a few, which schemathesis reads as "auth ignored"
    kl = start_keyloom(ADMIN_LOGIN_ATTEMPTS="1000")
    schema = schemathesis.openapi.from_url(kl.url + "/openapi.json")
    headers = {"Authorization": f"Bearer {PASSWORD}"}
    statuses: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=40, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            # positive_data_acceptance wants a 2xx for all schema-valid data; some refusals depend on context a
            # schema cannot state (a tool_call_id must match an earlier call): those are documented 400s.
            response = case.call_and_validate(base_url=kl.url, headers=headers,
                                              excluded_checks=[schemathesis.checks.positive_data_acceptance])
            assert response.status_code < 500, response.text
            assert "Traceback" not in response.text
            statuses.setdefault(operation.label, set()).add(response.status_code)  # noqa: B023 - run right below

        try:
            check()
        except Unsatisfiable:
            # nothing to make invalid (an operation without parameters or body): only in negative mode
            assert mode is GenerationMode.NEGATIVE, operation.label
    assert "POST /v1/chat/completions" in statuses
    if mode is GenerationMode.NEGATIVE:
        assert statuses["POST /v1/chat/completions"] - {400, 404, 413} == set()  # refused, clearly
