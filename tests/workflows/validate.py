"""Check ComfyUI workflow files against node schemas, without running ComfyUI.

A workflow may be in the editor (UI) format the front end saves and the template browser loads,
or in the API prompt format that ``POST /prompt`` executes. Core nodes are checked against a
real server's ``/object_info`` (by default ``../shared/comfyui/object_info-0.3.64.json`` next to
the repository, or ``$LAMA_OBJECT_INFO``); this pack's nodes against its own schema export
(what ``python -m lama_multiscale_refine.nodes`` prints). Run from the repository root::

    python3 -m tests.workflows.validate workflows/my_new_workflow.json
    python3 -m tests.workflows.validate --to-api workflows/lama_inpaint.json > workflows/api/lama_inpaint.json

Each problem is one line naming the file, the node and the input, e.g.
``workflows/x.json: node 7 (KSampler) input 'denoise': 1.5 is above the maximum 1.0``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

__all__ = [
    "CORE_OBJECT_INFO", "InputSpec", "Node", "check_api", "check_file", "check_nodes", "check_ui", "input_specs",
    "is_ui_format", "load_schemas", "read_api", "read_ui", "types_match", "ui_to_api", "widget_slots",
]

REPO = Path(__file__).resolve().parents[2]
CORE_OBJECT_INFO = Path(os.environ.get("LAMA_OBJECT_INFO", REPO.parent / "shared" / "comfyui" / "object_info-0.3.64.json"))

# Implemented by the front end itself: never sent to the server, so they have no schema.
FRONTEND_ONLY = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
# A reference server without model files offers no model names; such values may be missing there.
MODEL_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
TITLE_HEIGHT = 30  # the front end draws a node's title bar above its pos

# What the front end records in a node's properties to name its pack (ComfyUI_frontend:
# WorkflowMetadataExtension writes them; getCnrIdFromProperties and useWorkflowPacks read them for
# the missing-nodes dialog and the Manager's "install missing"). Core nodes carry "comfy-core".
CORE_PACK = "comfy-core"
CNR_ID = re.compile(r"^[A-Za-z0-9_-]+$")  # the front end's workflow schema rejects anything else
SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$")

# Kinds of widgets_values entries (see widget_slots).
VALUE, CONTROL, UPLOAD = "value", "control_after_generate", "upload"


def pack_identity(pyproject: Path = REPO / "pyproject.toml") -> tuple[str, str]:
    """(registry name, version) of this pack, from pyproject.toml's [project]."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    return project["name"], project["version"]


def load_schemas(core: Path = CORE_OBJECT_INFO, style: str = "v1") -> dict[str, dict]:
    """Core node schemas from the ``/object_info`` JSON ``core`` plus this pack's, by node class.

    ``style`` picks the pack's combo layout: v1 ``[[options], {...}]`` or v3 ``["COMBO",
    {"options": [...]}]``. The pack's own export wins over entries ``core`` may have for it.
    """
    tests_dir = str(Path(__file__).resolve().parents[1])
    if tests_dir not in sys.path:  # `python3 -m tests.workflows.validate` from the repository root
        sys.path.insert(0, tests_dir)
    from pack_import import import_pack_module

    schemas = json.loads(Path(core).read_text(encoding="utf-8"))
    schemas.update(import_pack_module("nodes._spec").object_info(style=style))
    return schemas


@dataclass(frozen=True)
class InputSpec:
    """One declared input of a node class."""

    name: str
    type: str  # "COMBO" for a list of choices
    options: dict
    required: bool
    choices: tuple = ()

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.options.get("forceInput")

    @property
    def has_control(self) -> bool:
        """Whether the front end stores a control_after_generate value after this widget."""
        flag = self.options.get("control_after_generate")
        if flag is None:  # the front end's own rule for INT widgets it was not told about
            return self.type == "INT" and self.name in ("seed", "noise_seed")
        return bool(flag)


