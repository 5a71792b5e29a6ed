"""The data-health strip's asset checks: what counts as failing in Dagster's GraphQL answer, and a
Dagster that cannot be asked reported as unknown (with the address), never as an error."""

from __future__ import annotations

import asyncio

from ot_pipeline_tests.support.ports import free_port
from streaming.api.operator.asset_checks import AssetChecks, summarize


def _check(name: str, status: str | None, severity: str = "ERROR") -> dict:
    latest = (
        None
        if status is None
        else {
            "status": status,
            "timestamp": 1_765_000_000.5,
            "partition": "2026-12-07-10:00",
            "evaluation": {"severity": severity, "description": f"{name} compared 3 with 4"},
        }
    )
    return {"name": name, "executionForLatestMaterialization": latest}


def _answer(*nodes: tuple[list[str], list[dict]]) -> dict:
    return {
        "data": {
            "assetNodes": [
                {"assetKey": {"path": path}, "assetChecksOrError": {"checks": checks}}
                for path, checks in nodes
            ]
        }
    }


def test_failed_and_execution_failed_checks_are_failing_and_unexecuted_ones_are_not() -> None:
    answer = _answer(
        (["landing", "readings"], [_check("no_duplicates", "SUCCEEDED"), _check("gaps", None)]),
        (["windows_1m"], [_check("reconciles", "FAILED", "WARN")]),
        (["anomalies"], [_check("bounded", "EXECUTION_FAILED"), _check("fresh", "IN_PROGRESS")]),
        # an asset without checks answers an empty list (or an error type without `checks`)
        (["daily_archive"], []),
    )
    answer["data"]["assetNodes"].append({"assetKey": {"path": ["x"]}, "assetChecksOrError": {}})

    summary = summarize(answer)

    assert summary["total"] == 5
    assert summary["executed"] == 4
    assert [(f["asset"], f["check"], f["status"]) for f in summary["failing"]] == [
        ("anomalies", "bounded", "EXECUTION_FAILED"),
        ("windows_1m", "reconciles", "FAILED"),
    ]
    failed = summary["failing"][1]
    assert failed["severity"] == "WARN"
    assert failed["partition"] == "2026-12-07-10:00"
    assert failed["description"] == "reconciles compared 3 with 4"
    assert failed["at_ms"] == 1_765_000_000_500


def test_a_graphql_error_is_reported_not_summarized_as_all_passing() -> None:
    try:
        summarize({"errors": [{"message": "Cannot query field 'assetNodes'"}]})
    except ValueError as exc:
        assert "assetNodes" in str(exc)
    else:
        raise AssertionError("a GraphQL error must not read as zero failing checks")


def test_an_unreachable_dagster_is_unknown_with_its_address() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = asyncio.run(AssetChecks(url).get())
    assert set(result) == {"error"}
    assert url in result["error"]


def test_the_query_is_valid_against_the_installed_dagster_graphql_schema() -> None:
    """The webserver's own schema (the locked Dagster), so an upgrade that renames a field fails
    here rather than as an "unknown" strip."""
    from dagster_graphql.schema import create_schema
    from graphql import parse, validate

    from streaming.api.operator.asset_checks import QUERY

    schema = create_schema()
    errors = validate(schema.graphql_schema, parse(QUERY))
    assert errors == []
