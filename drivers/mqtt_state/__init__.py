"""The station's state and commands on its MQTT broker (and Home Assistant discovery)."""