def input_specs(schema: dict) -> list[InputSpec]:
    """A node class's inputs in the front end's widget order: required, then optional."""
    specs = []
    for group in ("required", "optional"):
        declared = schema.get("input", {}).get(group, {})
        for name in schema.get("input_order", {}).get(group, list(declared)):
            kind, options = declared[name][0], dict(declared[name][1]) if len(declared[name]) > 1 else {}
            if isinstance(kind, list):
                specs.append(InputSpec(name, "COMBO", options, group == "required", tuple(kind)))
            elif kind == "COMBO":
                specs.append(InputSpec(name, "COMBO", options, group == "required", tuple(options.get("options", ()))))
            else:
                specs.append(InputSpec(name, kind, options, group == "required"))
    return specs


def widget_slots(schema: dict) -> list[tuple[str, InputSpec | None]]:
    """What each entry of a UI node's ``widgets_values`` holds, as ``(kind, input)``.

    Widgets come in schema order (linked ones keep their entry); a seed-like widget is followed
    by its control_after_generate value ("randomize", ...); a file loader ends with the upload
    button's value ("image"). The count must match exactly: a file saved before an input was
    added lacks its value (the front end would use the default), so it has to be saved again.
    """
    specs = input_specs(schema)
    slots: list[tuple[str, InputSpec | None]] = []
    for spec in specs:
        if spec.is_widget:
            slots.append((VALUE, spec))
            if spec.has_control:
                slots.append((CONTROL, spec))
    if any(key.endswith("_upload") and flag is True for spec in specs for key, flag in spec.options.items()):
        slots.append((UPLOAD, None))  # image_upload, video_upload, ...
    return slots


def types_match(given: str, expected: str) -> bool:
    """ComfyUI's rule: ``*`` matches anything; comma-separated types match if they share one."""
    if "*" in (given, expected):
        return True
    return bool({t.strip() for t in given.split(",")} & {t.strip() for t in expected.split(",")})


def _output_types(schema: dict) -> list[str]:
    return ["COMBO" if isinstance(t, list) else t for t in schema.get("output", [])]


@dataclass
class Node:
    """A node of either format, reduced to what the checks need."""

    id: str
    class_type: str
    title: str | None = None
    values: dict[str, Any] = field(default_factory=dict)  # widget values by input name
    links: dict[str, tuple[str, int, str | None]] = field(default_factory=dict)  # input -> (source id, slot, link type)
    output_types: list[str] | None = None  # as the UI file declares them (used for front-end-only nodes)
    widgets_read: bool = True  # False when widgets_values could not be matched to the inputs
    active: bool = True  # UI mode 0; muted (2) and bypassed (4) nodes do not run

    @property
    def where(self) -> str:
        return f"node {self.id} ({self.class_type})"


def _pair(value: Any) -> tuple[float, float]:
    # Older files store pos and size as {"0": x, "1": y}.
    return (value["0"], value["1"]) if isinstance(value, dict) else (value[0], value[1])


def _read_widgets(raw: dict, schema: dict, where: str, problems: list[str]) -> dict[str, Any] | None:
    values = raw.get("widgets_values") or []
    slots = widget_slots(schema)
    if isinstance(values, dict):  # a few node types save their widgets by name
        return {spec.name: values[spec.name] for kind, spec in slots if kind == VALUE and spec.name in values}
    # Files saved before the upload button existed lack its trailing value.
    if len(values) != len(slots) and not (slots and slots[-1][0] == UPLOAD and len(values) == len(slots) - 1):
        names = ", ".join(kind if spec is None or kind == CONTROL else spec.name for kind, spec in slots)
        problems.append(f"{where}: widgets_values has {len(values)} values, expected {len(slots)} ({names})")
        return None
    named = {}
    for (kind, spec), value in zip(slots, values):
        if kind == VALUE:
            named[spec.name] = value
        elif kind == CONTROL and not (value in CONTROL_VALUES or isinstance(value, bool)):
            problems.append(f"{where} input '{spec.name}': control_after_generate value {value!r} is not one of "
                            f"{sorted(CONTROL_VALUES)}")
    return named


