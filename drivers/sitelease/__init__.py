"""Several stations under one site limit: the site coordinator and each station's lease client.

Both talk over the site's MQTT broker (see ``LEASES.md`` next to this file);
the logic is in :mod:`controller.load.coordinate` and :mod:`controller.load.lease`.
"""
