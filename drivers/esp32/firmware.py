"""Updating one node's firmware over its bus (PROTOCOL.md §5), on either transport.

:func:`update_node` runs the host's side: FW_BEGIN, the image in FW_CHUNKs
(each acknowledged and retried like any command), FW_COMMIT (the node checks
the whole image's SHA-256 and boots it on trial), then it waits for the
node's HELLO: the new version gets FW_CONFIRM and the update is done; the old
version (the bootloader rolled back) or no HELLO at all is a failure. Progress
goes to ``progress(stage, done_bytes, total_bytes)``.

The hubs call this from their ``update_firmware`` (``controller.ports.NodeFirmware``);
when a node may be updated (no car, no session) is the caller's decision.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Callable

import structlog

from controller.ports import ConnectionLost, DriverTimeout, FirmwareUpdateFailed
from drivers.esp32.engine import NodeEngine
from drivers.esp32.firmware_messages import MAX_CHUNK, FwBegin, FwChunk, FwCommit, FwConfirm
from drivers.esp32.link import CommandRejected

log = structlog.get_logger(__name__)

Progress = Callable[[str, int, int], None]

CONFIRM_TIMEOUT_S = 60  # the node rolls back a trial image not confirmed within this
BOOT_TIMEOUT_S = 30.0  # from FW_COMMIT to the node's HELLO


def _chunk(cmd_id: int, *, offset: int, data: bytes) -> FwChunk:
    return FwChunk(cmd_id, offset, data)


def _nothing(stage: str, done: int, total: int) -> None:
    pass


async def update_node(
    engine: NodeEngine,
    node_id: str,
    image: bytes,
    version: str,
    *,
    progress: Progress = _nothing,
    confirm_timeout_s: int = CONFIRM_TIMEOUT_S,
    boot_timeout_s: float = BOOT_TIMEOUT_S,
) -> None:
    """Transfer, boot and confirm ``image`` on the node; :class:`FirmwareUpdateFailed` if not."""
    engine.node(node_id)  # PermanentError for a node this hub does not drive
    line = engine.lines[node_id]
    hello = line.hello
    if hello is not None and "firmware" not in hello.capabilities:
        raise FirmwareUpdateFailed(node_id, "refused", "The node cannot take a firmware update.")
    total = len(image)
    digest = hashlib.sha256(image).digest()
    stage = "begin"
    try:
        progress("transfer", 0, total)
        await engine.command(line, lambda c: FwBegin(c, total, digest, version))
        stage = "transfer"
        for offset in range(0, total, MAX_CHUNK):
            part = image[offset : offset + MAX_CHUNK]
            await engine.command(line, functools.partial(_chunk, offset=offset, data=part))
            progress("transfer", offset + len(part), total)
        stage = "commit"
        line.hello_seen.clear()
        await engine.command(line, lambda c: FwCommit(c, confirm_timeout_s))
    except CommandRejected as exc:
        why = {
            "begin": "The node refused the image (too large, or an update is still on trial).",
            "transfer": "The node refused a part of the image.",
            "commit": "The image the node received does not match its checksum.",
        }[stage]
        raise FirmwareUpdateFailed(node_id, "refused", why) from exc
    except (DriverTimeout, ConnectionLost) as exc:
        raise FirmwareUpdateFailed(
            node_id, "transfer", f"The node stopped answering during the update ({exc})."
        ) from exc
    progress("booting", total, total)
    try:
        async with asyncio.timeout(boot_timeout_s):
            await line.hello_seen.wait()
    except TimeoutError:
        raise FirmwareUpdateFailed(
            node_id, "boot", "The node did not come back after the update."
        ) from None
    booted = line.hello.firmware if line.hello is not None else ""
    if booted != version:
        raise FirmwareUpdateFailed(
            node_id, "rolled_back", f"The new firmware did not start; the node runs {booted} again."
        )
    try:
        await engine.command(line, lambda c: FwConfirm(c))
    except (CommandRejected, DriverTimeout, ConnectionLost) as exc:
        raise FirmwareUpdateFailed(
            node_id, "confirm", "The new firmware started but could not be confirmed."
        ) from exc
    progress("installed", total, total)
    log.info("esp32.firmware_installed", node=node_id, version=version, bytes=total)