def _check_ui_links(workflow: dict, nodes: dict[int, dict], problems: list[str]) -> dict[int, list]:
    """Check that ``links`` and the nodes' inputs/outputs describe the same connections."""
    links: dict[int, list] = {}
    for link in workflow.get("links", []):
        if not (isinstance(link, list) and len(link) == 6):
            problems.append(f"link {link!r}: expected [id, from_node, from_slot, to_node, to_slot, type]")
            continue
        link_id, source, source_slot, target, target_slot, _ = link
        if link_id in links:
            problems.append(f"link {link_id}: the id is used twice")
        links[link_id] = link
        if source not in nodes or target not in nodes:
            problems.append(f"link {link_id}: joins node {source} to node {target}, which do not both exist")
            continue
        outputs, inputs = nodes[source].get("outputs") or [], nodes[target].get("inputs") or []
        if not 0 <= source_slot < len(outputs):
            problems.append(f"link {link_id}: node {source} has no output slot {source_slot}")
        elif link_id not in (outputs[source_slot].get("links") or []):
            problems.append(f"link {link_id}: missing from node {source} output '{outputs[source_slot].get('name')}' links")
        if not 0 <= target_slot < len(inputs):
            problems.append(f"link {link_id}: node {target} has no input slot {target_slot}")
        elif inputs[target_slot].get("link") != link_id:
            problems.append(f"link {link_id}: node {target} input '{inputs[target_slot].get('name')}' "
                            f"names link {inputs[target_slot].get('link')}")
    for node_id, raw in nodes.items():
        for slot, inp in enumerate(raw.get("inputs") or []):
            link = links.get(inp.get("link"))
            if inp.get("link") is not None and (link is None or link[3:5] != [node_id, slot]):
                problems.append(f"node {node_id} input '{inp.get('name')}': link {inp.get('link')} "
                                f"does not end at this input in 'links'")
        for slot, out in enumerate(raw.get("outputs") or []):
            for link_id in out.get("links") or []:
                link = links.get(link_id)
                if link is None or link[1:3] != [node_id, slot]:
                    problems.append(f"node {node_id} output '{out.get('name')}': link {link_id} "
                                    f"does not start at this output in 'links'")
    return links


def _check_layout(nodes: dict[int, dict], problems: list[str]) -> None:
    boxes = []
    for node_id, raw in nodes.items():
        if (raw.get("flags") or {}).get("collapsed"):
            continue
        if "pos" not in raw or "size" not in raw:
            problems.append(f"node {node_id}: has no pos or size")
            continue
        (x, y), (w, h) = _pair(raw["pos"]), _pair(raw["size"])
        boxes.append((node_id, x, y - TITLE_HEIGHT, x + w, y + h))
    for (a, ax0, ay0, ax1, ay1), (b, bx0, by0, bx1, by1) in combinations(boxes, 2):
        if ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1:
            problems.append(f"nodes {a} and {b} overlap on the canvas")


def _is_pack_node(schema: dict | None) -> bool:
    # The front end's own rule: python_module "custom_nodes.<folder>" is a pack, "nodes" or
    # "comfy_extras.*" is core.
    return schema is not None and str(schema.get("python_module", "")).startswith("custom_nodes.")


def _check_pack_properties(nodes: dict[int, dict], schemas: dict[str, dict], problems: list[str]) -> None:
    """Our nodes name this pack (``cnr_id``, ``ver``); core nodes, if tagged, say comfy-core; a note names the pack."""
    name, version = pack_identity()
    ours = False
    for node_id, raw in nodes.items():
        kind = raw.get("type", "?")
        properties = raw.get("properties") or {}
        where = f"node {node_id} ({kind})"
        if kind in FRONTEND_ONLY or kind not in schemas:
            continue
        if _is_pack_node(schemas[kind]):
            ours = True
            if properties.get("cnr_id") != name:
                problems.append(f"{where}: properties.cnr_id is {properties.get('cnr_id')!r}, expected {name!r} "
                                "(pyproject's [project] name), which the missing-nodes dialog and ComfyUI-Manager use "
                                "to find the pack")
            if properties.get("ver") != version:
                problems.append(f"{where}: properties.ver is {properties.get('ver')!r}, expected {version!r} "
                                "(pyproject's [project] version)")
        elif "cnr_id" in properties and properties["cnr_id"] != CORE_PACK:
            problems.append(f"{where}: a core node with properties.cnr_id {properties['cnr_id']!r}, expected {CORE_PACK!r}")
        cnr_id, ver = properties.get("cnr_id"), properties.get("ver")
        if cnr_id is not None and not (isinstance(cnr_id, str) and CNR_ID.match(cnr_id)):
            problems.append(f"{where}: properties.cnr_id {cnr_id!r} is not a registry id ([A-Za-z0-9_-]+)")
        if ver is not None and not (isinstance(ver, str) and SEMVER.match(ver)):
            problems.append(f"{where}: properties.ver {ver!r} is not a version such as '0.1.0'")
    notes = [" ".join(str(v) for v in raw.get("widgets_values") or [])
             for raw in nodes.values() if raw.get("type") in ("Note", "MarkdownNote")]
    if ours and not any(name in text for text in notes):
        problems.append(f"no note names the pack {name!r}: without it installed, users only see missing node classes")


