"""How fast does a fraud alert reach a relative? on_fraud -> arrival, over real local servers.

Runs an HTTP receiver (JSON webhook) and an SMTP server (aiosmtpd) on 127.0.0.1, an
AlertService with its AlertWorker on a fresh database, and raises ``--alerts`` fraud
events one after another, each waiting until both channels have received it. Reports
p50/max latency per channel (the time a son or daughter waits, minus the internet).

    .venv/bin/python benchmarks/bench_alerts.py [--alerts 50] [--json-out results_alerts.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blocklist.store import Store
from screening.alerts import AlertService, AlertWorker
from screening.config import parse_config
from screening.notify import AppriseNotifier
from tests.support.ports import free_tcp_port as free_port
from tests.support.receivers import HttpReceiver, SmtpSink, json_url, mail_url
from tests.test_alerts import fraud_event

log = logging.getLogger("bench_alerts")
WAIT_S = 5.0


def _authenticate(*args: object) -> object:
    from aiosmtpd.smtp import AuthResult

    return AuthResult(success=True, handled=False)


def run(alerts: int) -> dict[str, object]:
    from aiosmtpd.controller import Controller

    http = HttpReceiver().start()
    sink, smtp_port = SmtpSink(), free_port()
    smtp = Controller(sink, hostname="127.0.0.1", port=smtp_port, authenticator=_authenticate,
                      auth_require_tls=False, ready_timeout=5)  # fmt: skip
    smtp.start()
    config = parse_config({"relatives": [{"name": "Taro", "notify": [json_url(http.port), mail_url(smtp_port)]}]},
                          source="bench")  # fmt: skip
    json_ms: list[float] = []
    smtp_ms: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.db") as store:
        service = AlertService(store, config, AppriseNotifier(timeout_s=WAIT_S)).open()
        worker = AlertWorker(service, poll_s=1.0)
        worker.start()
        try:
            for n in range(alerts):
                started = time.monotonic()
                service.on_fraud(fraud_event(call_id=n + 1, at=datetime.now(UTC)), "03-1234-5678")
                if not (http.wait_for("/hook", n + 1, WAIT_S) and sink.wait_for(n + 1, WAIT_S)):
                    raise RuntimeError(f"alert {n + 1} did not arrive within {WAIT_S} s")
                json_ms.append((http.received[n][2] - started) * 1000)
                smtp_ms.append((sink.messages[n][1] - started) * 1000)
        finally:
            worker.stop(5)
            service.close()
            smtp.stop()
            http.stop()
    return {
        "alerts": alerts,
        "json_webhook_ms": _summary(json_ms),
        "smtp_ms": _summary(smtp_ms),
        "threads_left": threading.active_count(),
    }


def _summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 1), "max": round(max(values), 1),
            "mean": round(statistics.fmean(values), 1)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=50)
    parser.add_argument("--json-out", type=Path, help="write the results here as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd deprecation chatter
    results = run(args.alerts)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
