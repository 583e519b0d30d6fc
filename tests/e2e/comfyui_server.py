"""A real ComfyUI server for the opt-in end-to-end tests: temp layout, process, HTTP client.

The server gets its own temporary base/input/output/user/temp folders, an
``--extra-model-paths-config`` yaml that maps ``lama``, ``inpaint`` and ``custom_nodes`` to temp
folders, and a symlink to the pack in that ``custom_nodes`` folder. It only listens on 127.0.0.1,
the client only talks to 127.0.0.1 (no proxy), and every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "HOST",
    "ComfyUIError",
    "ComfyUIServer",
    "ServerLayout",
    "combo_options",
    "free_port",
    "make_node",
    "supported_flags",
    "widget_defaults",
]

HOST = "127.0.0.1"
POLL_SECONDS = 0.25
# What nodes.py (load_custom_node, init_external_custom_nodes) logs when a pack does not load.
IMPORT_FAILURE_MARKERS = (
    "IMPORT FAILED",
    "Cannot import",
    "Error while calling comfy_entrypoint",
    "lack of NODE_CLASS_MAPPINGS",
    "did not return a ComfyExtension",
    "did not return a list of nodes",
)
# Socket types that are widgets (values in the prompt) rather than links.
_WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


class ComfyUIError(RuntimeError):
    """The server did not start, rejected a prompt, or a prompt failed."""


def free_port() -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def supported_flags(comfy_path: Path) -> set[str]:
    """The ``--flags`` this checkout's ``comfy/cli_args.py`` defines (read as text, nothing imported)."""
    text = (comfy_path / "comfy" / "cli_args.py").read_text(encoding="utf-8")
    return set(re.findall(r'add_argument\(\s*"(--[A-Za-z0-9-]+)"', text))


