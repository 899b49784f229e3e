"""A pjsua2 SIP caller run as a subprocess by tests: its own endpoint, its own process.

    python tests/sip_peer.py --uri sip:mamoru@127.0.0.1:5070 --from sip:0398765432@127.0.0.1 \
        [--header "Privacy: id"] [--hang-up-after 0.5] [--cancel-after 1] [--max-s 10] \
        [--play speech.wav [--play-after 2.0 | --play-after-quiet 0.8] [--hang-up-after-play 3]] \
        [--save-heard heard.wav]

Calls the URI from the given From (extra headers go on the INVITE), speaks a 440 Hz tone
once answered, and prints one JSON object on stdout: the final response code, whether it
heard 180, whether the call was answered and who ended it, and the tone bursts it heard
(start ms after answer, length ms, frequency Hz estimated from zero crossings).

With ``--play`` the caller speaks that WAV instead of the tone (any PCM WAV, converted to
8 kHz mono PCM16 with firmware.audio_format): at once when answered, ``--play-after`` seconds
after the answer, or once the announcement is over (``--play-after-quiet``: what it hears has
been loud and then quiet for that many seconds; ``--play-after`` is then the latest start).
``--hang-up-after-play`` hangs up that long after the last sample was sent. The JSON then also
has ``played_ms`` (the WAV's length once all of it was sent, else 0) and when, in seconds
after the answer, playing started and ended and the call ended (``*_s``), plus the same
moments on the wall clock (``*_wall``, time.time()) and on CLOCK_MONOTONIC (``*_mono``, one
clock for every process on the machine) so a test can order them against other processes.
``--save-heard`` writes what the caller heard after the answer as an 8 kHz WAV.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import sys
import time
import wave
from array import array
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pjsua2 as pj  # type: ignore[import-untyped]

from firmware.sip_media import FRAME_BYTES, FRAME_MS, SAMPLE_RATE, FramePort
from screening.core.audio import read_wav_pcm16, resample_pcm16

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
        index = connect_audio(self, self.port)
        if index is not None:
            self.codec = self.getStreamInfo(index).codecName


def start_endpoint(sip_port: int) -> Any:
    """A started pjsua2 endpoint on 127.0.0.1:``sip_port`` (0 = any), polled by the caller, no sound card."""
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
    transport.port = sip_port
    transport.boundAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
    ep.libStart()
    ep.audDevManager().setNullDev()
    return ep


def connect_audio(call: Any, port: FramePort) -> int | None:
    """Join the call's active audio both ways with ``port``; the media index, or None if none is up."""
    info = call.getInfo()
    for media in info.media:
        if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
            audio = call.getAudioMedia(media.index)
            audio.startTransmit(port)
            port.startTransmit(audio)
            return int(media.index)
    return None


def speech_pcm(path: str) -> bytes:
    """A WAV as what the caller sends: 8 kHz mono PCM16 (raises WavError for a bad file)."""
    pcm, rate = read_wav_pcm16(path)
    return resample_pcm16(pcm, rate, SAMPLE_RATE)


