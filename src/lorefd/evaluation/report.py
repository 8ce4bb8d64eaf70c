"""Markdown and self-contained HTML reports (figures embedded as base64 PNG), and the tables
of ``lorefd robustness`` (:func:`robustness_markdown`)."""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorefd.aggregate import DEFAULT as AGGREGATE
from lorefd.data.perturb import DEEPERFORENSICS, LEVELS
from lorefd.metrics import NA, fmt
from lorefd.utils import atomic_write_text


@dataclass
class Report:
    """A report built from sections of text, tables and figures, written as .md and .html."""

    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def text(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[object]]) -> None:
        self.blocks.append(("table", (header, rows)))

    def code(self, text: str) -> None:
        """Preformatted text (a config, a command)."""
        self.blocks.append(("pre", text))

    def figure(self, path: str | Path, caption: str, width: int | None = None) -> None:
        """A picture with its caption (also its alt text); ``width``: shown at least this
        many px wide in HTML (small crops are enlarged to be seen)."""
        self.blocks.append(("img", (Path(path), caption, width)))

    def to_markdown(self, base: Path) -> str:
        """Markdown whose image links are relative to ``base`` (the report's folder)."""
        out = [f"# {self.title}", ""]
        for kind, value in self.blocks:
            if kind == "h2":
                out += [f"## {value}", ""]
            elif kind == "p":
                out += [str(value), ""]
            elif kind == "pre":
                out += ["```", str(value).rstrip("\n"), "```", ""]
            elif kind == "table":
                header, rows = value
                out.append("| " + " | ".join(header) + " |")
                out.append("|" + "---|" * len(header))
                out += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
                out.append("")
            elif kind == "img":
                path, caption, _ = value
                # relative to the report's own folder, whatever the working directory
                rel = Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()
                out += [f"![{caption}]({rel})", "", f"*{caption}*", ""]
        return "\n".join(out)

    def to_html(self) -> str:
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(self.title)}</title><style>",
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}",
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 10px;"
            "text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}"
            "th{background:#eee}img{max-width:100%}figcaption{color:#555}"
            "figure.example{display:inline-block;margin:0 1em 1em 0;vertical-align:top}"
            "figure.example figcaption{max-width:300px}code{background:#f3f3f3;padding:0 3px}",
            "</style></head><body>", f"<h1>{html.escape(self.title)}</h1>",
        ]
        for kind, value in self.blocks:
            if kind == "h2":
                parts.append(f"<h2>{inline_html(str(value))}</h2>")
            elif kind == "p":
                parts.append(f"<p>{inline_html(str(value))}</p>")
            elif kind == "pre":
                parts.append(f"<pre>{html.escape(str(value))}</pre>")
            elif kind == "table":
                header, rows = value
                parts.append("<table><tr>" + "".join(f"<th>{inline_html(h)}</th>" for h in header)
                             + "</tr>")
                for r in rows:
                    cells = [_fmt(c) for c in r]
                    parts.append("<tr>" + "".join(
                        f"<td{' class=num' if _NUMBER.match(c) else ''}>{inline_html(c)}</td>"
                        for c in cells) + "</tr>")
                parts.append("</table>")
            elif kind == "img":
                path, caption, width = value
                data = base64.b64encode(Path(path).read_bytes()).decode()
                alt = html.escape(_plain(caption), quote=True)
                cls, style = ("example", f" style='width:{width}px'") if width else ("", "")
                parts.append(f"<figure class='{cls}'><img src='data:image/png;base64,{data}' "
                             f"alt='{alt}'{style}><figcaption>{inline_html(caption)}"
                             "</figcaption></figure>")
        parts.append("</body></html>")
        return "\n".join(parts)

    def write(self, out_dir: str | Path, stem: str = "report") -> tuple[Path, Path]:
        out_dir = Path(out_dir)
        md, page = out_dir / f"{stem}.md", out_dir / f"{stem}.html"
        atomic_write_text(md, self.to_markdown(out_dir.resolve()))
        atomic_write_text(page, self.to_html())
        return md, page


_NUMBER = re.compile(r"^[-+]?[\d.,]+( ?%| s)?( [\[(][\d., ]+[\])])?$|^n/a$")
_CODE, _BOLD = re.compile(r"`([^`]+)`"), re.compile(r"\*\*(.+?)\*\*")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def inline_html(text: str) -> str:
    """The inline Markdown the reports write (**bold**, `code`, [text](url)) as HTML, the rest
    escaped."""
    out = html.escape(text, quote=False)
    out = _CODE.sub(r"<code>\1</code>", out)
    out = _BOLD.sub(r"<b>\1</b>", out)
    return _LINK.sub(lambda m: f"<a href=\"{html.escape(m.group(2))}\">{m.group(1)}</a>", out)


