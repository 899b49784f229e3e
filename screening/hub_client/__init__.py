"""The unit's link to a hub (issue 16): MQTT out, signed commands in, Home Assistant discovery."""