def frame_rms(frame: bytes) -> float:
    samples = array("h", frame[: len(frame) // 2 * 2])
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


def write_wav(path: str, frames: list[bytes]) -> None:
    with wave.open(path, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(b"".join(frames))


class QuietAfterLoud:
    """True once the heard audio was loud and has since been quiet for ``quiet_s`` (prompt over)."""

    def __init__(self, quiet_s: float) -> None:
        self.quiet_frames = max(1, round(quiet_s * 1000 / FRAME_MS))
        self.heard_loud = False
        self.quiet_run = 0

    def add(self, frame: bytes) -> bool:
        if frame_rms(frame) >= _LOUD:
            self.heard_loud, self.quiet_run = True, 0
        elif self.heard_loud:
            self.quiet_run += 1
        return self.done

    @property
    def done(self) -> bool:
        return self.heard_loud and self.quiet_run >= self.quiet_frames


def play_due(since_answer: float, play_after: float | None, prompt_over: QuietAfterLoud | None) -> bool:
    """Time to speak: the prompt is over, or ``play_after`` has passed (neither given: at once)."""
    if prompt_over is not None and prompt_over.done:
        return True
    if play_after is not None:
        return since_answer >= play_after
    return prompt_over is None


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
        if frame_rms(frame) >= _LOUD:
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
    parser.add_argument("--play", default=None, help="speak this WAV instead of the 440 Hz tone")
    parser.add_argument("--play-after", type=float, default=None,
                        help="seconds after answer to start --play (with --play-after-quiet: the latest start)")
    parser.add_argument("--play-after-quiet", type=float, default=None,
                        help="start --play once what we hear was loud, then quiet this many seconds")
    parser.add_argument("--hang-up-after-play", type=float, default=None,
                        help="hang up this many seconds after --play has been sent")
    parser.add_argument("--save-heard", default=None, help="write what we heard after the answer to this WAV")
    parser.add_argument("--tone-s", type=float, default=5.0, help="how long the 440 Hz 'voice' lasts (0: silent)")
    parser.add_argument("--dtmf", default="", help="digits to press (RFC 2833), one every --dtmf-every s")
    parser.add_argument("--dtmf-from", type=float, default=1.0, help="seconds after answer of the first digit")
    parser.add_argument("--dtmf-every", type=float, default=0.5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="sip_peer: %(message)s")
    speech = speech_pcm(args.play) if args.play else None
    prompt_over = QuietAfterLoud(args.play_after_quiet) if args.play_after_quiet is not None else None

    ep = start_endpoint(0)
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
    play_started: float | None = None
    play_ended: float | None = None
    hung_up_at: float | None = None
    pressed = 0
    while not call.ended and time.monotonic() - started < args.max_s:
        ep.libHandleEvents(10)
        while (frame := port.received(0)) is not None:
            if call.answered_at is not None:
                heard.append(frame)
                if prompt_over is not None:
                    prompt_over.add(frame)
        now = time.monotonic()
        if call.answered_at is not None and not spoke:
            since_answer = now - call.answered_at
            if speech is None:
                if args.tone_s > 0:
                    port.feed(tone(440, args.tone_s))
                spoke = True
            elif play_due(since_answer, args.play_after, prompt_over):
                log.info("speaking %s (%.1f s) %.2f s after the answer", args.play, len(speech) / 2 / SAMPLE_RATE,
                         since_answer)
                port.feed(speech)
                spoke, play_started = True, now
        if call.answered_at is not None and pressed < len(args.dtmf) \
                and now - call.answered_at >= args.dtmf_from + pressed * args.dtmf_every:
            call.dialDtmf(args.dtmf[pressed])
            pressed += 1
        if play_started is not None and play_ended is None and port.wait_drained(0):
            play_ended = now
        if play_ended is not None and args.hang_up_after_play is not None and not hung_up \
                and now - play_ended >= args.hang_up_after_play:
            hung_up, hung_up_at = True, now
            call.hangup(pj.CallOpParam())
        if call.answered_at is None and args.cancel_after is not None and not cancelled \
                and now - started >= args.cancel_after:
            cancelled = True
            call.hangup(pj.CallOpParam())
        if call.answered_at is not None and args.hang_up_after is not None and not hung_up \
                and now - call.answered_at >= args.hang_up_after:
            hung_up, hung_up_at = True, now
            call.hangup(pj.CallOpParam())
    ended_at = hung_up_at if hung_up_at is not None else time.monotonic()
    if not call.ended:
        call.hangup(pj.CallOpParam())
        for _ in range(50):
            ep.libHandleEvents(10)
    if args.save_heard:
        write_wav(args.save_heard, heard)
    result: dict[str, Any] = {
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
    if speech is not None:
        result.update(_timeline(call.answered_at, {"play_started": play_started, "play_ended": play_ended,
                                                   "ended": ended_at}))
        result["played_ms"] = len(speech) // 2 * 1000 // SAMPLE_RATE if play_ended is not None else 0
    ep.audDevManager().setNoDev()  # stop the bridge clock before the port goes (see FramePort)
    del call, port, account  # pjsua2 objects must go before the library
    ep.libDestroy()
    print(json.dumps(result), flush=True)
    return 0


def _timeline(answered_at: float | None, moments: dict[str, float | None]) -> dict[str, float | None]:
    """Each moment as seconds after the answer, wall-clock time and CLOCK_MONOTONIC time."""
    wall_offset = time.time() - time.monotonic()
    out: dict[str, float | None] = {"answered_mono": answered_at,
                                    "answered_wall": None if answered_at is None else answered_at + wall_offset}
    for name, at in moments.items():
        out[f"{name}_s"] = None if at is None or answered_at is None else round(at - answered_at, 3)
        out[f"{name}_mono"] = at
        out[f"{name}_wall"] = None if at is None else at + wall_offset
    return out


if __name__ == "__main__":
    sys.exit(main())
