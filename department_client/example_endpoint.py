"""A tiny example of a department's endpoint for the adapter (stdlib only; a demo, not a product).

    python -m department_client.example_endpoint --host 0.0.0.0 --port 8080

`POST` (any path, e.g. /appeals/inbox) takes one bus message as the adapter forwards it
and answers `{"actions": [...]}`: every assignment is signed and answered at once
(`respond`, outcome `explained`); other kinds get no actions. It deduplicates by
`X-Appeals-Message-Id` (a repeat gets the first answer again), as a real endpoint must.
`GET /health` -> 200; `GET /inbox` -> the last 100 messages received, as JSON.
"""

from __future__ import annotations

import argparse
import json
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from department_client.contract import now_iso

Answer = Callable[[dict[str, Any]], dict[str, Any]]


def example_answer(message: dict[str, Any], operator: str = "示例部门系统") -> dict[str, Any]:
    """Sign and respond to an assignment; nothing for any other kind."""
    if message.get("kind") != "assignment":
        return {"actions": []}
    now = now_iso()
    title = str(message.get("title", ""))[:100]
    reply = f"已电话联系企业，就“{title}”说明了办理流程和时限。（示例系统自动答复）"
    return {"actions": [
        {"action": "sign", "operator": operator},
        {"action": "respond", "operator": operator, "outcome": "explained", "contacted_at": now,
         "reply": reply},
    ]}


class ExampleEndpoint(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], answer: Answer) -> None:
        self.answer = answer
        self.received: deque[dict[str, Any]] = deque(maxlen=100)
        self.answers: OrderedDict[str, dict[str, Any]] = OrderedDict()  # message id -> first answer
        self.lock = threading.Lock()
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/appeals/inbox"


class _Handler(BaseHTTPRequestHandler):
    server: ExampleEndpoint

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _send(self, status: int, data: Any) -> None:
        raw = json.dumps(data, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        if self.path == "/health":
            self._send(200, {"status": "ok"})
        elif self.path == "/inbox":
            with self.server.lock:
                self._send(200, list(self.server.received))
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        try:
            length = int(self.headers.get("Content-Length") or 0)
            message = json.loads(self.rfile.read(length).decode("utf-8"))
            if not isinstance(message, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            self._send(400, {"error": str(exc)})
            return
        message_id = self.headers.get("X-Appeals-Message-Id") or str(message.get("message_id"))
        with self.server.lock:
            answer = self.server.answers.get(message_id)
            if answer is None:
                self.server.received.append(message)
                answer = self.server.answer(message)
                self.server.answers[message_id] = answer
                while len(self.server.answers) > 10_000:
                    self.server.answers.popitem(last=False)
        self._send(200, answer)


def make_server(host: str = "127.0.0.1", port: int = 0, answer: Answer | None = None,
                operator: str = "示例部门系统") -> ExampleEndpoint:
    return ExampleEndpoint((host, port), answer or (lambda message: example_answer(message, operator)))


def serve_in_thread(host: str = "127.0.0.1", port: int = 0, answer: Answer | None = None,
                    operator: str = "示例部门系统") -> tuple[ExampleEndpoint, str]:
    """Start it on a daemon thread; returns (server, its inbox URL). `server.shutdown()` stops it."""
    server = make_server(host, port, answer, operator)
    threading.Thread(target=server.serve_forever, name="example-endpoint", daemon=True).start()
    return server, server.url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m department_client.example_endpoint")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--operator", default="示例部门系统")
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port, operator=args.operator)
    print(f"example endpoint on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
