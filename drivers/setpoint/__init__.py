"""External setpoints: an energy manager's site or per-bay limit over MQTT, Modbus TCP and HTTP.

The lease logic is pure and lives in :mod:`controller.load.external`; this
package holds only the transports and their ``[external]`` section. See
``drivers/setpoint/REGISTERS.md`` for the Modbus map and the MQTT topics.
"""
