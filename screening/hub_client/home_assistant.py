"""Home Assistant MQTT discovery: three sensors a family that runs Home Assistant sees at once.

Discovery configs are retained under ``homeassistant/<component>/mamoru_<unit>/<object>/config``;
the states come from one retained JSON document, ``mamoru/v1/<unit>/ha``, which the sensors read
with value templates. Availability follows the unit's status topic (its last will says offline).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from screening.hubwire import PREFIX, Channel, topic

DISCOVERY_PREFIX = "homeassistant"


def state_topic(unit: str) -> str:
    return f"{PREFIX}/{unit}/ha"


def node_id(unit: str) -> str:
    return "mamoru_" + unit.replace(".", "_")


# (component, object id, Japanese name, value template, extra keys)
_SENSORS: tuple[tuple[str, str, str, str, dict[str, object]], ...] = (
    ("sensor", "last_caller", "最後の着信", "{{ value_json.last_caller }}", {"icon": "mdi:phone-incoming"}),
    ("binary_sensor", "fraud", "詐欺の疑い", "{{ value_json.fraud }}",
     {"device_class": "problem", "payload_on": "ON", "payload_off": "OFF"}),
    ("binary_sensor", "line_problem", "電話回線の異常", "{{ value_json.line_problem }}",
     {"device_class": "problem", "payload_on": "ON", "payload_off": "OFF"}),
)


def discovery_messages(unit: str) -> Iterator[tuple[str, bytes]]:
    """(config topic, retained payload) for each sensor."""
    node = node_id(unit)
    device = {"identifiers": [node], "name": f"mamoru {unit}", "manufacturer": "mamoru", "model": "call screening"}
    for component, object_id, name, template, extra in _SENSORS:
        config = {"name": name, "unique_id": f"{node}_{object_id}", "state_topic": state_topic(unit),
                  "value_template": template, "availability_topic": topic(unit, Channel.STATUS),
                  "availability_template": "{{ 'online' if value_json.online else 'offline' }}",
                  "device": device, **extra}  # fmt: skip
        yield (f"{DISCOVERY_PREFIX}/{component}/{node}/{object_id}/config",
               json.dumps(config, ensure_ascii=False).encode())  # fmt: skip


def state_document(last_caller: str | None, fraud: bool, line_problem: bool) -> bytes:
    return json.dumps({"last_caller": last_caller or "非通知", "fraud": "ON" if fraud else "OFF",
                       "line_problem": "ON" if line_problem else "OFF"}, ensure_ascii=False).encode()  # fmt: skip
