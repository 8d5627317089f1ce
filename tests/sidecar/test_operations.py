"""Operations: health, readiness, Prometheus metrics."""

from __future__ import annotations

import httpx

from tests.conftest import DOC, GOOGLEBOT
from tests.servers import run_sidecar


async def test_health_ready_and_prometheus_metrics(upstream_url, make_settings):
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url)
    async with run_sidecar(settings) as (url, app):
        async with httpx.AsyncClient(base_url=url) as c:
            health = await c.get("/_trackside/health")
            ready = await c.get("/_trackside/ready")
            for _ in range(3):
                await c.get("/p/a1", headers=DOC)
            await c.get("/_next/static/x.js", headers={"user-agent": DOC["user-agent"]})
            await c.get("/p/a1", headers={"user-agent": GOOGLEBOT, "accept": "text/html"})
            await app.pipeline.flusher.flush()
            text = (await c.get("/_trackside/metrics", headers={"accept": "text/plain;version=0.0.4"})).text
            as_json = (await c.get("/_trackside/metrics")).json()
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200 and ready.json()["ready"] is True
    lines = set(text.splitlines())
    assert "trackside_requests_total 5.0" in lines
    assert "trackside_events_captured_total 3.0" in lines
    assert "trackside_events_written_total 3.0" in lines
    assert "trackside_bot_hits_total 1.0" in lines
    assert 'trackside_skipped_total{reason="asset"} 1.0' in lines
    assert "trackside_events_buffered 0.0" in lines
    # Per route prefix and upstream (one route here: the frontend's "/"), and by status class.
    upstream = f'route="/",upstream="{upstream_url}"'
    assert f"trackside_upstream_seconds_count{{{upstream}}} 5.0" in lines
    assert f'trackside_upstream_responses_total{{route="/",status="2xx",upstream="{upstream_url}"}} 5.0' in lines
    assert as_json["events_captured"] == 3
    assert as_json["requests"] == 5
