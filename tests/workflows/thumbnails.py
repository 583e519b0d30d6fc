"""Draw a workflow's template-browser thumbnail: its title over its own node graph.

    python3 -m tests.workflows.thumbnails workflows/lama_inpaint.json [more.json ...]

writes ``<name>.jpg`` next to each UI-format workflow, the one name the front end asks for. The
card illustrates the file itself (the heading of its MarkdownNote, its nodes where they sit on
the canvas, its links in ComfyUI's link colours); it is never a result image. Run from the
repository root.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image, ImageColor, ImageDraw, ImageFont

from .validate import FRONTEND_ONLY, TITLE_HEIGHT, load_schemas

SIZE = 768  # square: the template browser shows thumbnails in a square, cropping anything wider
MARGIN = 48
BACKGROUND = (30, 30, 32)
NODE_BODY, NODE_BAR, NODE_EDGE = (53, 53, 53), (34, 34, 34), (90, 90, 90)
PACK_BAR = (47, 105, 90)  # this pack's nodes stand out
TEXT, MUTED = (235, 235, 235), (150, 150, 150)
# The front end's dark-palette link colours; other types are grey.
LINK_COLORS = {
    "IMAGE": "#64B5F6", "MASK": "#81C784", "LATENT": "#FF9CF9", "MODEL": "#B39DDB", "CLIP": "#FFD500",
    "VAE": "#FF6E6E", "CONDITIONING": "#FFA931", "LAMA_FFC_MODEL": "#4DD0B0",
}
SLOT_PITCH = 20  # canvas px between socket rows


def _font(size: int, bold: bool = False) -> ImageFont.ImageFont:
    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf", size)
    except OSError:  # no DejaVu on this system: Pillow's bundled font
        return ImageFont.load_default(size)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def _fit(draw: ImageDraw.ImageDraw, text: str, width: float, largest: int) -> tuple[str, ImageFont.ImageFont]:
    """The largest font (down to 9 px) that fits ``text`` in ``width``, else the text shortened."""
    for size in range(largest, 8, -1):
        font = _font(size)
        if draw.textlength(text, font=font) <= width:
            return text, font
    while len(text) > 1 and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…", font


def workflow_title(workflow: dict, fallback: str) -> str:
    """The first Markdown heading of the workflow's notes, else ``fallback``."""
    for node in workflow.get("nodes", []):
        if node.get("type") in ("MarkdownNote", "Note"):
            for line in str((node.get("widgets_values") or [""])[0]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def render(workflow: dict, title: str, schemas: dict[str, dict]) -> Image.Image:
    """The thumbnail card of a UI-format workflow."""
    image = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    title_font = _font(40, bold=True)
    y = MARGIN + 8
    for line in _wrap(draw, title, title_font, SIZE - 2 * MARGIN):
        draw.text((MARGIN, y), line, font=title_font, fill=TEXT)
        y += 50
    nodes = {n["id"]: n for n in workflow.get("nodes", []) if n.get("type") not in FRONTEND_ONLY}
    draw.text((MARGIN, SIZE - MARGIN - 18), f"ComfyUI workflow · {len(nodes)} nodes", font=_font(18), fill=MUTED)
    if not nodes:
        return image

    # Fit the canvas rectangles (title bars included) into the space between title and footer.
    top, bottom = y + 24, SIZE - MARGIN - 40
    boxes = {i: (n["pos"][0], n["pos"][1] - TITLE_HEIGHT, n["size"][0], n["size"][1] + TITLE_HEIGHT) for i, n in nodes.items()}
    groups = [(g.get("title", ""), g.get("color") or "#888888", g["bounding"]) for g in workflow.get("groups", [])]
    frames = list(boxes.values()) + [bounding for _, _, bounding in groups]
    x0, y0 = min(b[0] for b in frames), min(b[1] for b in frames)
    x1, y1 = max(b[0] + b[2] for b in frames), max(b[1] + b[3] for b in frames)
    scale = min((SIZE - 2 * MARGIN) / (x1 - x0), (bottom - top) / (y1 - y0))
    left = (SIZE - (x1 - x0) * scale) / 2
    upper = top + (bottom - top - (y1 - y0) * scale) / 2

    def at(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) * scale, upper + (y - y0) * scale

    for title, color, (gx, gy, gw, gh) in groups:
        (ax, ay), (cx, cy) = at(gx, gy), at(gx + gw, gy + gh)
        tint = tuple(round(0.75 * b + 0.25 * c) for b, c in zip(BACKGROUND, ImageColor.getrgb(color)))
        draw.rectangle((ax, ay, cx, cy), fill=tint, outline=ImageColor.getrgb(color))
        # The header above a group's first node is about 50 canvas px: keep the title inside it.
        text, font = _fit(draw, title, cx - ax - 8, max(9, min(15, int(40 * scale))))
        draw.text((ax + 4, ay + 1), text, font=font, fill=TEXT)

    for link in workflow.get("links", []):
        _, source, source_slot, target, target_slot, kind = link
        if source in nodes and target in nodes:
            s, t = nodes[source], nodes[target]
            start = at(s["pos"][0] + s["size"][0], s["pos"][1] + (source_slot + 0.5) * SLOT_PITCH)
            end = at(t["pos"][0], t["pos"][1] + (target_slot + 0.5) * SLOT_PITCH)
            bend = max(20.0, abs(end[0] - start[0]) / 2)
            curve = [_bezier(start, (start[0] + bend, start[1]), (end[0] - bend, end[1]), end, k / 24) for k in range(25)]
            draw.line(curve, fill=LINK_COLORS.get(kind, "#9AA0A6"), width=3, joint="curve")

    for i, node in nodes.items():
        bx, by, bw, bh = boxes[i]
        (ax, ay), (cx, cy) = at(bx, by), at(bx + bw, by + bh)
        bar = max(6.0, TITLE_HEIGHT * scale)
        draw.rounded_rectangle((ax, ay, cx, cy), radius=5, fill=NODE_BODY, outline=NODE_EDGE)
        ours = schemas.get(node["type"], {}).get("python_module", "").startswith("custom_nodes")
        draw.rounded_rectangle((ax, ay, cx, ay + bar), radius=5, fill=PACK_BAR if ours else NODE_BAR)
        label = node.get("title") or schemas.get(node["type"], {}).get("display_name") or node["type"]
        text, font = _fit(draw, label, cx - ax - 8, 16)
        draw.text((ax + 4, ay + bar + 3), text, font=font, fill=TEXT)
    return image


def _bezier(p0, p1, p2, p3, t: float) -> tuple[float, float]:
    u = 1 - t
    return tuple(u**3 * a + 3 * u * u * t * b + 3 * u * t * t * c + t**3 * d for a, b, c, d in zip(p0, p1, p2, p3))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.workflows.thumbnails", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="UI-format workflow JSON files")
    args = parser.parse_args(argv)
    schemas = load_schemas()
    for path in args.files:
        workflow = json.loads(path.read_text(encoding="utf-8"))
        title = workflow_title(workflow, path.stem.replace("_", " "))
        render(workflow, title, schemas).save(path.with_suffix(".jpg"), quality=88, optimize=True)
        sys.stdout.write(f"{path.with_suffix('.jpg')}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
