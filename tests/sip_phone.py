"""The household phone for tests: a pjsua2 answerer (an FXS port's SIP side), run as a subprocess.

    python tests/sip_phone.py --port 5070 [--answer-after 1.0] [--hang-up-after 3] [--reject 486]
        [--dtmf 1 --dtmf-after 2] [--max-s 20]

Listens on 127.0.0.1:PORT; prints ``{"ready": true}`` once listening, then for the first
INVITE: rings (180), answers after ``--answer-after`` seconds (or rejects with ``--reject``),
speaks a 660 Hz tone, presses ``--dtmf`` digits, hangs up after ``--hang-up-after`` seconds (or waits for the other side)
and prints one JSON object: the caller-ID headers it was offered, whether it answered, who
ended the call, and the tone bursts it heard (start ms after answer, length ms, frequency Hz).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pjsua2 as pj  # type: ignore[import-untyped]

from firmware.sip_headers import parse_sip_headers
from firmware.sip_media import FramePort
from tests.sip_peer import bursts, connect_audio, start_endpoint, tone


class PhoneCall(pj.Call):  # type: ignore[misc]
    def __init__(self, account: Any, call_id: int, port: FramePort) -> None:
        super().__init__(account, call_id)
        self.port = port
        self.answered_at: float | None = None
        self.ended = False
        self.final_code: int | None = None

    def onCallState(self, prm: Any) -> None:
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED and self.answered_at is None:
            self.answered_at = time.monotonic()
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.ended = True
            self.final_code = info.lastStatusCode

    def onCallMediaState(self, prm: Any) -> None:
        connect_audio(self, self.port)


class PhoneAccount(pj.Account):  # type: ignore[misc]
    def __init__(self, port: FramePort) -> None:
        super().__init__()
        self.port = port
        self.call: PhoneCall | None = None
        self.offered_at: float | None = None
        self.headers: list[tuple[str, str]] = []
        self.to_user = ""
        self.extra: list[PhoneCall] = []

    def onIncomingCall(self, prm: Any) -> None:
        call = PhoneCall(self, prm.callId, self.port)
        if self.call is not None:
            busy = pj.CallOpParam()
            busy.statusCode = 486
            call.hangup(busy)
            self.extra.append(call)
            return
        self.call = call
        self.offered_at = time.monotonic()
        message = prm.rdata.wholeMsg
        self.headers = [(n, v) for n, v in parse_sip_headers(message) if n in ("From", "P-Asserted-Identity")]
        request_uri = message.split(" ", 2)[1] if message.count(" ") >= 2 else ""
        self.to_user = request_uri.removeprefix("sip:").split("@", 1)[0]
        ringing = pj.CallOpParam()
        ringing.statusCode = 180
        call.answer(ringing)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--answer-after", type=float, default=0.5)
    parser.add_argument("--hang-up-after", type=float, default=None, help="seconds after answer")
    parser.add_argument("--reject", type=int, default=None, help="decline with this code instead of answering")
    parser.add_argument("--dtmf", default="", help="digits to press (RFC 2833) once answered")
    parser.add_argument("--dtmf-after", type=float, default=1.0, help="seconds after answer")
    parser.add_argument("--max-s", type=float, default=20.0)
    parser.add_argument("--tone-s", type=float, default=8.0, help="how long the 660 Hz 'voice' lasts")
    args = parser.parse_args()

    ep = start_endpoint(args.port)
    port = FramePort()
    port.create("phone")
    port.capturing = True
    account_config = pj.AccountConfig()
    account_config.idUri = f"sip:phone@127.0.0.1:{args.port}"
    account_config.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    account = PhoneAccount(port)
    account.create(account_config)
    print(json.dumps({"ready": True}), flush=True)

    started = time.monotonic()
    heard: list[bytes] = []
    answered = spoke = hung_up = pressed = False
    while time.monotonic() - started < args.max_s:
        ep.libHandleEvents(10)
        call = account.call
        while (frame := port.received(0)) is not None:
            if call is not None and call.answered_at is not None:
                heard.append(frame)
        if call is None:
            continue
        if call.ended:
            break
        now = time.monotonic()
        if not answered and account.offered_at is not None and now - account.offered_at >= args.answer_after:
            answered = True
            reply = pj.CallOpParam()
            reply.statusCode = args.reject or 200
            if args.reject:
                call.hangup(reply)
            else:
                call.answer(reply)
        if call.answered_at is not None and not spoke:
            port.feed(tone(660, args.tone_s))
            spoke = True
        if call.answered_at is not None and args.dtmf and not pressed and now - call.answered_at >= args.dtmf_after:
            pressed = True
            call.dialDtmf(args.dtmf)
        if call.answered_at is not None and args.hang_up_after is not None and not hung_up \
                and now - call.answered_at >= args.hang_up_after:
            hung_up = True
            call.hangup(pj.CallOpParam())
    call = account.call
    if call is not None and not call.ended:
        call.hangup(pj.CallOpParam())
        for _ in range(50):
            ep.libHandleEvents(10)
    result = {
        "offered": call is not None,
        "to": account.to_user,
        "headers": account.headers,
        "answered": call is not None and call.answered_at is not None,
        "ended_by": "us" if hung_up or (call is not None and not call.ended) else "them",
        "final_code": call.final_code if call is not None else None,
        "heard_ms": len(heard) * 20,
        "bursts": bursts(heard),
    }
    ep.audDevManager().setNoDev()  # stop the bridge clock before the port goes (see FramePort)
    del call, port
    account.call = None
    account.extra.clear()
    del account
    ep.libDestroy()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