def read_ui(workflow: dict, schemas: dict[str, dict], problems: list[str]) -> list[Node]:
    """Reduce a UI-format workflow to nodes, adding format problems (links, widgets, layout)."""
    for key in ("last_node_id", "last_link_id", "nodes", "links", "version"):
        if key not in workflow:
            problems.append(f"missing top-level key '{key}'")
    nodes: dict[int, dict] = {}
    for raw in workflow.get("nodes", []):
        if raw.get("id") in nodes:
            problems.append(f"node id {raw.get('id')} is used twice")
        nodes[raw.get("id")] = raw
    links = _check_ui_links(workflow, nodes, problems)
    if nodes and max(nodes) > workflow.get("last_node_id", 0):
        problems.append(f"last_node_id {workflow.get('last_node_id')} is below the largest node id {max(nodes)}")
    if links and max(links) > workflow.get("last_link_id", 0):
        problems.append(f"last_link_id {workflow.get('last_link_id')} is below the largest link id {max(links)}")
    _check_layout(nodes, problems)
    _check_pack_properties(nodes, schemas, problems)

    result = []
    for node_id, raw in nodes.items():
        node = Node(str(node_id), raw.get("type", "?"), raw.get("title"), active=raw.get("mode", 0) == 0,
                    output_types=[out.get("type") for out in raw.get("outputs") or []])
        for inp in raw.get("inputs") or []:
            link = links.get(inp.get("link"))
            if link is not None:
                node.links[inp.get("name")] = (str(link[1]), link[2], link[5])
        schema = schemas.get(node.class_type)
        if schema is not None:
            values = _read_widgets(raw, schema, node.where, problems)
            node.values, node.widgets_read = values or {}, values is not None
            _check_declared_types(raw, schema, node.where, problems)
        result.append(node)
    return result


def _check_declared_types(raw: dict, schema: dict, where: str, problems: list[str]) -> None:
    specs = {spec.name: spec for spec in input_specs(schema)}
    for inp in raw.get("inputs") or []:
        spec = specs.get(inp.get("name"))
        if spec is not None and not types_match(str(inp.get("type")), spec.type):
            problems.append(f"{where} input '{spec.name}': declared type {inp.get('type')}, the schema says {spec.type}")
    declared, expected = raw.get("outputs") or [], _output_types(schema)
    if len(declared) != len(expected):
        problems.append(f"{where}: {len(declared)} outputs, the schema has {len(expected)} ({', '.join(expected)})")
    for slot, (out, kind) in enumerate(zip(declared, expected)):
        if out.get("type") != kind:
            problems.append(f"{where} output {slot}: declared type {out.get('type')}, the schema says {kind}")


