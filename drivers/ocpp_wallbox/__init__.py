"""Third-party OCPP 1.6J wallboxes as bays: the station is their central system.

``hub.build_wallboxes`` is the ``edge_station.node_hubs: ocpp`` factory (one
websockets server per ``transport = "ocpp"`` bus); ``extension.EXTENSION``
checks those buses and binds the wallboxes to the station's sessions and auth
chain. Charger quirks are data (``models.toml``).
"""
