"""``kubectl canary report`` against a Prometheus that answers badly: a real HTTP server on loopback that
sends an endless body or something that is not a range query answer. The report stops with one line
naming Prometheus, never a traceback, and never reads more than its cap."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from canaryctl.cli import report_cmd
from canaryctl.cli.kube import CommandError

CHUNK = b"x" * 65536


class Answers(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        if self.server.mode == "endless":  # type: ignore[attr-defined]
            for _ in range(4 * report_cmd.MAX_ANSWER_BYTES // len(CHUNK)):  # bounded: 4x the cap
                try:
                    self.wfile.write(CHUNK)
                except OSError:  # the client hung up, as it should
                    return
        else:
            self.wfile.write(b'{"status": "success", "data": {"result": [{"values": "no"}]}}')

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture()
def prometheus(request: pytest.FixtureRequest) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    server.mode = request.param  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize("prometheus", ["endless"], indirect=True)
def test_an_endless_answer_stops_at_the_cap(prometheus: str) -> None:
    now = datetime.now(UTC)
    with httpx.Client(timeout=30) as client, pytest.raises(CommandError) as failed:
        report_cmd.Prometheus(prometheus, now - timedelta(hours=1), now).series(client, "up")
    assert (
        str(failed.value)
        == f"prometheus {prometheus}: answer larger than {report_cmd.MAX_ANSWER_BYTES} bytes"
    )


@pytest.mark.parametrize("prometheus", ["malformed"], indirect=True)
def test_an_answer_that_is_not_a_matrix_is_one_line(prometheus: str) -> None:
    now = datetime.now(UTC)
    with httpx.Client(timeout=30) as client, pytest.raises(CommandError) as failed:
        report_cmd.Prometheus(prometheus, now - timedelta(hours=1), now).series(client, "up")
    assert str(failed.value).startswith(f"prometheus {prometheus}: not a range query answer")
