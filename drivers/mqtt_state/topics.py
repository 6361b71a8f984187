"""Topic names of the station's state, commands and events (``<p>`` = ``<prefix>/<station_id>``)::

<p>/state/availability     retained "online" / "offline" (the last will)
<p>/state/site             retained JSON: the station as a whole
<p>/state/bay/<bay_id>     retained JSON: one bay
<p>/cmd/<bay_id>/<verb>    commands: mode, start, stop, available (ACL: homeassistant)
<p>/event/command          what became of a command (JSON)
<p>/event/<kind>           notifications: session_completed, fault, ... (JSON)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str
    station_id: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.station_id}"

    @property
    def availability(self) -> str:
        return f"{self.base}/state/availability"

    @property
    def site_state(self) -> str:
        return f"{self.base}/state/site"

    def bay_state(self, bay_id: str) -> str:
        return f"{self.base}/state/bay/{bay_id}"

    def command(self, bay_id: str, verb: str) -> str:
        return f"{self.base}/cmd/{bay_id}/{verb}"

    @property
    def commands(self) -> str:
        return f"{self.base}/cmd/+/+"

    def event(self, kind: str) -> str:
        return f"{self.base}/event/{kind}"

    def parse_command(self, topic: str) -> tuple[str, str] | None:
        parts = topic.removeprefix(self.base + "/").split("/")
        if len(parts) != 3 or parts[0] != "cmd" or not topic.startswith(self.base + "/"):
            return None
        return parts[1], parts[2]
