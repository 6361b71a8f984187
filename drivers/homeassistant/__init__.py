"""Home Assistant MQTT discovery: the station and each bay as devices with their entities."""
