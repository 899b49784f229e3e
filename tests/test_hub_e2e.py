"""A real ``mamoru run`` on the virtual modem, linked to a real Mosquitto: the family blocks a caller
from the hub, and the daemon's next call from that number is blocked.

The scenario rings twice from the same unknown number with a long gap. When the first call's summary
reaches the hub, the test signs a ``block`` command as the hub would; the unit acknowledges it, and
the second call is screened with the new list entry.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocklist.store import Store
from screening.core.model import Action
from screening.hubwire import (
    AckResult,
    CallSummary,
    Channel,
    Command,
    CommandAck,
    CommandAction,
    CommandSigner,
    decode_message,
    public_key_text,
    topic,
)
from tests.support.daemon import ROOT, daemon_env
from tests.support.hub_servers import HubListener, MosquittoBroker

pytestmark = pytest.mark.timeout(180)
UNIT = "akita-0001"
CALLER = "+81355550101"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    b = MosquittoBroker.for_test(tmp_path / "broker", {UNIT: "unit-pw-e2e"})
    b.start()
    yield b
    b.stop()


def test_a_block_from_the_hub_changes_the_daemons_next_decision(tmp_path: Path, broker: MosquittoBroker) -> None:
    signer = CommandSigner.generate()
    password = tmp_path / "hub-password"
    password.write_text("unit-pw-e2e\n")
    password.chmod(0o600)
    scenario = tmp_path / "calls.toml"
    # 120 line seconds at time_scale 0.25: 30 s for the block to travel between the two calls.
    scenario.write_text('[[call]]\nnmbr = "0355550101"\nhang_up_after_s = 20\n'
                        '[[call]]\nnmbr = "0355550101"\nhang_up_after_s = 20\ngap_s = 120\n', encoding="utf-8")  # fmt: skip
    config = tmp_path / "mamoru.toml"
    config.write_text(f'''
[line]
uri = "sim:?time_scale=0.25&scenario={scenario}"

[store]
db = "{tmp_path / "unit" / "mamoru.db"}"

[recording]
dir = "{tmp_path / "unit" / "recordings"}"

[voice]
transcribe = false

[web]
enabled = false

[feeds]
update_minutes = 0

[hub]
url = "{broker.url}"
unit_id = "{UNIT}"
credentials_file = "{password}"
ca_file = "{broker.ca_file}"
command_key = "{public_key_text(signer.public)}"
''', encoding="utf-8")
    env = daemon_env(tmp_path)
    calls_topic = topic(UNIT, Channel.CALLS)
    with HubListener(broker) as hub:
        run = subprocess.Popen([sys.executable, "-m", "screening.cli", "run", "--config", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)  # fmt: skip
        try:
            (first,) = [decode_message(Channel.CALLS, p, unit=UNIT) for p in hub.wait_for(calls_topic, 1, 60)]
            assert isinstance(first, CallSummary) and first.number == CALLER and first.action is not Action.BLOCK
            block = Command(UNIT, CommandAction.BLOCK, "family:hanako", number=CALLER)
            hub.publish(topic(UNIT, Channel.COMMANDS), signer.sign(block))
            (ack,) = [decode_message(Channel.ACKS, p, unit=UNIT) for p in hub.wait_for(topic(UNIT, Channel.ACKS), 1, 20)]
            assert isinstance(ack, CommandAck) and (ack.command, ack.result) == (block.id, AckResult.DONE)
            second = decode_message(Channel.CALLS, hub.wait_for(calls_topic, 2, 90)[1], unit=UNIT)
            out, _ = run.communicate(timeout=60)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait(10)
    assert run.returncode == 0, out
    with Store(tmp_path / "unit" / "mamoru.db") as store:
        uids = {store.get_call(c.call_id).call_uid for c in (first, second)}
    assert uids == {first.id, second.id}, "a call's summary is known at the hub by the call's uid (alert links)"
    assert isinstance(second, CallSummary) and second.number == CALLER
    assert second.action is Action.BLOCK, f"the hub's block did not reach the next call:\n{out}"
