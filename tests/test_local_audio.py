"""Household speaker and line tap through a real PortAudio + ALSA stack, without a sound card.

Each audio test runs in a subprocess whose ``HOME`` holds an ``.asoundrc``:
alsa-lib reads it when PortAudio initialises, and PortAudio initialises once per
process, so the environment must be set before ``sounddevice`` is imported.
ALSA's ``file`` plugin records what PortAudio pushed (as a WAV, so the
negotiated rate and format are in the header) or feeds a known file as capture
input; the ``null`` plugin stands in for a card.

None of this proves sound comes out of a real speaker or in from a real
recording adapter, nor real-time pacing: ALSA's null device runs as fast as the
CPU allows.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
import wave
from pathlib import Path
from typing import Any

import pytest

from screening.core.audio import resample_pcm16
from screening.core.line import AudioClip
from screening.core.model import Prompt
from voice import local_audio
from voice.announcements import PromptLibrary
from voice.local_audio import (
    HouseholdSpeaker,
    LineTap,
    LocalAudioError,
    normalise_device,
)

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 60.0



def _missing_audio_stack() -> str | None:
    """Why the real-stream tests cannot run here, or None."""
    if ctypes.util.find_library("portaudio") is None:
        return "PortAudio not installed: apt install libportaudio2 (Debian package)"
    if importlib.util.find_spec("sounddevice") is None:
        return "sounddevice not installed: pip install 'mamoru[voice]'"
    return None


_MISSING = _missing_audio_stack()
needs_portaudio = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")


def _alsa_home(tmp_path: Path, *, capture_from: Path | None = None) -> Path:
    """A HOME whose ALSA default device records playback to tmp/out.wav (and captures capture_from)."""
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "out.wav"
    infile = f'infile "{capture_from}"' if capture_from else ""
    (home / ".asoundrc").write_text(textwrap.dedent(f"""\
        pcm.!default {{ type plug slave.pcm "tap" }}
        pcm.tap {{ type file slave.pcm "nullout" file "{out}" {infile} format "wav" }}
        pcm.nullout {{ type null }}
        pcm.silent {{ type plug slave.pcm "nullout" }}
    """))
    return home


def _run(home: Path, script: str, *args: str) -> Any:
    """Run ``script`` with that HOME in a fresh interpreter; its last stdout line is JSON."""
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("ALSA_CONFIG_PATH", None)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _recorded(tmp_path: Path) -> tuple[wave._wave_params, bytes]:
    with wave.open(str(tmp_path / "out.wav"), "rb") as wav:
        return wav.getparams(), wav.readframes(wav.getnframes())


_PLAY = """
    import json, sys, time
    import sounddevice as sd
    from screening.core.model import Prompt
    from voice.announcements import PromptLibrary
    from voice.local_audio import HouseholdSpeaker
    if sys.argv[1] == "refuse-8k":  # a device that, like many USB speakers, only takes 44.1/48 kHz
        real = sd.check_output_settings
        def refuse(**kw):
            if kw.get("samplerate") == 8000:
                raise sd.PortAudioError("Invalid sample rate")
            return real(**kw)
        sd.check_output_settings = refuse
    clip = PromptLibrary("en").clip_for(Prompt.NUMBER_BLOCKED)
    start = time.monotonic()
    HouseholdSpeaker(None).play(clip, timeout=clip.duration_s + 10)
    print(json.dumps({"seconds": time.monotonic() - start}))
"""


@needs_portaudio
def test_speaker_pushes_the_clip_through_portaudio(tmp_path: Path) -> None:
    """Proves: play() opens a real PortAudio output stream on the ALSA default device at the
    clip's 8 kHz, mono, 16-bit, and every sample of the clip reaches ALSA unchanged and in order,
    followed only by silence. Does not prove: audible sound, or real-time pacing (null device)."""
    home = _alsa_home(tmp_path)
    _run(home, _PLAY, "plain")
    clip = PromptLibrary("en").clip_for(Prompt.NUMBER_BLOCKED)
    params, frames = _recorded(tmp_path)
    assert (params.nchannels, params.sampwidth, params.framerate) == (1, 2, 8000)
    assert frames[: len(clip.pcm16)] == clip.pcm16
    assert not any(frames[len(clip.pcm16):])


@needs_portaudio
def test_speaker_resamples_when_the_device_refuses_8khz(tmp_path: Path) -> None:
    """Proves: when PortAudio refuses 8 kHz, play() opens the stream at the device's default rate
    (44.1 kHz here, as ALSA recorded it) and pushes the clip resampled to that rate. Does not prove:
    that a real USB speaker refuses 8 kHz the same way (the refusal is injected in check_output_settings)."""
    home = _alsa_home(tmp_path)
    _run(home, _PLAY, "refuse-8k")
    clip = PromptLibrary("en").clip_for(Prompt.NUMBER_BLOCKED)
    params, frames = _recorded(tmp_path)
    assert (params.nchannels, params.sampwidth) == (1, 2) and params.framerate != 8000
    expected = resample_pcm16(clip.pcm16, 8000, params.framerate)
    assert frames[: len(expected)] == expected
    assert not any(frames[len(expected):])


_TAP = """
    import json, sys, time
    from voice.local_audio import LineTap
    chunks, failed = [], []
    def sink(pcm):
        if not failed:  # the first delivery fails: the tap must keep going
            failed.append(True)
            raise RuntimeError("sink bug")
        chunks.append(pcm)
    tap = LineTap(sys.argv[1] or None)
    tap.start(sink)
    deadline = time.monotonic() + 5
    while sum(map(len, chunks)) < 2 * 8000 and time.monotonic() < deadline:
        time.sleep(0.01)
    start = time.monotonic()
    tap.stop()
    stopped = time.monotonic() - start
    print(json.dumps({"rate": tap.device_rate, "sizes": sorted({len(c) for c in chunks}),
                      "bytes": sum(map(len, chunks)), "stop_s": stopped, "running": tap.running,
                      "head": b"".join(chunks)[:3200].hex()}))
