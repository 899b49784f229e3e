"""Suite-wide set-up: the markers of whole test modules (what ``scripts/test.sh --fast`` leaves out)
and the fixtures more than one module uses. Helpers live in ``tests/support``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from screening.core.model import Role
from tests.support.receivers import HttpReceiver
from tests.support.web import ADMIN, ADMIN_PW, FAMILY, FAMILY_PW, MINIMAL_CONFIG, WebRig

# Markers by module, kept here in one table rather than spread over the modules: a test module's
# cost is a property of the suite's lanes, not of what it checks. Markers are registered in
# pyproject.toml. "slow" is anything that takes tens of seconds (daemon processes, real-time
# calls, long waits), measured with --durations=0.
MODULE_MARKS: dict[str, tuple[str, ...]] = {
    "test_sip_e2e": ("sip", "asr", "slow"),
    "test_sip_hgw": ("sip", "slow"),
    "test_sip_hostile": ("sip", "slow"),
    "test_sip_flood": ("sip", "slow"),
    "test_sip_line": ("sip", "slow"),
    "test_sip_routing": ("sip", "slow"),
    "test_sipp_scenarios": ("sip", "slow"),
    "test_asr": ("asr", "slow"),
    "test_asr_engines": ("asr", "slow"),
    "test_asr_whisper": ("asr", "slow"),
    "test_voice_e2e": ("asr", "slow"),
    "test_ja_e2e": ("asr", "slow"),
    "test_web_browser": ("browser", "slow"),
    "test_stats_browser": ("browser", "slow"),
    "test_image_recipe": ("image", "slow"),
    "test_power_cut": ("image", "slow"),
    "test_e2e": ("slow",),
    "test_ncid_e2e": ("slow",),
    "test_modem_probe": ("slow",),
    "test_sip_probe": ("sip", "slow"),
    "test_alerts_e2e": ("slow",),
    "test_line_resilience": ("slow",),
    "test_number_display_e2e": ("slow",),
    "test_store_recovery": ("slow",),
    "test_web_process": ("slow",),
    "test_screen_sip": ("sip", "slow"),
    "test_screen_modem": ("slow",),
    "test_message_modem": ("slow",),
    "test_hub_ingest": ("hub", "slow"),
    "test_hub_page": ("hub", "slow"),
    "test_hub_client": ("hub", "slow"),
    "test_hub_e2e": ("hub", "slow"),
    "test_hub_commands": ("hub", "slow"),
    "test_hub_demo": ("hub", "slow"),
    "test_hub_browser": ("hub", "browser", "slow"),
    "test_relative_join": ("sip", "slow"),
    "test_relative_join_e2e": ("sip", "asr", "slow"),
}
# Parameters naming an adapter that needs a marker wherever they appear (the line contract runs
# every test on the modem, the Number Display modem and SIP).
PARAM_MARKS: dict[str, str] = {"sip": "sip"}


def pytest_configure(config: pytest.Config) -> None:
    here = Path(__file__).parent
    stale = sorted(name for name in MODULE_MARKS if not (here / f"{name}.py").exists())
    if stale:  # a renamed module would silently join the fast lane
        raise pytest.UsageError(f"tests/conftest.py MODULE_MARKS names missing modules: {stale}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module_object = getattr(item, "module", None)  # None for non-Python items
        module = module_object.__name__.rpartition(".")[2] if module_object is not None else ""
        for name in MODULE_MARKS.get(module, ()):
            item.add_marker(name)
        callspec = getattr(item, "callspec", None)
        if callspec is not None:
            for value in callspec.params.values():
                if isinstance(value, str) and value in PARAM_MARKS:
                    item.add_marker(PARAM_MARKS[value])


@pytest.fixture
def http() -> Iterator[HttpReceiver]:
    """A started HTTP receiver (ntfy / JSON webhook stand-in) on 127.0.0.1."""
    receiver = HttpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def rig_config() -> str:
    """The TOML of the ``rig`` fixture's unit (``{data}``/``{root}`` filled in); a module overrides it."""
    return MINIMAL_CONFIG


@pytest.fixture
def rig(tmp_path: Path, rig_config: str) -> Iterator[WebRig]:
    """The web page served for real over a real store in ``tmp_path`` (tests/support/web.py), no accounts yet."""
    with WebRig(tmp_path, rig_config) as web:
        yield web


@pytest.fixture
def users_rig(rig: WebRig) -> WebRig:
    """The rig with an installer and a family member in its users file."""
    rig.add_user(ADMIN, ADMIN_PW, Role.INSTALLER)
    rig.add_user(FAMILY, FAMILY_PW, Role.FAMILY)
    return rig