class ServerLayout:
    """The temporary folders and files of one server, all below ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.base = root / "base"
        self.input = root / "input"
        self.output = root / "output"
        self.user = root / "user"
        self.temp = root / "temp"
        self.lama_models = root / "models" / "lama"
        self.inpaint_models = root / "models" / "inpaint"
        self.custom_nodes = root / "custom_nodes"
        self.extra_paths_yaml = root / "extra_model_paths.yaml"
        self.database = root / "comfyui.db"
        self.log = root / "server.log"

    def create(self, pack_dir: Path, pack_name: str) -> None:
        """Make the folders, link the pack into ``custom_nodes`` and write the yaml."""
        # main.py lists <base>/custom_nodes before loading anything, so it must exist.
        folders = (self.base / "custom_nodes", self.base / "models", self.input, self.output, self.user,
                   self.temp, self.lama_models, self.inpaint_models, self.custom_nodes)
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        (self.custom_nodes / pack_name).symlink_to(pack_dir.resolve(), target_is_directory=True)
        # JSON strings are valid YAML double-quoted scalars; load_extra_path_config accepts any key.
        entries = {"lama": self.lama_models, "inpaint": self.inpaint_models, "custom_nodes": self.custom_nodes}
        lines = ["lama_e2e:"] + [f"  {key}: {json.dumps(str(path))}" for key, path in entries.items()]
        self.extra_paths_yaml.write_text("\n".join(lines) + "\n", encoding="utf-8")


class ComfyUIServer:
    """``python main.py`` of a ComfyUI checkout as a subprocess, and a small HTTP client for it."""

    def __init__(self, comfy_path: Path, python: str, layout: ServerLayout, pack_name: str,
                 port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.comfy_path = comfy_path
        self.extra_env = dict(env or {})
        self.python = python
        self.layout = layout
        self.pack_name = pack_name
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self._log_file = None
        # Never route loopback traffic through a proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # -- process ---------------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The command line: headless, CPU, loopback, temp folders (optional flags only if known)."""
        flags = supported_flags(self.comfy_path)
        layout = self.layout
        required = {
            "--cpu": [],
            "--listen": [HOST],
            "--port": [str(self.port)],
            "--extra-model-paths-config": [str(layout.extra_paths_yaml)],
            "--input-directory": [str(layout.input)],
            "--output-directory": [str(layout.output)],
        }
        missing = sorted(flag for flag in required if flag not in flags)
        if missing:
            raise ComfyUIError(f"{self.comfy_path} has no {', '.join(missing)} option: ComfyUI too old for this test")
        optional = {
            "--disable-auto-launch": [],
            "--disable-api-nodes": [],
            "--base-directory": [str(layout.base)],
            "--user-directory": [str(layout.user)],
            "--temp-directory": [str(layout.temp)],
            # The default database lives in the checkout's user/ folder, even with --user-directory.
            "--database-url": [f"sqlite:///{layout.database}"],
        }
        # Only our pack, even when the checkout's own custom_nodes/ has others; but only where the
        # whitelist exists (ComfyUI >= 0.3.44): --disable-all-custom-nodes alone disables our pack too.
        if "--whitelist-custom-nodes" in flags and "--disable-all-custom-nodes" in flags:
            optional.update({"--disable-all-custom-nodes": [], "--whitelist-custom-nodes": [self.pack_name]})
        command = [self.python, "main.py"]
        for flag, values in list(required.items()) + list(optional.items()):
            if flag in flags:
                command += [flag, *values]
        return command

    def start(self) -> None:
        """Start the server; its stdout and stderr go to ``layout.log``."""
        self._log_file = open(self.layout.log, "wb")  # noqa: SIM115 (closed in stop)
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.extra_env)
        self.process = subprocess.Popen(self.command(), cwd=self.comfy_path, env=env, stdin=subprocess.DEVNULL,
                                        stdout=self._log_file, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float) -> float:
        """Wait until the HTTP API answers; return the seconds it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            self._raise_if_exited("while starting")
            try:
                self.get_json("/system_stats", timeout=5.0)
                return time.monotonic() - start
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(POLL_SECONDS)
        raise ComfyUIError(f"ComfyUI did not answer on port {self.port} within {timeout:.0f} s\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        """Terminate the server (kill it if it does not exit in time) and close the log."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def rss_bytes(self) -> int:
        """The server process's resident memory now (Linux ``/proc``)."""
        if self.process is None:
            raise ComfyUIError("the server is not running")
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise ComfyUIError(f"no VmRSS in /proc/{self.process.pid}/status")

    def _raise_if_exited(self, when: str) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise ComfyUIError(f"ComfyUI exited with code {self.process.returncode} {when}: "
                               f"{shlex.join(self.process.args)}\n{self.log_tail()}")

    # -- log -------------------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.layout.log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return "---- ComfyUI log (last {} lines) ----\n{}".format(len(tail), "\n".join(tail))

    def pack_import_failures(self) -> list[str]:
        """Log lines that report our pack failing to load."""
        return [line for line in self.log_text().splitlines()
                if self.pack_name in line and any(marker in line for marker in IMPORT_FAILURE_MARKERS)]

    # -- HTTP ------------------------------------------------------------------------------------

    def _open(self, path: str, body: bytes | None = None, timeout: float = 30.0) -> bytes:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        request = urllib.request.Request(f"http://{HOST}:{self.port}{path}", data=body, headers=headers)
        with self._opener.open(request, timeout=timeout) as response:
            return response.read()

    def get_json(self, path: str, timeout: float = 30.0) -> Any:
        return json.loads(self._open(path, timeout=timeout))

    def post_json(self, path: str, body: dict, timeout: float = 30.0) -> bytes:
        return self._open(path, json.dumps(body).encode(), timeout=timeout)

    def object_info(self) -> dict[str, dict]:
        return self.get_json("/object_info", timeout=60.0)

    def queue_prompt(self, prompt: dict[str, dict]) -> str:
        """POST /prompt; return the prompt id. Raises on rejection, also of only some outputs."""
        body = json.dumps({"prompt": prompt, "client_id": uuid.uuid4().hex}).encode()
        try:
            answer = json.loads(self._open("/prompt", body))
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", errors="replace")
            raise ComfyUIError(f"POST /prompt rejected ({error.code}): {detail}") from None
        if answer.get("node_errors"):
            raise ComfyUIError(f"POST /prompt dropped some outputs: {json.dumps(answer['node_errors'])}")
        return answer["prompt_id"]

    def wait_history(self, prompt_id: str, timeout: float) -> dict:
        """Poll GET /history/<id> until the prompt has finished (success or error)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            entry = self.get_json(f"/history/{prompt_id}").get(prompt_id)
            if entry is not None and entry.get("status", {}).get("status_str") in ("success", "error"):
                return entry
            self._raise_if_exited(f"while running prompt {prompt_id}")
            time.sleep(POLL_SECONDS)
        raise ComfyUIError(f"prompt {prompt_id} did not finish within {timeout:.0f} s\n{self.log_tail()}")

    def run_prompt(self, prompt: dict[str, dict], timeout: float) -> tuple[dict, float]:
        """Queue a prompt and wait for it; return (history entry, seconds). Raises unless it succeeded."""
        start = time.monotonic()
        entry = self.wait_history(self.queue_prompt(prompt), timeout)
        seconds = time.monotonic() - start
        status = entry["status"]
        if status.get("status_str") != "success":
            errors = [data for event, data in status.get("messages", []) if event == "execution_error"]
            detail = "\n".join(
                f"node {e.get('node_id')} ({e.get('node_type')}): {e.get('exception_type')}: "
                f"{e.get('exception_message')}\n{''.join(e.get('traceback', []))}" for e in errors
            )
            raise ComfyUIError(f"prompt failed: {detail or json.dumps(status)}\n{self.log_tail()}")
        return entry, seconds

    def output_images(self, entry: dict, node_id: str) -> list[bytes]:
        """The PNG bytes of every image an output node saved, fetched through GET /view."""
        images = entry.get("outputs", {}).get(node_id, {}).get("images", [])
        if not images:
            raise ComfyUIError(f"node {node_id}: no saved image in the history entry {entry.get('outputs')!r}")
        return [self._open("/view?" + urllib.parse.urlencode({key: image[key] for key in ("filename", "subfolder", "type")}))
                for image in images]


# -- prompts built from /object_info -------------------------------------------------------------


def _widget(spec: list) -> tuple[str, dict] | None:
    """(type, options) of a widget input spec, or None for a link input."""
    kind, options = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    if isinstance(kind, list):  # V1 combo: the option list itself
        return "COMBO", {**options, "options": kind}
    if kind in _WIDGET_TYPES and not options.get("forceInput"):
        return kind, options
    return None


def combo_options(node_info: dict, name: str) -> list:
    """The options of a combo input, in either the V1 or the V3 ``/object_info`` form."""
    for group in ("required", "optional"):
        spec = node_info["input"].get(group, {}).get(name)
        if spec is not None:
            widget = _widget(spec)
            if widget is None or widget[0] != "COMBO":
                raise ValueError(f"{node_info['name']}.{name}: not a combo input: {spec!r}")
            return list(widget[1].get("options", []))
    raise KeyError(f"{node_info['name']} has no input {name!r}")


def widget_defaults(node_info: dict) -> dict[str, Any]:
    """Default values of the required widget inputs (a combo without default: its first option)."""
    values: dict[str, Any] = {}
    for name, spec in node_info["input"].get("required", {}).items():
        widget = _widget(spec)
        if widget is None:
            continue
        kind, options = widget
        if "default" in options:
            values[name] = options["default"]
        elif kind == "COMBO":
            values[name] = options["options"][0] if options.get("options") else None
        else:
            values[name] = {"INT": options.get("min", 0), "FLOAT": options.get("min", 0.0),
                            "BOOLEAN": False, "STRING": ""}[kind]
    return values


def _input_names(node_info: dict) -> Iterable[str]:
    for group in ("required", "optional"):
        yield from node_info["input"].get(group, {})


def make_node(object_info: dict[str, dict], class_type: str, **inputs: Any) -> dict:
    """An API-format node: the widget defaults from ``/object_info``, overridden by ``inputs``."""
    node_info = object_info[class_type]
    unknown = sorted(set(inputs) - set(_input_names(node_info)))
    if unknown:
        raise KeyError(f"{class_type} has no input(s) {unknown}; it has {sorted(_input_names(node_info))}")
    return {"class_type": class_type, "inputs": {**widget_defaults(node_info), **inputs}}
