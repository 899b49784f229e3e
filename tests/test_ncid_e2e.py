"""``mamoru run`` on the virtual modem with ``[ncid] listen``: a plain socket client (what ``nc`` or an
NCID client does) sees the calls' lines while a hundred idle, silent or garbage-sending clients
change nothing about screening."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from blocklist.store import Store
from screening.core.model import Action
from tests.support.daemon import DaemonProcess, daemon_env, finished_calls
from tests.support.ports import free_tcp_port
from tests.test_ncid import Client

SCENARIO = """
[[call]]
nmbr = "0398765432"
gap_s = 200
hang_up_after_s = 30

[[call]]
nmbr = "0662223333"
gap_s = 20
hang_up_after_s = 2
"""


def test_an_ncid_client_sees_virtual_modem_calls_while_hostile_clients_change_nothing(tmp_path: Path) -> None:
    port = free_tcp_port()
    (tmp_path / "calls.toml").write_text(SCENARIO, encoding="utf-8")
    config = tmp_path / "mamoru.toml"
    config.write_text(f'[recording]\ndir = "{tmp_path / "rec"}"\n[web]\nenabled = false\n'
                      f'[ncid]\nlisten = "127.0.0.1:{port}"\nline_id = "HOME"\n', encoding="utf-8")  # fmt: skip
    db = tmp_path / "m.db"
    daemon = DaemonProcess(["run", "--config", str(config), "--db", str(db), "--line",
                            f"sim:?time_scale=0.05&scenario={tmp_path / 'calls.toml'}&stay=1"], daemon_env(tmp_path))
    daemon.start("NCID server listening", timeout=60)
    hostile: list[socket.socket] = []
    try:
        client = Client(port)
        startup = client.until("300 ")
        assert startup[0].startswith("200 Server: mamoru (NCID)")
        # The first call rings 10 s (200 x 0.05) after start: by then these are all connected.
        for n in range(100):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if n % 10 == 0:
                s.sendall(b"\x00\xffHELLO: CMD: no_log\r\nREQ: DIAL 110\n" + bytes(range(32)) * 8)
            hostile.append(s)
        first = client.line(timeout=60)
        second = client.line(timeout=60)
        assert first.startswith("HUP: *DATE*") and "*LINE*HOME*NMBR*0398765432*" in first
        assert second.startswith("CID: *DATE*") and "*NMBR*0662223333*" in second
        with Store(db, recover_calls=False) as store:
            rows = finished_calls(store, 2, timeout=30)
        assert [row.action for row in sorted(rows, key=lambda r: r.id)] == [Action.BLOCK, Action.WARN]
        # Beyond [ncid] max_clients (32) a connection is told so and closed; freed slots serve again.
        hostile[-1].settimeout(5)
        assert hostile[-1].recv(100).startswith(b"MSG: Too many clients")
        for s in hostile:
            s.close()
        # A client connecting now gets both calls in its call log.
        late, replay = _connect_when_a_slot_is_free(port)
        assert [line.split(" ", 1)[0] for line in replay[2:6]] == ["254", "HUPLOG:", "CIDLOG:", "250"]
        late.close()
        client.close()
    finally:
        for s in hostile:
            s.close()
        daemon.stop()


def _connect_when_a_slot_is_free(port: int) -> tuple[Client, list[str]]:
    """The server notices closed clients on its next wake-up: retry while it still says it is full."""
    for _ in range(50):
        client = Client(port)
        first = client.line(timeout=10)
        if not first.startswith("MSG: Too many"):
            return client, [first, *client.until("300 ")]
        client.close()
        time.sleep(0.2)
    raise AssertionError("the NCID server stayed full after every other client left")
