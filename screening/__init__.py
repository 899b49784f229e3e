"""Caller ID model, pure screening rules, call session, config and CLI."""
