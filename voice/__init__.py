"""Announcements, recording, speech recognition and fraud detection."""