def read_api(prompt: dict, problems: list[str]) -> list[Node]:
    """Reduce an API-format prompt (``{"id": {"class_type", "inputs"}}``) to nodes."""
    result = []
    for node_id, entry in prompt.items():
        if not isinstance(entry, dict) or "class_type" not in entry:
            problems.append(f"node {node_id}: expected an object with 'class_type' and 'inputs'")
            continue
        node = Node(str(node_id), entry["class_type"], (entry.get("_meta") or {}).get("title"))
        if node.class_type in FRONTEND_ONLY:
            problems.append(f"{node.where}: front-end-only nodes cannot appear in an API prompt")
        for name, value in (entry.get("inputs") or {}).items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int):
                node.links[name] = (value[0], value[1], None)
            else:
                node.values[name] = value
        result.append(node)
    return result


def _value_problem(spec: InputSpec, value: Any, allow_missing_models: bool) -> str | None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if spec.type == "INT" and not (number and float(value).is_integer()):
        return f"{value!r} is not an integer"
    if spec.type == "FLOAT" and not number:
        return f"{value!r} is not a number"
    if spec.type == "BOOLEAN" and not isinstance(value, bool):
        return f"{value!r} is not true or false"
    if spec.type == "STRING" and not isinstance(value, str):
        return f"{value!r} is not a string"
    if spec.type == "COMBO" and value not in spec.choices:
        if allow_missing_models and isinstance(value, str) and value.lower().endswith(MODEL_EXTENSIONS):
            return None
        shown = ", ".join(map(repr, spec.choices[:8])) + (", ..." if len(spec.choices) > 8 else "")
        return f"{value!r} is not among the options [{shown}]"
    if spec.type in ("INT", "FLOAT"):
        low, high = spec.options.get("min"), spec.options.get("max")
        if low is not None and value < low:
            return f"{value!r} is below the minimum {low}"
        if high is not None and value > high:
            return f"{value!r} is above the maximum {high}"
    return None


def _source_type(source: Node, slot: int, schemas: dict[str, dict]) -> str | None:
    schema = schemas.get(source.class_type)
    types = _output_types(schema) if schema is not None else source.output_types or []
    return types[slot] if 0 <= slot < len(types) else None


def check_nodes(nodes: list[Node], schemas: dict[str, dict], *, allow_missing_models: bool = True) -> list[str]:
    """Node classes exist, links join matching types, required inputs are set, values in range."""
    problems = []
    by_id = {node.id: node for node in nodes}
    for node in nodes:
        if node.class_type in FRONTEND_ONLY:
            continue
        schema = schemas.get(node.class_type)
        if schema is None:
            problems.append(f"{node.where}: unknown node class '{node.class_type}' "
                            "(neither a core node of the reference ComfyUI nor one of this pack's)")
            continue
        specs = {spec.name: spec for spec in input_specs(schema)}
        for name in sorted((node.links.keys() | node.values.keys()) - specs.keys()):
            problems.append(f"{node.where}: has no input named '{name}'")
        for name, (source_id, slot, link_type) in node.links.items():
            spec, source = specs.get(name), by_id.get(source_id)
            if spec is None:
                continue
            if source is None:
                problems.append(f"{node.where} input '{name}': linked to node {source_id}, which does not exist")
                continue
            given = _source_type(source, slot, schemas)
            if given is None:
                if source.class_type in schemas:  # (unknown classes and UI slots are reported elsewhere)
                    problems.append(f"{node.where} input '{name}': {source.where} has no output slot {slot}")
            elif not types_match(given, spec.type):
                problems.append(f"{node.where} input '{name}': expects {spec.type}, "
                                f"linked to {given} from {source.where} output {slot}")
            elif link_type is not None and not types_match(link_type, given):
                problems.append(f"{node.where} input '{name}': the link says type {link_type}, its source gives {given}")
        for spec in specs.values():
            if spec.name in node.links or (spec.is_widget and not node.widgets_read):
                continue
            if spec.name in node.values:
                problem = _value_problem(spec, node.values[spec.name], allow_missing_models)
                if problem:
                    problems.append(f"{node.where} input '{spec.name}': {problem}")
            elif spec.required:
                missing = "has no value" if spec.is_widget else "is not connected"
                problems.append(f"{node.where} input '{spec.name}': required input {missing}")
    if not any(node.active and schemas.get(node.class_type, {}).get("output_node") for node in nodes):
        problems.append("no output node (such as SaveImage or PreviewImage): ComfyUI would not run anything")
    return problems