def _plain(text: str) -> str:
    """``text`` without its inline Markdown (for alt texts)."""
    return _LINK.sub(r"\1", _BOLD.sub(r"\1", _CODE.sub(r"\1", text)))


def _fmt(value: object) -> str:
    """One rounding everywhere: three decimals below 1 (AUC, rates), one above (seconds)."""
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1 else f"{value:.1f}"
    return "n/a" if value is None else str(value)


# ------------------------------------------------------------------------------ robustness
def metric_value(v: Any) -> float | None:
    """A metric as a float, None for ``n/a`` (or anything else that is not a number)."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def fmt1(v: Any) -> str:
    """A metric as a percentage with one decimal (``n/a`` kept), for the report tables."""
    return fmt(v, 100.0, 1)


def robustness_markdown(result: dict[str, Any]) -> str:
    """``robustness.md``: a summary table per model, then every setting
    (:func:`lorefd.evaluation.robustness.robustness`'s result)."""
    n_df = len(DEEPERFORENSICS) * len(LEVELS)
    lines = ["# Robustness: DeeperForensics-1.0 perturbations and JPEG", "",
             f"Data: {result['data']}" + (f" (filters: {' '.join(result['filters'])})"
                                          if result["filters"] else "") + f"; seed {result['seed']}.",
             f"Perturbations applied to: {result['applied_to']}.",
             "AUC and Acc in %; Acc at each model's threshold; drop = clean AUC minus perturbed "
             f"AUC (points). Video level: {AGGREGATE} frame probability per video.", ""]
    if not result["complete"]:
        lines += ["**Incomplete: the sweep was interrupted; re-run the command to resume.**", ""]
    lines += ["| model | level | clean AUC | clean Acc | mean AUC, DeeperForensics | drop | "
              "mean AUC, JPEG | drop |", "|---|---|---|---|---|---|---|---|"]
    for e in result["models"]:
        s = e["summary"]
        for lv in ("frame", "video"):
            df, jp, cl = s["deeperforensics"], s["jpeg"], s["clean"] or {}
            lines.append(
                f"| {e['name']} | {lv} | {fmt1(cl.get(f'{lv}_auc', NA))} | "
                f"{fmt1(cl.get(f'{lv}_acc', NA))} | {fmt1(df[f'{lv}_auc'])} "
                f"({df[f'{lv}_auc_n']}/{n_df}) | {fmt1(df[f'{lv}_auc_drop'])} | "
                f"{fmt1(jp[f'{lv}_auc'])} ({jp[f'{lv}_auc_n']}/{len(LEVELS)}) | "
                f"{fmt1(jp[f'{lv}_auc_drop'])} |")
    lines += ["", "(k/N): settings with an AUC among those of the full sweep (n/a: one class "
              "left, or nothing the perturbation could apply to). h264 scores only videos of two "
              "or more frames (n, skipped); its drop is against the clean AUC of all items.", ""]
    for e in result["models"]:
        lines += [f"## {e['name']}", "",
                  f"`{e['source']}` ({e['kind']}, {e['detector']}, {e['image_size']} px, "
                  f"threshold {e['threshold']:g})", "",
                  "| type | level | parameter | n | videos | skipped | frame AUC | frame Acc | "
                  "video AUC | video Acc | AUC drop (frame) | AUC drop (video) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in e["rows"]:
            param = "" if r["param"] is None else f"{r['param_name']} {r['param']:g}"
            why = "; ".join(f"{k}: {v}" for k, v in r.get("skip_reasons", {}).items())
            lines.append(
                f"| {r['type']} | {r['level'] or ''} | {param} | {r['n']} | {r['n_videos']} | "
                f"{r['skipped']}{f' ({why})' if why else ''} | {fmt1(r['frame_auc'])} | "
                f"{fmt1(r['frame_acc'])} | {fmt1(r['video_auc'])} | {fmt1(r['video_acc'])} | "
                f"{fmt1(r['frame_auc_drop'])} | {fmt1(r['video_auc_drop'])} |")
        lines.append("")
    return "\n".join(lines)
