"""Signed feeds' settings, mapped from the app config (``[feeds]``, ``line.home_region``, ``[rules]``).

``blocklist.feeds`` takes a ``FeedSettings`` and never the app ``Config``: the daemon's
composition root, the CLI and provisioning build it here.
"""

from __future__ import annotations

from blocklist.feed_breadth import BreadthLimits
from blocklist.feeds import FeedSettings, breadth_limits
from screening.config import Config

__all__ = ["feed_limits", "feed_settings"]


def feed_settings(cfg: Config) -> FeedSettings:
    return FeedSettings(
        dir=cfg.feeds.dir,
        update_minutes=cfg.feeds.update_minutes,
        max_age_days=cfg.feeds.max_age_days,
        max_share_percent=cfg.feeds.max_share_percent,
        min_prefix_digits=cfg.feeds.min_prefix_digits,
        home_region=cfg.line.home_region,
        official_numbers=frozenset(cfg.rules.official_numbers),
    )


def feed_limits(cfg: Config) -> BreadthLimits:
    """How much one feed may block on this unit (``breadth_limits`` of its feed settings)."""
    return breadth_limits(feed_settings(cfg))