def check_ui(workflow: dict, schemas: dict[str, dict], *, allow_missing_models: bool = True) -> list[str]:
    """Every problem of a UI-format workflow, one message each (empty when valid)."""
    problems: list[str] = []
    nodes = read_ui(workflow, schemas, problems)
    return problems + check_nodes(nodes, schemas, allow_missing_models=allow_missing_models)


def check_api(prompt: dict, schemas: dict[str, dict], *, allow_missing_models: bool = True) -> list[str]:
    """Every problem of an API-format prompt, one message each (empty when valid)."""
    problems: list[str] = []
    nodes = read_api(prompt, problems)
    return problems + check_nodes(nodes, schemas, allow_missing_models=allow_missing_models)


def is_ui_format(data: Any) -> bool:
    return isinstance(data, dict) and "nodes" in data and "links" in data


def check_file(path: Path, schemas: dict[str, dict], *, allow_missing_models: bool = True) -> list[str]:
    """Problems of a workflow file in either format, each prefixed with the file's path."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return [f"{path}: cannot read a JSON workflow: {error}"]
    if is_ui_format(data):
        problems = check_ui(data, schemas, allow_missing_models=allow_missing_models)
    elif isinstance(data, dict) and data and all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        problems = check_api(data, schemas, allow_missing_models=allow_missing_models)
    else:
        problems = ["neither a UI workflow ('nodes', 'links') nor an API prompt ({id: {'class_type', 'inputs'}})"]
    return [f"{path}: {problem}" for problem in problems]


def ui_to_api(workflow: dict, schemas: dict[str, dict]) -> dict[str, dict]:
    """The API prompt of a valid UI workflow, as the front end's "Export (API)" writes it.

    Notes are dropped. Muted or bypassed nodes, reroutes and primitive nodes are not resolved:
    they raise ``ValueError``, as does any problem :func:`check_ui` finds.
    """
    problems: list[str] = []
    nodes = read_ui(workflow, schemas, problems)
    problems += check_nodes(nodes, schemas)
    if problems:
        raise ValueError("the workflow has problems:\n" + "\n".join(problems))
    prompt = {}
    for node in sorted(nodes, key=lambda n: int(n.id)):
        if node.class_type in FRONTEND_ONLY:
            if node.links or any(source == node.id for other in nodes for source, _, _ in other.links.values()):
                raise ValueError(f"{node.where}: linked front-end-only nodes are not converted")
            continue
        if not node.active:
            raise ValueError(f"{node.where}: muted or bypassed nodes are not converted")
        schema = schemas[node.class_type]
        inputs = {}
        for spec in input_specs(schema):
            if spec.name in node.links:
                source_id, slot, _ = node.links[spec.name]
                inputs[spec.name] = [source_id, slot]
            elif spec.name in node.values:
                inputs[spec.name] = node.values[spec.name]
        prompt[node.id] = {"inputs": inputs, "class_type": node.class_type,
                           "_meta": {"title": node.title or schema.get("display_name", node.class_type)}}
    return prompt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.workflows.validate", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="workflow JSON files (UI or API format)")
    parser.add_argument("--object-info", type=Path, default=CORE_OBJECT_INFO,
                        help="core /object_info JSON, e.g. saved from your own server's /object_info")
    parser.add_argument("--strict-models", action="store_true",
                        help="model file names must be among the options (for an /object_info of a server with the models)")
    parser.add_argument("--to-api", action="store_true", help="print the API prompt of one UI workflow instead")
    args = parser.parse_args(argv)
    schemas = load_schemas(args.object_info)
    if args.to_api:
        if len(args.files) != 1:
            parser.error("--to-api takes one file")
        workflow = json.loads(args.files[0].read_text(encoding="utf-8"))
        sys.stdout.write(json.dumps(ui_to_api(workflow, schemas), indent=2) + "\n")
        return 0
    failed = False
    for path in args.files:
        problems = check_file(path, schemas, allow_missing_models=not args.strict_models)
        sys.stdout.write("".join(f"{problem}\n" for problem in problems) or f"{path}: ok\n")
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
