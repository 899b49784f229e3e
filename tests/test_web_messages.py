"""A message the caller left (screen flow) on the call page and in the call log, served like recordings."""

from __future__ import annotations

from pathlib import Path

import pytest

from blocklist.store import Store
from screening.core.audio import wav_bytes
from screening.core.model import CallerID, EventKind
from tests.support.web import SITE_CONFIG, WebRig, make_form_accounts, signed_in
from voice.asr import Segment, Word
from voice.detector import PhrasePack
from voice.pipeline import VoiceService

pytestmark = pytest.mark.timeout(120)

RATE = 8000


@pytest.fixture
def rig_config() -> str:
    return SITE_CONFIG


@pytest.fixture
def site(rig: WebRig) -> WebRig:
    return make_form_accounts(rig)


def call_with_message(store: Store, recordings: Path, path: str | None, number: str = "0120444555") -> int:
    """A screened call through the real voice pipeline: a name, then a fraud message after the tone."""
    call_id = store.begin_call("sim", CallerID(raw_number=number, number_e164=f"+81{number[1:]}"))
    voice = VoiceService(store=store, recordings_dir=recordings, pack=PhrasePack.load("ja"), model=None)
    audio = voice.start_call(call_id)
    audio.received(b"\x10\x00" * RATE * 10)  # 10 s of the caller's side
    for text, start, end in [("山田 です", 0.5, 1.5), ("息子 だけど 暗証番号 を 教えて", 6.5, 9.5)]:
        audio.add_segment(Segment(text, start, end, (Word(text.split()[0], start, start + 0.4, 1.0),)))
    store.add_event(call_id, EventKind.MESSAGE, seconds=3.4, speech_s=3.0, path=path)
    audio.finish()
    store.finish_call(call_id, "caller_hung_up")
    return call_id


def test_message_is_played_on_the_call_page_and_marked_in_the_log(site: WebRig) -> None:
    messages = site.recordings() / "messages"
    messages.mkdir(parents=True)
    plain = call_with_message(site.store, site.recordings(), None, "0120111222")  # no message: contrast
    quiet = site.store.begin_call("sim", CallerID(raw_number="0312345678", number_e164="+81312345678"))
    site.store.finish_call(quiet, "caller_hung_up")
    call_id = call_with_message(site.store, site.recordings(), "")
    wav = wav_bytes(b"\x00\x10" * RATE * 3, RATE)
    target = messages / f"message-{call_id}.wav"
    target.write_bytes(wav)
    site.store.add_event(call_id, EventKind.MESSAGE, seconds=3.4, path=str(target))  # as the screen flow writes it
    with signed_in(site) as client:
        page = client.get(f"/calls/{call_id}").text
        assert f'<audio controls preload="metadata" src="/calls/{call_id}/message">' in page
        assert "相手が残した伝言を聞く" in page and "3秒" in page
        message_part = page.split('id="message"')[1].split("calls.section.transcript")[0]
        section = message_part.split("<h2>")[0]
        assert '<mark class="flag">暗証番号</mark>' in section and "山田" not in section
        whole = client.get(f"/calls/{call_id}/message")
        assert whole.status_code == 200 and whole.content == wav and whole.headers["content-type"] == "audio/wav"
        part = client.get(f"/calls/{call_id}/message", headers={"Range": "bytes=0-43"})
        assert part.status_code == 206 and part.content == wav[:44]
        log_page = client.get("/calls").text
        rows = {int(chunk.split('"')[0]): chunk for chunk in log_page.split('<a href="/calls/')[1:]}
        assert "📩" in log_page and "伝言あり" in log_page
        assert log_page.count("📩") == 2  # the two calls with a MESSAGE event, not the quiet one
        assert quiet in rows
        assert client.get(f"/calls/{quiet}/message").status_code == 404
        no_file = client.get(f"/calls/{plain}").text
        assert "音声ファイルは保存されていません" in no_file and f"/calls/{plain}/message" not in no_file
    with site.client() as anonymous:
        response = anonymous.get(f"/calls/{call_id}/message")
        assert response.status_code == 303 and response.headers["location"].startswith("/login")


@pytest.mark.parametrize("hostile", ["../../secret.wav", "{secret}", "message-link.wav", "../message-9.wav",
                                     "messages/../../secret.wav", "message-1.txt"])
def test_a_message_path_outside_the_messages_dir_is_not_served(site: WebRig, tmp_path: Path, hostile: str) -> None:
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"RIFF not yours")
    messages = site.recordings() / "messages"
    messages.mkdir(parents=True)
    (messages / "message-link.wav").symlink_to(secret)
    (site.recordings() / "message-9.wav").write_bytes(b"RIFF beside, not inside")
    (messages / "message-1.txt").write_bytes(b"not a wav")
    call_id = call_with_message(site.store, site.recordings(), hostile.format(secret=secret))
    with signed_in(site) as client:
        assert client.get(f"/calls/{call_id}/message").status_code == 404
        page = client.get(f"/calls/{call_id}").text
        assert "/message\"" not in page and "音声ファイルは保存されていません" in page
