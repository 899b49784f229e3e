"""An NCID server: existing Network Caller ID clients (desktop pop-ups, Android, TV overlays, home
automation) see mamoru's calls unchanged. ``lines`` formats the protocol's text lines (pure);
``server`` serves them on TCP to any number of clients without ever holding up a call loop."""
