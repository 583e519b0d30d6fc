"""Cancellation of long operations: the host passes ``cancel``, a callable polled between steps."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Cancelled", "CancelCheck", "raise_if_cancelled"]

CancelCheck = Callable[[], bool]


class Cancelled(RuntimeError):
    """Raised when the host's ``cancel()`` returned True; the operation left its inputs untouched."""


def raise_if_cancelled(cancel: CancelCheck | None, what: str) -> None:
    """Raise :class:`Cancelled` naming ``what`` if ``cancel()`` returns True (``None`` never cancels).

    A host may also raise its own exception from ``cancel()`` (ComfyUI's interrupt does); it propagates.
    """
    if cancel is not None and cancel():
        raise Cancelled(f"{what} cancelled")
