"""Cancellation of long operations: the host passes ``cancel``, a callable polled between steps.

``cancel()`` returns True to stop; it may also raise its own exception (ComfyUI's interrupt does),
which propagates as is. Work stops by raising :class:`Cancelled`; inputs and models are left as
they were, so the next call runs normally.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from torch import Tensor, nn

__all__ = ["Cancelled", "CancelCheck", "raise_if_cancelled", "cancel_check", "cancel_points"]

CancelCheck = Callable[[], bool]


class Cancelled(RuntimeError):
    """Raised when the host's ``cancel()`` returned True; the operation left its inputs untouched."""


def raise_if_cancelled(cancel: CancelCheck | None, what: str) -> None:
    """Raise :class:`Cancelled` naming ``what`` if ``cancel()`` returns True (``None`` never cancels)."""
    if cancel is not None and cancel():
        raise Cancelled(f"{what} cancelled")


def cancel_check(cancel: CancelCheck | None, error: type[Exception] = Cancelled) -> Callable[[], None] | None:
    """A check for :func:`cancel_points` that raises ``error`` when ``cancel()`` returns True; None
    when there is nothing to poll."""
    if cancel is None:
        return None

    def check() -> None:
        if cancel():
            raise error("cancelled")

    return check


def _layers(model: nn.Module) -> nn.Sequential:
    # LamaGenerator keeps its layers in .model, the fused FastLamaGenerator in .body.
    layers = getattr(model, "body", None)
    return layers if isinstance(layers, nn.Sequential) else model.model


@contextlib.contextmanager
def cancel_points(model: nn.Module, check: Callable[[], None] | None) -> Iterator[None]:
    """Call ``check()`` before every top-level layer of the generator, forward and backward.

    Forward: a pre-hook on each layer. Backward: each layer's output that requires grad gets a
    tensor hook, which runs when backward reaches that layer. ``check`` stops the work by
    raising; autograd propagates the exception out of ``backward()`` and drops the graph. The
    hooks are removed on exit, so the model is unchanged afterwards.
    """
    if check is None:
        yield
        return

    def before(module: nn.Module, args: tuple) -> None:
        check()

    def on_gradient(grad: Tensor) -> None:
        check()

    def after(module: nn.Module, args: tuple, output: object) -> None:
        outputs = output if isinstance(output, tuple) else (output,)
        tensor = next((t for t in outputs if isinstance(t, Tensor) and t.requires_grad), None)
        if tensor is not None:
            tensor.register_hook(on_gradient)

    handles = []
    try:
        # A module listed twice (the decoder's shared ReLU) gets its hooks once.
        for layer in {id(m): m for m in _layers(model)}.values():
            handles.append(layer.register_forward_pre_hook(before))
            handles.append(layer.register_forward_hook(after))
        yield
    finally:
        for handle in handles:
            handle.remove()
