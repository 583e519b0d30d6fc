"""The pack's one channel to the user: messages shown on the running node, and progress previews.

Every warning that changes what the user gets (empty mask, resized mask, reduced refinement,
memory fallbacks ...) goes through :func:`node_message`, so it appears on the node in the
ComfyUI front end and in the server log alike::

    from ._ui import node_message
    node_message("mask is 64x64 but the image is 512x512; resizing the mask", level="warning")

How it reaches the node: ComfyUI's progress text (``PromptServer.instance.send_progress_text(text,
node_id)``, the text the front end draws on a node), with the node id from the executing context
(``comfy_execution.utils.get_executing_context()``, ComfyUI >= 0.3.4x; older servers have
``PromptServer.instance.last_node_id``). A node shows only the latest progress text, so the
messages of one node execution are accumulated and sent together. Without a server (tests, the
command line, a ComfyUI without progress text) the message is only logged: nothing fails.

:func:`preview_image` makes the ``("JPEG", PIL image, max size)`` tuple ComfyUI's
``ProgressBar.update_absolute(value, total, preview)`` shows as the node's preview image.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor

__all__ = ["node_message", "preview_image", "LEVELS"]

log = logging.getLogger(__name__)

LEVELS = {"info": logging.INFO, "warning": logging.WARNING}
MAX_LINES = 12  # the newest lines shown on the node; the log keeps every line
DEFAULT_PREVIEW_SIZE = 512  # ComfyUI's --preview-size default

# (prompt id, node id) of the execution the lines belong to, and the lines so far. A ContextVar
# (not a global) so that two executions in different threads never mix their messages.
_LINES: ContextVar[tuple[tuple[Any, Any], tuple[str, ...]] | None] = ContextVar("lama_ffc_node_lines", default=None)


def _target() -> tuple[Any, Any, tuple[Any, Any]] | None:
    """(server, node id, execution key) of the node that is running, or None outside ComfyUI."""
    server_module = sys.modules.get("server")  # ComfyUI's server.py; imported before any node runs
    server = getattr(getattr(server_module, "PromptServer", None), "instance", None)
    if server is None or not callable(getattr(server, "send_progress_text", None)):
        return None
    utils = sys.modules.get("comfy_execution.utils")
    context = utils.get_executing_context() if utils is not None and hasattr(utils, "get_executing_context") else None
    if context is not None:
        return server, context.node_id, (context.prompt_id, context.node_id)
    node_id = getattr(server, "last_node_id", None)
    if node_id is None:
        return None
    return server, node_id, (getattr(server, "last_prompt_id", None), node_id)


def node_message(text: str, *, level: str = "info", log_it: bool = True) -> bool:
    """Show ``text`` on the node that is running and log it (``level``: "info" or "warning").

    Args:
        text: one line for the user; say what happened and what it means for the result.
        level: "warning" when the result differs from what the settings ask for.
        log_it: False when the text was already logged (e.g. a planner's notes).

    Returns:
        Whether the text reached the front end (False outside ComfyUI: then it is only logged).
    """
    if level not in LEVELS:
        raise ValueError(f"level: expected one of {tuple(LEVELS)}, got {level!r}")
    if log_it:
        log.log(LEVELS[level], "LaMa: %s", text)
    target = _target()
    if target is None:
        return False
    server, node_id, key = target
    current = _LINES.get()
    lines = current[1] if current is not None and current[0] == key else ()
    lines = (lines + (("warning: " if level == "warning" else "") + text,))[-MAX_LINES:]
    _LINES.set((key, lines))
    try:
        server.send_progress_text("\n".join(lines), node_id)
    except (RuntimeError, OSError, AttributeError) as err:  # a closed socket must not fail the node
        log.debug("LaMa: could not send progress text: %s", err)
        return False
    return True


def preview_image(image: Tensor) -> tuple[str, Any, int] | None:
    """ComfyUI's progress preview for the first image of a (B, 3, H, W) tensor in [0, 1].

    Returns ``("JPEG", PIL.Image, max side)`` (the server scales it down to ``--preview-size``),
    or None when Pillow is missing.
    """
    try:
        from PIL import Image
    except ImportError:  # ComfyUI always has Pillow; a bare library install might not
        return None
    cli_args = sys.modules.get("comfy.cli_args")
    size = getattr(getattr(cli_args, "args", None), "preview_size", None) or DEFAULT_PREVIEW_SIZE
    # Every step-th pixel first (a view), down to at most twice the preview size: converting an 8K
    # result whole would take three full-size copies (~1.8 GB) for a 512 px thumbnail.
    step = max(1, -(-max(image.shape[-2:]) // (2 * int(size))))  # ceil: the view is at most 2x the size
    shown = image[0, :, ::step, ::step].detach()
    pixels = (shown.float().clamp(0, 1).permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()
    return "JPEG", Image.fromarray(pixels), int(size)
