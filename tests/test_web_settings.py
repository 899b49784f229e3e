"""The settings pages against a real server: uvicorn on 127.0.0.1 (port 0), httpx, real config files,
a real SQLite store, the real login form, a real HTTP receiver for test alerts, real signed provisioning
bundles, and the daemon on the virtual modem picking up what the page saved on its next call.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import re
import tomllib
import wave
from array import array
from pathlib import Path
from typing import Any

import httpx
import pytest

from blocklist.store import Store
from deploy.provisioning.keys import generate_issuer_key, load_signer
from screening.config import load_config
from screening.core.model import Prompt, Role
from tests.support.receivers import HttpReceiver
from tests.support.web import (
    CONFIG,
    FAMILY_MEMBER,
    INSTALLER,
    Web,
    WebRig,
    add_family_member,
    installer_session,
    ja,
    log_in,
    new_client,
    running_web,
    write_config,
)
from voice.announcements import PromptLibrary

SECRET = "Json-S3cret-pw"
TOKEN_PATH = "hook-TOKEN-7f3k"

@pytest.fixture
def rig_config() -> str:
    return CONFIG


@pytest.fixture
def web(rig: WebRig) -> Web:
    return installer_session(rig)


def field_errors_after(html: str, field_name: str) -> list[str]:
    """The ``field-error`` messages between a field and the next label: shown next to that field."""
    start = html.index(f'name="{field_name}"')
    end = html.find("<label", start)
    chunk = html[start:end if end >= 0 else len(html)]
    return re.findall(r'<p class="field-error"[^>]*>([^<]*)</p>', chunk)


# ---- rules -----------------------------------------------------------------------------------


def test_changing_a_rule_keeps_the_comments_and_validates(web: Web) -> None:
    page = web.get("/settings")
    assert page.status_code == 200
    assert re.search(r'<option value="request_number" selected>', page.text)
    assert ja("settings.rule.withheld") in page.text and ja("settings.action.block") in page.text

    response = web.post("/settings/rules", {"withheld": "block", "voice_language": "ja"})
    assert response.status_code == 303 and response.headers["location"] == "/settings?done=saved"
    page = web.get(response.headers["location"])
    assert ja("settings.done.saved") in page.text
    assert re.search(r'name="withheld"[^>]*>\s*(<option[^>]*>[^<]*</option>\s*)*<option value="block" selected>',
                     page.text)  # fmt: skip
    text = web.config_path.read_text(encoding="utf-8")
    assert tomllib.loads(text)["rules"]["withheld"] == "block"
    assert "# what happens to a caller who hides the number" in text
    assert "# 非通知: ask them to call again with the number shown" in text
    assert load_config(web.config_path).rules.withheld.value == "block"


def test_an_invalid_rule_shows_an_error_next_to_the_field_and_changes_nothing(web: Web) -> None:
    before = web.config_path.read_bytes()
    response = web.post("/settings/rules", {"withheld": "zap", "international": "allow"})
    assert response.status_code == 400
    assert field_errors_after(response.text, "withheld") == [ja("settings.error.choice")]
    assert field_errors_after(response.text, "international") == []
    assert 'value="zap"' not in response.text  # a hostile value is never echoed into the page
    assert re.search(r'name="withheld"[^>]*>\s*(<option[^>]*>[^<]*</option>\s*)*<option value="request_number" selected>',
                     response.text)  # the select still shows what is saved  # fmt: skip
    assert web.config_path.read_bytes() == before


def test_a_form_without_the_csrf_token_is_refused(web: Web) -> None:
    before = web.config_path.read_bytes()
    response = web.client.post("/settings/rules", data={"withheld": "allow"})
    assert response.status_code == 403
    assert web.config_path.read_bytes() == before


def test_demo_settings_explain_how_to_save(tmp_path: Path) -> None:
    for web in running_web(tmp_path, None):
        page = web.get("/settings")
        assert page.status_code == 200
        assert ja("settings.demo") in page.text and "mamoru run --config" in page.text
        assert 'type="submit">' + ja("settings.save") not in page.text
        response = web.post("/settings/rules", {"withheld": "block"})
        assert response.status_code == 409 and ja("settings.error.demo") in response.text
        response = web.post("/settings/relatives", {"name": "Taro", "phone": "090-1234-5678"})
        assert response.status_code == 409


# ---- relatives ---------------------------------------------------------------------------------


def test_relative_saved_masked_tested_through_the_real_alert_path_and_removed(web: Web, http: HttpReceiver) -> None:
    url = f"json://mamoru:{SECRET}@127.0.0.1:{http.port}/{TOKEN_PATH}"
    response = web.post("/settings/relatives", {"original": "", "name": "Taro", "notify": url,
                                                "phone": "090-1234-5678", "language": ""})  # fmt: skip
    assert response.status_code == 303, response.text
    page = web.get(response.headers["location"])
    assert ja("settings.done.relative_saved") in page.text
    assert SECRET not in page.text and TOKEN_PATH not in page.text and str(http.port) not in page.text
    assert "JSON ●●●● (1)" in page.text and "090-1234-5678" in page.text
    saved = tomllib.loads(web.config_path.read_text(encoding="utf-8"))["relatives"]
    assert saved == [{"name": "Taro", "notify": [url], "phone": "090-1234-5678"}]

    # "send test" goes through the outbox and apprise to the receiver, and the page says so
    response = web.post("/settings/relatives/test", {"name": "taro"})
    assert response.status_code == 200
    assert http.wait_for(f"/{TOKEN_PATH}", timeout=10)
    assert ja("settings.relatives.test_result", name="Taro") in response.text
    assert "JSON：" + ja("settings.relatives.test_ok") in response.text
    assert SECRET not in response.text and TOKEN_PATH not in response.text

    # an edit leaving the placeholder in place keeps the stored URL; a second URL is added
    second = f"json://127.0.0.1:{http.port}/second"
    response = web.post("/settings/relatives", {"original": "Taro", "name": "Taro Yamada",
                                                "notify": f"JSON ●●●● (1)\n{second}\n", "phone": "",
                                                "language": "en"})  # fmt: skip
    assert response.status_code == 303, response.text
    saved = tomllib.loads(web.config_path.read_text(encoding="utf-8"))["relatives"]
    assert saved == [{"name": "Taro Yamada", "notify": [url, second], "language": "en"}]

    response = web.post("/settings/relatives/remove", {"name": "Taro Yamada"})
    assert response.status_code == 303
    assert "relatives" not in tomllib.loads(web.config_path.read_text(encoding="utf-8"))
    assert ja("settings.relatives.none") in web.get("/settings/relatives").text


def test_relative_mistakes_are_shown_next_to_their_fields(web: Web, http: HttpReceiver) -> None:
    good = f"json://127.0.0.1:{http.port}/ok"
    before = web.config_path.read_bytes()
    response = web.post("/settings/relatives", {"original": "", "name": "Hanako",
                                                "notify": f"{good}\nthis is not an address", "phone": "12"})
    assert response.status_code == 400
    assert field_errors_after(response.text, "notify") == [ja("settings.error.notify", line=2)]
    assert field_errors_after(response.text, "phone") == [ja("settings.error.phone")]
    assert web.config_path.read_bytes() == before

    response = web.post("/settings/relatives", {"original": "", "name": "Hanako", "notify": "", "phone": ""})
    assert response.status_code == 400
    assert field_errors_after(response.text, "notify") == [ja("settings.error.unreachable")]
    response = web.post("/settings/relatives", {"original": "", "name": "", "notify": good})
    assert field_errors_after(response.text, "name") == [ja("settings.error.name_required")]
    response = web.post("/settings/relatives", {"original": "", "name": "Ken", "notify": "x ●●●● (4)"})
    assert field_errors_after(response.text, "notify") == [ja("settings.error.notify_token", line=1)]
    response = web.post("/settings/relatives/test", {"name": "Nobody"})
    assert response.status_code == 404 and ja("settings.error.no_relative") in response.text
    response = web.post("/settings/relatives", {"original": "Nobody", "name": "X", "notify": good})
    assert response.status_code == 404
    assert web.config_path.read_bytes() == before


# ---- announcements ----------------------------------------------------------------------------


def phone_recording(seconds: float = 1.5, rate: int = 44_100, channels: int = 2, freq: float = 440.0) -> bytes:
    """What a phone's voice recorder saves: 44.1 kHz stereo 16-bit, made with the stdlib ``wave``."""
    samples = array("h")
    for i in range(int(seconds * rate)):
        value = int(12_000 * math.sin(2 * math.pi * freq * i / rate))
        samples.extend([value] * channels)
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.tobytes())
    return out.getvalue()


