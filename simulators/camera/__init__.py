"""Simulated QR camera: frames from generated codes or image files, and an unplug switch."""

from simulators.camera.camera import Look, SimulatedCamera, render_qr

__all__ = ["Look", "SimulatedCamera", "render_qr"]
