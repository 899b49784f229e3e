"""A pjsua2 SIP caller run as a subprocess by tests: its own endpoint, its own process.

    python tests/sip_peer.py --uri sip:mamoru@127.0.0.1:5070 --from sip:0398765432@127.0.0.1 \
        [--header "Privacy: id"] [--hang-up-after 0.5] [--cancel-after 1] [--max-s 10]

Calls the URI from the given From (extra headers go on the INVITE), speaks a 440 Hz tone
once answered, and prints one JSON object on stdout: the final response code, whether it
heard 180, whether the call was answered and who ended it, and the tone bursts it heard
(start ms after answer, length ms, frequency Hz estimated from zero crossings).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import sys
import time
from array import array
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pjsua2 as pj  # type: ignore[import-untyped]

from firmware.sip_media import FRAME_BYTES, FRAME_MS, SAMPLE_RATE, FramePort

log = logging.getLogger("sip_peer")
_LOUD = 1500  # RMS of a frame that carries tone, not PCMU noise floor


class PeerCall(pj.Call):  # type: ignore[misc]
    def __init__(self, account: Any, port: FramePort) -> None:
        super().__init__(account)
        self.port = port
        self.rang = False
        self.answered_at: float | None = None
        self.ended = False
        self.final_code: int | None = None
        self.codec: str | None = None

    def onCallState(self, prm: Any) -> None:
        info = self.getInfo()
        if info.lastStatusCode in (180, 183):
            self.rang = True
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED and self.answered_at is None:
            self.answered_at = time.monotonic()
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.ended = True
            self.final_code = info.lastStatusCode

    def onCallMediaState(self, prm: Any) -> None:
        info = self.getInfo()
        for media in info.media:
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                audio = self.getAudioMedia(media.index)
                audio.startTransmit(self.port)
                self.port.startTransmit(audio)
                self.codec = self.getStreamInfo(media.index).codecName


def tone(freq: float, seconds: float) -> bytes:
    n = int(seconds * SAMPLE_RATE)
    return array("h", (int(8000 * math.sin(2 * math.pi * freq * i / SAMPLE_RATE)) for i in range(n))).tobytes()


def bursts(frames: list[bytes]) -> list[list[int]]:
    """[start_ms, length_ms, freq_hz] of each run of loud frames."""
    out: list[list[int]] = []
    run: list[array] = []
    start = 0
    for i, frame in enumerate([*frames, bytes(FRAME_BYTES)]):
        samples = array("h", frame[: len(frame) // 2 * 2])
        rms = math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))
        if rms >= _LOUD:
            if not run:
                start = i
            run.append(samples)
        elif run:
            joined = array("h")
            for r in run:
                joined.extend(r)
            crossings = sum(1 for a, b in itertools.pairwise(joined) if (a < 0) != (b < 0))
            freq = crossings / 2 / (len(joined) / SAMPLE_RATE)
            out.append([start * FRAME_MS, len(run) * FRAME_MS, round(freq)])
            run = []
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uri", required=True)
    parser.add_argument("--from", dest="from_uri", required=True)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--hang-up-after", type=float, default=None, help="seconds after answer")
    parser.add_argument("--cancel-after", type=float, default=None, help="seconds after INVITE, if unanswered")
    parser.add_argument("--max-s", type=float, default=15.0)
    parser.add_argument("--codec", default="PCMU/8000")
    args = parser.parse_args()

    ep = pj.Endpoint()
    ep.libCreate()
    config = pj.EpConfig()
    config.uaConfig.threadCnt = 0
    config.uaConfig.mainThreadOnly = False
    config.logConfig.level = 1
    config.logConfig.consoleLevel = 1
    config.medConfig.clockRate = SAMPLE_RATE
    config.medConfig.sndClockRate = SAMPLE_RATE
    config.medConfig.noVad = True
    ep.libInit(config)
    transport = pj.TransportConfig()
    transport.port = 0
    transport.boundAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
    ep.libStart()
    ep.audDevManager().setNullDev()
    for codec in ep.codecEnum2():
        ep.codecSetPriority(codec.codecId, 255 if codec.codecId.startswith(args.codec) else 0)
    port = FramePort()
    port.create("peer")
    port.capturing = True
    account_config = pj.AccountConfig()
    account_config.idUri = args.from_uri
    account_config.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    account = pj.Account()
    account.create(account_config)

    call = PeerCall(account, port)
    prm = pj.CallOpParam(True)
    headers = pj.SipHeaderVector()
    for raw in args.header:
        name, _, value = raw.partition(":")
        header = pj.SipHeader()
        header.hName, header.hValue = name.strip(), value.strip()
        headers.append(header)
    prm.txOption.headers = headers
    started = time.monotonic()
    call.makeCall(args.uri, prm)

    heard: list[bytes] = []
    spoke = hung_up = cancelled = False
    while not call.ended and time.monotonic() - started < args.max_s:
        ep.libHandleEvents(10)
        while (frame := port.received(0)) is not None:
            if call.answered_at is not None:
                heard.append(frame)
        now = time.monotonic()
        if call.answered_at is not None and not spoke:
            port.feed(tone(440, 5.0))
            spoke = True
        if call.answered_at is None and args.cancel_after is not None and not cancelled \
                and now - started >= args.cancel_after:
            cancelled = True
            call.hangup(pj.CallOpParam())
        if call.answered_at is not None and args.hang_up_after is not None and not hung_up \
                and now - call.answered_at >= args.hang_up_after:
            hung_up = True
            call.hangup(pj.CallOpParam())
    if not call.ended:
        call.hangup(pj.CallOpParam())
        for _ in range(50):
            ep.libHandleEvents(10)
    result = {
        "final_code": call.final_code,
        "rang": call.rang,
        "answered": call.answered_at is not None,
        "ended_by": "us" if (hung_up or cancelled or not call.ended) else "them",
        "timed_out": not call.ended,
        "codec": call.codec,
        "heard_ms": len(heard) * FRAME_MS,
        "bursts": bursts(heard),
        "elapsed_s": round(time.monotonic() - started, 2),
    }
    ep.audDevManager().setNoDev()  # stop the bridge clock before the port goes (see FramePort)
    del call, port, account  # pjsua2 objects must go before the library
    ep.libDestroy()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
