"""SIPp, Debian's sip-tester: the one place the tests look for it."""

from __future__ import annotations

import shutil

import pytest


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        pytest.fail("sipp is not installed: apt-get install -y sip-tester (scripts/test.sh does this as root)")
    return path