def upload(web: Web, path: str, data: bytes, filename: str = "voice.wav") -> httpx.Response:
    return web.client.post(path, data={"csrf_token": web.token}, files={"file": (filename, data, "audio/wav")})


def test_an_uploaded_recording_is_converted_and_used_by_the_prompt_library(web: Web) -> None:
    page = web.get("/settings/announcements")
    assert page.status_code == 200 and page.text.count("<audio") == len(Prompt)
    assert "この電話は、詐欺などの犯罪被害防止のため" in page.text  # the shipped wording is shown

    response = upload(web, "/settings/announcements/warning", phone_recording())
    assert response.status_code == 303, response.text
    cfg = load_config(web.config_path)
    assert cfg.voice.prompts_dir == web.data / "prompts"  # set on the first recording
    with wave.open(str(cfg.voice.prompts_dir / "warning.wav"), "rb") as stored:
        assert (stored.getframerate(), stored.getnchannels(), stored.getsampwidth()) == (8000, 1, 2)
        assert abs(stored.getnframes() - 12_000) <= 10  # 1.5 s at 8 kHz
    clip = PromptLibrary(cfg.voice.language.value, cfg.voice.prompts_dir).clip_for(Prompt.WARNING)
    assert clip.name == "override:warning" and abs(clip.duration_s - 1.5) < 0.01
    page = web.get("/settings/announcements?done=saved")
    assert ja("settings.done.recording_saved") in page.text
    assert ja("settings.announcements.current_household") in page.text

    audio = web.get("/settings/announcements/warning.wav")
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(audio.content), "rb") as played:
        assert played.getframerate() == 8000 and abs(played.getnframes() - 12_000) <= 10
    shipped = web.get("/settings/announcements/number_request.wav")
    assert shipped.status_code == 200 and len(shipped.content) > 20_000

    response = web.post("/settings/announcements/warning/reset")
    assert response.status_code == 303
    assert not (cfg.voice.prompts_dir / "warning.wav").exists()
    assert PromptLibrary("ja", cfg.voice.prompts_dir).clip_for(Prompt.WARNING).name == "ja:warning"


