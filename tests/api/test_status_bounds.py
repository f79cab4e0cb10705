"""What a template author writes reaches the Canary's status only in bounded form."""

from __future__ import annotations

from canaryctl.api.models import MAX_STATUS_QUERY_CHARS, MetricStatus, Verdict


def test_rendered_query_in_status_is_cut() -> None:
    long_query = "sum(up)" + " or vector(0)" * 1000
    status = MetricStatus(name="m", verdict=Verdict.PASS, query=long_query)
    assert status.query is not None and len(status.query) <= MAX_STATUS_QUERY_CHARS
    assert status.query.startswith("sum(up) or vector(0)")
    assert status.query.endswith(f"... [{len(long_query) - MAX_STATUS_QUERY_CHARS + 40} more characters]")
    assert MetricStatus(name="m", verdict=Verdict.PASS, query="up").query == "up"
    assert MetricStatus.model_validate(status.to_wire()) == status  # stable when read back
