"""Provisioning bundles: a household's whole setup, signed by the issuing office.

``bundle`` (format, sign, verify), ``keys`` (issuer key files), ``apply`` (applying
a bundle on the unit), ``bulk`` (one bundle and one printed sheet per row of a
households CSV), ``sheet`` (the printed HTML sheet with the web login QR code), the
commands are ``mamoru provision ...`` (screening/cli/provision.py).
See docs/provisioning.md.
"""