def test_a_recording_that_is_not_usable_is_refused_with_a_clear_message(web: Web) -> None:
    cases = [
        (b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(2000), "voice.mp3", "settings.error.not_wav"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt garbage", "broken.wav", "settings.error.not_wav"),
        (phone_recording(0.5, rate=1, channels=1), "slow.wav", "settings.error.bad_rate"),
        (phone_recording(31, rate=8000, channels=1), "long.wav", "settings.error.too_long"),
        (phone_recording(1.0, freq=0.0), "silent.wav", "settings.error.silent"),
    ]
    for data, name, key in cases:
        response = upload(web, "/settings/announcements/number_blocked", data, name)
        assert response.status_code == 400, name
        assert ja(key, max=30) in response.text, name
    assert load_config(web.config_path).voice.prompts_dir is None  # nothing was stored
    assert not (web.data / "prompts").exists()
    response = web.client.post("/settings/announcements/number_blocked", data={"csrf_token": web.token})
    assert response.status_code == 400 and ja("settings.error.no_file") in response.text
    assert web.get("/settings/announcements/../../etc/passwd.wav").status_code == 404
    assert web.get("/settings/announcements/nonsense.wav").status_code == 404
    assert upload(web, "/settings/announcements/nonsense", phone_recording()).status_code == 404


# ---- the installer's system page and provisioning ----------------------------------------------


def test_family_cannot_open_or_change_the_system_settings(web: Web) -> None:
    add_family_member(web)
    family = new_client(web.server)
    try:
        token = log_in(family, *FAMILY_MEMBER)
        assert family.get("/settings/system").status_code == 403
        before = web.config_path.read_bytes()
        response = family.post("/settings/system", data={"csrf_token": token, "line_uri": "modem:///dev/ttyACM0"})
        assert response.status_code == 403
        assert family.post("/settings/provision", data={"csrf_token": token}).status_code == 403
        assert web.config_path.read_bytes() == before
        page = family.get("/settings")
        assert page.status_code == 200 and 'action="/settings/rules"' in page.text
        assert 'href="/settings/system"' not in page.text
    finally:
        family.close()


def test_installer_changes_system_settings_with_errors_next_to_fields(web: Web) -> None:
    page = web.get("/settings/system")
    assert page.status_code == 200 and 'value="sim:"' in page.text
    before = web.config_path.read_bytes()
    response = web.post("/settings/system", {"line_uri": "telnet://x", "home_region": "XX", "voice_language": "ja",
                                             "keep_days": "0", "web_host": "127.0.0.1", "web_port": "port"})
    assert response.status_code == 400
    assert field_errors_after(response.text, "web_port") == [ja("settings.error.number")]
    assert web.config_path.read_bytes() == before
    response = web.post("/settings/system", {"line_uri": "telnet://x", "home_region": "XX", "voice_language": "ja",
                                             "keep_days": "0", "web_host": "127.0.0.1", "web_port": "8080"})
    assert response.status_code == 400
    assert field_errors_after(response.text, "line_uri")[0] == ja("settings.error.line_uri")
    assert field_errors_after(response.text, "home_region")[0] == ja("settings.error.region")
    assert field_errors_after(response.text, "keep_days")[0] == ja("settings.error.keep_days")
    assert web.config_path.read_bytes() == before

    response = web.post("/settings/system", {"line_uri": "modem:///dev/mamoru-modem", "home_region": "JP",
                                             "voice_language": "en", "keep_days": "30", "web_host": "0.0.0.0",
                                             "web_port": "8081"})  # fmt: skip
    assert response.status_code == 303, response.text
    cfg = load_config(web.config_path)
    assert (cfg.line.uri, cfg.voice.language.value, cfg.recording.keep_days, cfg.web.host, cfg.web.port) == (
        "modem:///dev/mamoru-modem", "en", 30, "0.0.0.0", 8081)
    assert "# what happens to a caller who hides the number" in web.config_path.read_text(encoding="utf-8")


def _bundle(tmp_path: Path, config_toml: str, installer_hash: str) -> tuple[bytes, Path]:
    from deploy.provisioning.bundle import Household, WebUser, make_bundle, new_content

    private, public = generate_issuer_key(tmp_path / "issuer", "Setagaya Police Station")
    trusted = tmp_path / "unit-keys"
    trusted.mkdir()
    (trusted / "setagaya.pub.json").write_bytes(public.read_bytes())
    content = new_content(issuer="Setagaya Police Station", household=Household("H001", "山田 花子 様"),
                          config_toml=config_toml, web_users=[WebUser(INSTALLER[0], Role.INSTALLER,
                                                                      installer_hash)])  # fmt: skip
    return make_bundle(content, load_signer(private)), trusted


def test_a_provisioning_bundle_is_applied_and_a_tampered_one_refused(web: Web, tmp_path: Path) -> None:
    from deploy.provisioning.bundle import hash_password

    new_config = CONFIG.format(data=web.data).replace('withheld = "request_number"', 'withheld = "block"')
    bundle, trusted = _bundle(tmp_path, new_config + '\n[[relatives]]\nname = "Taro"\nphone = "090-1234-5678"\n',
                              hash_password(INSTALLER[1]))  # fmt: skip
    web.ctx.issuer_keys_dir = trusted  # the keys "baked into" this test unit
    before = web.config_path.read_bytes()

    # changed after signing: "allow" every withheld call
    envelope = json.loads(bundle)
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["config_toml"] = payload["config_toml"].replace('withheld = "block"', 'withheld = "allow"')
    envelope["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    response = upload(web, "/settings/provision", json.dumps(envelope).encode(), "H001.mamoru-bundle")
    assert response.status_code == 400
    assert ja("settings.provision.refused", reason=ja("settings.refusal.bad_signature")) in response.text
    response = upload(web, "/settings/provision", b"not a bundle at all", "H001.mamoru-bundle")
    assert response.status_code == 400 and ja("settings.refusal.not_json") in response.text
    assert web.config_path.read_bytes() == before

    response = upload(web, "/settings/provision", bundle, "H001.mamoru-bundle")
    assert response.status_code == 200, response.text
    assert ja("settings.provision.applied") in response.text and "H001" in response.text
    cfg = load_config(web.config_path)
    assert cfg.rules.withheld.value == "block" and [r.name for r in cfg.relatives] == ["Taro"]
    assert (web.config_path.parent / "mamoru.toml.bak").read_bytes() == before
    users = json.loads((web.data / "web-users.json").read_text(encoding="utf-8"))
    assert [u["name"] for u in users["users"]] == [INSTALLER[0]]


# ---- the daemon picks up what the page saved ---------------------------------------------------


def test_the_reloader_applies_valid_changes_once_and_ignores_invalid_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from screening.daemon import CallSettings, ConfigReloader
    from screening.policy import policy_from_config
    from voice.announcements import ToneAnnouncements

    path = write_config(tmp_path)
    built: list[Any] = []
    changed: list[Any] = []

    def build(cfg: Any) -> CallSettings:
        built.append(cfg)
        return CallSettings(policy_from_config(cfg), ToneAnnouncements(), float(cfg.line.call_timeout_s))

    cfg = load_config(path).with_overrides(line_uri="sim:?time_scale=0.1")  # a command-line override
    reloader = ConfigReloader.for_config(cfg, build, on_change=[changed.append])
    assert reloader is not None and reloader.poll() is None and reloader.poll() is None and built == []

    path.write_text(path.read_text().replace('"request_number"', '"block"'), encoding="utf-8")
    settings = reloader.poll()
    assert settings is not None and settings.policy.withheld.value == "block"
    assert [c.rules.withheld.value for c in changed] == ["block"]
    assert changed[0].line.uri == "sim:?time_scale=0.1"  # [line] stays as the daemon started with it
    assert reloader.poll() is None and len(built) == 1  # nothing changed since

    path.write_text(path.read_text().replace("keep_days = 90", "keep_days = 0"), encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="screening.daemon"):
        assert reloader.poll() is None
    assert "recording.keep_days" in caplog.text and len(changed) == 1

    path.write_text(path.read_text().replace("keep_days = 0", "keep_days = 30"), encoding="utf-8")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="screening.daemon"):
        assert reloader.poll() is not None
    assert "after mamoru restarts: recording" in caplog.text  # retention was set up at start

    (tmp_path / "prompts").mkdir()
    path.write_text(path.read_text().replace('transcribe = false', f'transcribe = false\nprompts_dir = "{tmp_path / "prompts"}"'),
                    encoding="utf-8")  # fmt: skip
    assert reloader.poll() is not None
    (tmp_path / "prompts" / "warning.wav").write_bytes(phone_recording(0.2, rate=8000, channels=1))
    assert reloader.poll() is not None  # a new recording alone is a change too
    assert reloader.poll() is None
    assert ConfigReloader.for_config(load_config(None, env={}, system_path=tmp_path / "none"), build) is None


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_daemon_uses_settings_saved_on_the_page_from_the_next_call(web: Web, caplog: pytest.LogCaptureFixture) -> None:
    import threading

    from firmware.dialects import CADENCE_PERIOD_S, CONEXANT_CX93001, RingCadence
    from firmware.modem_line import ModemLine
    from firmware.scenarios import CallScript
    from firmware.virtual_modem import VirtualModem
    from screening.daemon import ConfigReloader, Daemon
    from screening.policy import policy_from_config
    from screening.runner import voice_settings_from_config
    from screening.session import CallSettings
    from voice.service import build_prompts

    scale = 0.05

    def call_settings(cfg: Any) -> CallSettings:  # what the runner builds for every (re)load
        return CallSettings(policy_from_config(cfg), build_prompts(voice_settings_from_config(cfg)),
                            float(cfg.line.call_timeout_s))

    cfg = load_config(web.config_path).with_overrides(db=web.ctx.store.path)
    modem = VirtualModem(CONEXANT_CX93001, RingCadence.JAPAN, scale)
    modem.start()
    store = Store(web.ctx.store.path, retry_interval=0.05, busy_timeout=0.5)
    store.open()
    line = ModemLine(str(modem.device_path), "auto", "JP", RingCadence.JAPAN,
                     ring_gap_s=1.5 * CADENCE_PERIOD_S[RingCadence.JAPAN] * scale)  # fmt: skip
    line.open()
    first = call_settings(cfg)
    daemon = Daemon(line, store, first,
                    reloader=ConfigReloader.for_config(cfg, call_settings))  # fmt: skip
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
    thread.start()

    def call(script: CallScript) -> Any:
        count = len(store.recent_calls(limit=100))
        modem.wait_for_call_end(modem.place_call(script), timeout=60)
        for _ in range(500):
            rows = store.recent_calls(limit=100)
            if len(rows) > count and rows[0].state.value == "completed":
                return rows[0]
            threading.Event().wait(0.02)
        raise AssertionError(f"no finished call row: {rows}")

    try:
        withheld = CallScript(nmbr="P", hang_up_after_s=400)
        row = call(withheld)
        assert (row.action.value, row.rule) == ("request_number", "withheld")

        assert web.post("/settings/rules", {"withheld": "block"}).status_code == 303
        row = call(withheld)
        assert (row.action.value, row.rule) == ("block", "withheld")

        assert upload(web, "/settings/announcements/warning", phone_recording()).status_code == 303
        row = call(CallScript(nmbr="0662223333", hang_up_after_s=60))
        played = [e.detail for e in store.events_for(row.id) if e.kind == "played"]
        assert row.action.value == "warn" and played[0]["clip"] == "override:warning"

        # A file broken by hand is logged and ignored: the last good settings stay in force.
        web.config_path.write_text(web.config_path.read_text(encoding="utf-8").replace('"block"', '"zap"'),
                                   encoding="utf-8")  # fmt: skip
        with caplog.at_level(logging.ERROR, logger="screening.daemon"):
            row = call(withheld)
        assert (row.action.value, row.rule) == ("block", "withheld")
        assert any("invalid" in r.getMessage() and "rules.withheld" in r.getMessage() for r in caplog.records)
    finally:
        stop.set()
        thread.join(timeout=10)
        line.close()
        modem.stop()
        store.close()
