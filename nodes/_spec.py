"""Declare each node once; build a V3 ``io.ComfyNode`` or a classic V1 class from it.

A :class:`NodeSpec` holds everything ComfyUI shows (id, names, category, description, typed
inputs with defaults, limits and tooltips, outputs with tooltips) plus the ``run`` function.
:func:`build_node_class` turns it into a V3 class when ComfyUI has the V3 node API and into a
V1 class otherwise; :func:`object_info` renders the same specs as ComfyUI's ``GET
/object_info`` answer, without ComfyUI, for workflow validation.

The V3 API is imported from a versioned module, not from ``comfy_api.latest``, which ComfyUI
marks unstable (``ComfyAPI_latest.STABLE = False``). ``comfy_api.v0_0_2`` exists from the first
V3 release (0.3.48, commit 0a3d062e) to the newest sources read (0.38+, where ``v0_0_3`` and
``v0_0_1`` sit beside it) and exports ``io``, ``ui`` and ``ComfyExtension``; ``latest`` is the
fallback for a ComfyUI that dropped it. :func:`v3_api` is the one place that decides.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "Param",
    "Out",
    "NodeSpec",
    "V3_API_MODULES",
    "v3_api",
    "uses_v3",
    "build_node_class",
    "build_v1_class",
    "build_v3_class",
    "v1_input_types",
    "object_info",
]

log = logging.getLogger(__name__)

# Socket types ComfyUI draws as widgets; everything else is a link-only socket.
WIDGET_TYPES = ("INT", "FLOAT", "BOOLEAN", "COMBO")
# Names of the V3 ``io`` classes for the socket types we use (custom types go through io.Custom).
_V3_TYPES = {"INT": "Int", "FLOAT": "Float", "BOOLEAN": "Boolean", "COMBO": "Combo", "IMAGE": "Image", "MASK": "Mask"}

Options = Sequence[str] | Callable[[], Sequence[str]]


@dataclass(frozen=True)
class Param:
    """One node input. ``options`` may be a callable for lists that change (model files).

    ``advanced`` inputs are rarely changed: newer ComfyUI front ends fold them away (V3 schema
    flag ``advanced``); V1 classes list them as ordinary inputs, in the same order.
    """

    name: str
    type: str
    tooltip: str
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    round: float | None = None
    options: Options | None = None
    advanced: bool = False

    @classmethod
    def int(cls, name: str, default: int, *, lo: int, hi: int, step: int = 1, tooltip: str,
            advanced: bool = False) -> Param:
        return cls(name, "INT", tooltip, default, lo, hi, step, advanced=advanced)

    @classmethod
    def float(cls, name: str, default: float, *, lo: float, hi: float, step: float, tooltip: str,
              round: float | None = None, advanced: bool = False) -> Param:
        return cls(name, "FLOAT", tooltip, default, lo, hi, step, round, advanced=advanced)

    @classmethod
    def boolean(cls, name: str, default: bool, *, tooltip: str, advanced: bool = False) -> Param:
        return cls(name, "BOOLEAN", tooltip, default, advanced=advanced)

    @classmethod
    def combo(cls, name: str, options: Options, *, default: str | None = None, tooltip: str,
              advanced: bool = False) -> Param:
        return cls(name, "COMBO", tooltip, default, options=options, advanced=advanced)

    @classmethod
    def socket(cls, name: str, type: str, *, tooltip: str) -> Param:
        return cls(name, type, tooltip)

    def option_list(self) -> list[str]:
        options = self.options() if callable(self.options) else self.options
        return list(options or [])

    def widget_options(self) -> dict[str, Any]:
        """The V1 options dict: tooltip plus whichever of default/min/max/step/round are set."""
        keys = {"default": self.default, "min": self.min, "max": self.max, "step": self.step, "round": self.round}
        return {"tooltip": self.tooltip, **{k: v for k, v in keys.items() if v is not None}}


@dataclass(frozen=True)
class Out:
    """One node output."""

    type: str
    name: str
    tooltip: str


@dataclass(frozen=True)
class NodeSpec:
    """Everything about one node; ``run(**inputs)`` returns a tuple in ``outputs`` order."""

    node_id: str
    display_name: str
    category: str
    description: str
    inputs: tuple[Param, ...]
    outputs: tuple[Out, ...]
    run: Callable[..., tuple]
    # Optional cache key over the inputs (V1 IS_CHANGED / V3 fingerprint_inputs).
    fingerprint: Callable[..., Any] | None = None
    # Optional pre-run check (V1 VALIDATE_INPUTS / V3 validate_inputs) -> True or an error string.
    # ComfyUI skips its own list and range checks for exactly the inputs this function names.
    validate: Callable[..., bool | str] | None = None
    class_name: str = field(default="")

    def __post_init__(self) -> None:
        missing = [p.name for p in self.inputs if not p.tooltip] + [o.name for o in self.outputs if not o.tooltip]
        if not self.description or missing:
            raise ValueError(f"{self.node_id}: every node needs a description and every socket a tooltip (missing: {missing})")
        if not self.class_name:
            object.__setattr__(self, "class_name", self.node_id)


# Most stable first. v0_0_2 is in every ComfyUI with the V3 API (>= 0.3.48); latest is unstable.
V3_API_MODULES = ("comfy_api.v0_0_2", "comfy_api.latest")


def _v3_api_name() -> str | None:
    # find_spec of a submodule imports its parent package, which must exist first.
    if importlib.util.find_spec("comfy_api") is None:
        return None
    return next((name for name in V3_API_MODULES if importlib.util.find_spec(name) is not None), None)


def v3_api() -> ModuleType | None:
    """The V3 node API module this ComfyUI offers (``io``, ``ui``, ``ComfyExtension``), or None.

    Presence is tested with ``find_spec`` first and the import itself is not guarded, so a real
    error inside ComfyUI's API surfaces instead of silently falling back to V1 classes.
    """
    name = _v3_api_name()
    if name is None:
        return None
    module = importlib.import_module(name)
    missing = [attr for attr in ("io", "ComfyExtension") if not hasattr(module, attr)]
    if missing:
        raise ImportError(f"{name} lacks {missing}: this ComfyUI's V3 API is not the one this pack was written for")
    return module


def uses_v3() -> bool:
    """Whether this ComfyUI has the V3 node API (ComfyUI >= 0.3.48)."""
    return _v3_api_name() is not None


def _classmethod_named_like(function: Callable) -> classmethod:
    """``function(a, b)`` as a classmethod whose signature reads ``(cls, a, b)``.

    ComfyUI reads the parameter names of VALIDATE_INPUTS / validate_inputs with
    ``inspect.getfullargspec`` to decide which inputs it no longer checks itself; a ``**kwargs``
    wrapper would switch off its checks for every input.
    """

    @functools.wraps(function)
    def method(cls, *args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)

    signature = inspect.signature(function)
    cls_parameter = inspect.Parameter("cls", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    method.__signature__ = signature.replace(parameters=[cls_parameter, *signature.parameters.values()])
    del method.__wrapped__  # getfullargspec must see __signature__, not the wrapped function
    return classmethod(method)


def v1_input_types(spec: NodeSpec) -> dict[str, dict[str, tuple]]:
    """``INPUT_TYPES()`` of the V1 class: combos as option lists, other types by name."""
    required: dict[str, tuple] = {}
    for param in spec.inputs:
        kind: Any = param.option_list() if param.type == "COMBO" else param.type
        required[param.name] = (kind, param.widget_options())
    return {"required": required}


def build_v1_class(spec: NodeSpec) -> type:
    """A classic node class (works in every ComfyUI version)."""

    def input_types(cls) -> dict:
        return v1_input_types(spec)

    def execute(self, **inputs: Any) -> tuple:
        return tuple(spec.run(**inputs))

    namespace: dict[str, Any] = {
        "__doc__": spec.description,
        "INPUT_TYPES": classmethod(input_types),
        "RETURN_TYPES": tuple(o.type for o in spec.outputs),
        "RETURN_NAMES": tuple(o.name for o in spec.outputs),
        "OUTPUT_TOOLTIPS": tuple(o.tooltip for o in spec.outputs),
        "FUNCTION": "execute",
        "CATEGORY": spec.category,
        "DESCRIPTION": spec.description,
        "OUTPUT_NODE": False,
        "execute": execute,
        "SPEC": spec,
    }
    if spec.fingerprint is not None:
        namespace["IS_CHANGED"] = classmethod(lambda cls, **inputs: spec.fingerprint(**inputs))
    if spec.validate is not None:
        namespace["VALIDATE_INPUTS"] = _classmethod_named_like(spec.validate)
    return type(spec.class_name, (), namespace)


def _accepts_advanced(input_class: type) -> bool:
    try:
        return "advanced" in inspect.signature(input_class.__init__).parameters
    except (TypeError, ValueError):
        return False


def _v3_input(io: Any, param: Param) -> Any:
    common: dict[str, Any] = {"tooltip": param.tooltip}
    if param.advanced:
        # Newer ComfyUI: Input(..., advanced=True). 0.3.64's inputs have no such keyword, but
        # merge extra_dict into the schema, which then carries the same "advanced" flag.
        input_class = (io.Combo if param.type == "COMBO" else _v3_type(io, param.type)).Input
        common.update({"advanced": True} if _accepts_advanced(input_class) else {"extra_dict": {"advanced": True}})
    if param.type == "COMBO":
        return io.Combo.Input(param.name, options=param.option_list(), default=param.default, **common)
    if param.type in ("INT", "FLOAT"):
        numbers = {k: v for k, v in (("min", param.min), ("max", param.max), ("step", param.step)) if v is not None}
        if param.round is not None:
            numbers["round"] = param.round
        return getattr(io, _V3_TYPES[param.type]).Input(param.name, default=param.default, **numbers, **common)
    if param.type == "BOOLEAN":
        return io.Boolean.Input(param.name, default=param.default, **common)
    return _v3_type(io, param.type).Input(param.name, **common)


def _v3_type(io: Any, type_name: str) -> Any:
    return getattr(io, _V3_TYPES[type_name]) if type_name in _V3_TYPES else io.Custom(type_name)


def build_v3_class(spec: NodeSpec) -> type:
    """An ``io.ComfyNode`` subclass whose schema is built from ``spec`` on every call."""
    api = v3_api()
    if api is None:
        raise ImportError("build_v3_class: this ComfyUI has no V3 node API (comfy_api.v0_0_2 or comfy_api.latest)")
    io = api.io

    def define_schema(cls) -> Any:
        return io.Schema(
            node_id=spec.node_id,
            display_name=spec.display_name,
            category=spec.category,
            description=spec.description,
            inputs=[_v3_input(io, p) for p in spec.inputs],
            outputs=[_v3_type(io, o.type).Output(display_name=o.name, tooltip=o.tooltip) for o in spec.outputs],
        )

    def execute(cls, **inputs: Any) -> Any:
        return io.NodeOutput(*spec.run(**inputs))

    namespace: dict[str, Any] = {
        "__doc__": spec.description,
        "define_schema": classmethod(define_schema),
        "execute": classmethod(execute),
        "SPEC": spec,
    }
    if spec.fingerprint is not None:
        namespace["fingerprint_inputs"] = classmethod(lambda cls, **inputs: spec.fingerprint(**inputs))
    if spec.validate is not None:
        namespace["validate_inputs"] = _classmethod_named_like(spec.validate)
    return type(spec.class_name, (io.ComfyNode,), namespace)


def build_node_class(spec: NodeSpec) -> type:
    """V3 class where the API exists, else V1; node ids are the same either way."""
    return build_v3_class(spec) if uses_v3() else build_v1_class(spec)


def _object_info_input(param: Param, style: str) -> list:
    options = param.widget_options()
    if style == "v3" and param.advanced:
        options["advanced"] = True
    if param.type != "COMBO":
        return [param.type, options]
    if style == "v3":
        return ["COMBO", {**options, "multiselect": False, "options": param.option_list()}]
    return [param.option_list(), options]


def object_info(specs: Sequence[NodeSpec] | None = None, *, style: str = "v1",
                python_module: str | None = None) -> dict[str, dict]:
    """Our nodes as ``GET /object_info`` shows them (JSON-ready dicts keyed by node id).

    Args:
        specs: the nodes to render; None = every node of the pack.
        style: ``"v1"`` renders combos as ``[[options], {...}]`` (classic classes), ``"v3"`` as
            ``["COMBO", {"options": [...]}]`` plus the V3-only keys, as ComfyUI >= 0.3.48 does.
        python_module: what ComfyUI reports for a pack: ``custom_nodes.<folder name>``;
            None = this pack's folder name.
    """
    if style not in ("v1", "v3"):
        raise ValueError(f"style: expected 'v1' or 'v3', got {style!r}")
    if python_module is None:
        python_module = "custom_nodes." + Path(__file__).resolve().parents[1].name
    if specs is None:
        from .catalog import SPECS

        specs = SPECS
    info: dict[str, dict] = {}
    for spec in specs:
        required = {p.name: _object_info_input(p, style) for p in spec.inputs}
        entry = {
            "input": {"required": required},
            "input_order": {"required": list(required)},
            "output": [o.type for o in spec.outputs],
            "output_is_list": [False] * len(spec.outputs),
            "output_name": [o.name for o in spec.outputs],
            "output_tooltips": [o.tooltip for o in spec.outputs],
            "name": spec.node_id,
            "display_name": spec.display_name,
            "description": spec.description,
            "python_module": python_module,
            "category": spec.category,
            "output_node": False,
        }
        if style == "v3":
            entry.update(deprecated=False, experimental=False, api_node=False)
        info[spec.node_id] = entry
    return info