"""


@needs_portaudio
def test_line_tap_delivers_frames_from_the_null_device(tmp_path: Path) -> None:
    """Proves: LineTap opens a real PortAudio input stream at 8 kHz on an ALSA null device, the
    callback/queue/thread path hands the sink 20 ms blocks of 16-bit mono (320 bytes) until at
    least one second of audio has arrived within the timeout, a failing sink does not stop
    delivery, and stop() returns promptly even while the device floods us. Does not prove:
    real-time pacing, or silence -- alsa-lib's null capture returns whatever is in the buffer."""
    home = _alsa_home(tmp_path)
    result = _run(home, _TAP, "silent")
    assert result["rate"] == 8000
    assert result["sizes"] == [320]
    assert result["bytes"] >= 16000
    assert result["stop_s"] < 3 and not result["running"]


@needs_portaudio
def test_line_tap_delivers_the_captured_samples_in_order(tmp_path: Path) -> None:
    """Proves: the bytes ALSA captured (fed from a known file by the `file` plugin) reach the sink
    unaltered and in order. Does not prove: anything about a real recording adapter's levels."""
    pattern = b"".join(((i * 37) % 4000 - 2000).to_bytes(2, "little", signed=True) for i in range(16000))
    feed = tmp_path / "line.raw"
    feed.write_bytes(pattern)
    home = _alsa_home(tmp_path, capture_from=feed)
    result = _run(home, _TAP, "")
    head = bytes.fromhex(result["head"])
    # the first block went to the failing sink; the rest follow it exactly
    assert head == pattern[320 : 320 + len(head)] and len(head) == 3200


@needs_portaudio
def test_unknown_device_is_a_clear_error(tmp_path: Path) -> None:
    """Proves: a device name PortAudio does not know gives LocalAudioError listing the devices
    that do exist, for both speaker and tap. Does not prove: behaviour when a device vanishes mid-play."""
    script = """
        import json
        from screening.core.line import AudioClip
        from voice.local_audio import HouseholdSpeaker, LineTap, LocalAudioError
        errors = []
        for attempt in (lambda: HouseholdSpeaker("no-such-speaker").play(AudioClip("x", bytes(16)), 1.0),
                        lambda: LineTap("no-such-adapter").start(lambda pcm: None)):
            try:
                attempt()
            except LocalAudioError as exc:
                errors.append(str(exc))
        print(json.dumps(errors))
    """
    errors = _run(_alsa_home(tmp_path), script)
    assert len(errors) == 2
    assert "no-such-speaker" in errors[0] and "default" in errors[0]
    assert "no-such-adapter" in errors[1] and "input" in errors[1]


# ---- without PortAudio streams ----------------------------------------------------


class _Finder:
    """Import hook that fails like sounddevice does when libportaudio.so.2 is missing."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "sounddevice":
            raise OSError("PortAudio library not found")


def test_missing_portaudio_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proves: the error a user sees without PortAudio says which package to install."""
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_Finder(), *sys.meta_path])
    with pytest.raises(LocalAudioError, match="libportaudio2"):
        HouseholdSpeaker(None).play(AudioClip("x", bytes(16)), 1.0)


def test_missing_sounddevice_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(LocalAudioError, match=r"mamoru\[voice\]"):
        LineTap(None).start(lambda pcm: None)


class _StalledStream:
    """An output stream whose buffer never drains, like a wedged USB audio device."""

    latency = 0.05
    samplerate = 8000
    write_available = 0

    def __init__(self) -> None:
        self.aborted = False

    def start(self) -> None: ...

    def write(self, data: bytes) -> None:
        raise AssertionError("must not write into a full buffer")

    def abort(self, ignore_errors: bool = True) -> None:
        self.aborted = True


def test_stalled_speaker_gives_up_at_the_deadline() -> None:
    """Proves: play's write loop honours its deadline and aborts the stream when the device
    never accepts data. Does not prove: a real ALSA device stalls this way (fake stream)."""
    stream = _StalledStream()
    start = time.monotonic()
    with pytest.raises(LocalAudioError, match="did not finish in time"):
        HouseholdSpeaker._write_all(stream, bytes(16000), time.monotonic() + 0.2, "warning")
    assert 0.15 < time.monotonic() - start < 2 and stream.aborted


@pytest.mark.parametrize(("given", "expected"), [("", None), ("  ", None), ("3", 3), ("USB Audio", "USB Audio"),
                                                  (None, None), (2, 2)])
def test_config_device_strings(given: str | int | None, expected: str | int | None) -> None:
    assert normalise_device(given) == expected


def test_constructors_do_no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proves: building the objects never touches PortAudio (the daemon builds them at start-up)."""
    monkeypatch.setattr(local_audio, "load_sounddevice", lambda: pytest.fail("I/O in a constructor"))
    HouseholdSpeaker("USB")
    LineTap("2")
