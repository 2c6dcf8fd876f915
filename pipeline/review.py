"""The HTML review page written beside a score report: one self-contained file, no server,
no external assets (thumbnails are inline PNGs)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.agreement import format_agreement
from pipeline.io import write_text


def planes(array: np.ndarray) -> np.ndarray:
    """A 2D picture of an image, or of a volume's three middle planes side by side."""
    if array.ndim == 2:
        return array
    x, y, z = (s // 2 for s in array.shape)
    views = [array[x, :, :], array[:, y, :], array[:, :, z]]
    side = max(max(v.shape) for v in views)
    padded = [np.pad(v, ((0, side - v.shape[0]), (0, side - v.shape[1]))) for v in views]
    return np.concatenate([np.rot90(v) for v in padded], axis=1)


def _shown_channels(image: np.ndarray) -> np.ndarray:
    """The channels of a preprocessed scan (C, *spatial) a page shows: every one of a volume's (a case's
    sequences, a CT's windows: a finding may show in one alone), a picture's first."""
    image = np.asarray(image, dtype=np.float32)
    return image if image.ndim == 4 else image[:1]


def _scaled(array: np.ndarray) -> np.ndarray:
    low, high = np.percentile(array, [1, 99]) if array.size else (0, 1)
    return np.clip((array - low) / max(high - low, 1e-6), 0, 1)


def _picture(image: np.ndarray) -> np.ndarray:
    """A preprocessed scan (C, *spatial) as a 0-1 picture: a colour picture (three channels in 2D: a fundus
    photograph, a dermoscopy) in its colours, (H, W, 3), scaled as one; else grey, each channel scaled to
    its own 1st-99th percentile, a volume's channels one row of planes above another."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and len(image) == 3:
        return _scaled(np.moveaxis(image, 0, -1))
    return np.concatenate([_scaled(planes(channel)) for channel in _shown_channels(image)], axis=0)


def _png(values: np.ndarray, size: int) -> bytes:
    picture = Image.fromarray((values * 255).astype(np.uint8))
    scale = size / max(picture.size)
    picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                             Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _wide(picture: np.ndarray, size: int) -> int:
    """The longer side of a thumbnail ``size`` wide: a volume's rows of channels never narrower."""
    return round(size * max(1.0, picture.shape[0] / picture.shape[1]))


def thumbnail_png(image: np.ndarray, size: int = 96) -> bytes:
    """PNG of a preprocessed scan (C, *spatial) ``size`` wide: the image for 2D, for 3D the middle
    slices in the three planes side by side, a row for each channel."""
    picture = _picture(image)
    return _png(picture, _wide(picture, size))


def overlay_png(image: np.ndarray, heat: np.ndarray, size: int = 96, alpha: float = 0.45) -> bytes:
    """The thumbnail with a heatmap (*spatial, 0-1, see ``pipeline.saliency``) over it in red to yellow
    (over each channel's row alike)."""
    picture = _picture(image)
    base = picture if picture.ndim == 3 else picture[..., None]
    h = np.clip(planes(np.asarray(heat, dtype=np.float32)), 0, 1)
    h = np.tile(h, (picture.shape[0] // h.shape[0], 1))
    colour = np.stack([np.ones_like(h), h, np.zeros_like(h)], axis=-1)
    weight = (alpha * h)[..., None]
    return _png(base * (1 - weight) + colour * weight, _wide(picture, size))


# Volumes per page that get slices to page through (the rest: three middle planes); a case of several
# sequences counts as its sequences, each its own slices (stack_cost), so the page stays the size it was
MAX_SLICE_STACKS = 50


def stack_cost(image: np.ndarray) -> int:
    """How many of ``MAX_SLICE_STACKS`` a preprocessed scan's slices take: a volume's channels, else 1."""
    return len(_shown_channels(image))


def slice_stack(image: np.ndarray, tile: int = 64, max_slices: int = 24) -> dict | None:
    """The slices of a preprocessed volume (C, X, Y, Z) for the enlarged view's slice sliders, or
    None for a 2D scan: one PNG holding, for each of the three planes (a row each), ``n`` slices
    evenly spaced through the volume (a column each), every slice a square of at most ``tile``
    pixels (never enlarged: the browser scales the canvas).

    One picture per volume keeps the page a single file; at most 24 slices of 64 pixels keep a
    channel to about 100 kB and 15 ms. A volume of several channels (a case's sequences) has the three
    rows of each channel in turn (``channels``), each scaled on its own.
    """
    channels = _shown_channels(image)
    if channels.ndim != 4:
        return None
    shape = channels.shape[1:]
    side, n = max(shape), min(max_slices, max(shape))
    tile = min(tile, side)
    rows = []
    for volume in channels:
        low, high = np.percentile(volume[::2, ::2, ::2], [1, 99])
        volume = np.clip((volume - low) / max(high - low, 1e-6), 0, 1)
        for axis in range(3):
            row = []
            for index in np.linspace(0, shape[axis] - 1, n).round().astype(int):
                plane = np.rot90(np.take(volume, index, axis=axis))
                row.append(np.pad(plane, ((0, side - plane.shape[0]), (0, side - plane.shape[1]))))
            rows.append(np.concatenate(row, axis=1))
    picture = Image.fromarray((np.concatenate(rows, axis=0) * 255).astype(np.uint8))
    if tile != side:
        picture = picture.resize((n * tile, len(rows) * tile), Image.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return {"png": base64.b64encode(buffer.getvalue()).decode(), "n": int(n), "tile": tile,
            "channels": len(channels)}


def review_order(report: pd.DataFrame, positive: str | None) -> pd.DataFrame:
    """Errors and flagged scans first, then scans called positive, then the rest."""
    rank = np.where(report["status"] != "ok", 0, np.where(report["needs_review"].astype(bool), 1, 3))
    if positive:
        rank = np.where((rank == 3) & (report["prediction"] == positive), 2, rank)
    return report.assign(_rank=rank).sort_values(["_rank", "scan_id"], kind="stable").drop(columns="_rank")


PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; }}
tr.error td {{ background: #fde2e2; }} tr.review td {{ background: #fff6cc; }} tr.positive td {{ background: #fde9d9; }}
tr.selected td {{ outline: 2px solid #2a6fdb; }} #scans tbody tr {{ cursor: pointer; }}
#scans td {{ overflow-wrap: anywhere; }}  /* a case's id (7100000/{{t1_mprage_tra,...}}) has no space to break at */
.summary td {{ border: none; padding: 2px 12px 2px 0; }} img {{ image-rendering: pixelated; }}
#toolbar {{ position: sticky; top: 0; background: #fff; padding: 6px 0; border-bottom: 1px solid #ccc; }}
#toolbar > * {{ margin-right: 10px; }} .verdict {{ font-weight: bold; }}
#viewer {{ display: none; position: fixed; inset: 0; background: rgba(0,0,0,.8); color: #fff; padding: 2em; overflow: auto; }}
#viewer img {{ width: min(70vh, 44vw); height: auto; margin: 1em 0; }} #viewer img[src=""] {{ display: none; }}
kbd {{ border: 1px solid #999; border-radius: 3px; padding: 0 4px; }}
#viewerstack {{ display: none; gap: 1em; justify-content: center; }} #viewerstack figure {{ margin: 1em 0; text-align: center; }}
#viewerstack canvas {{ width: min(40vh, 26vw); image-rendering: pixelated; display: block; margin-bottom: 3px; }}
#viewerstack input {{ width: min(40vh, 26vw); }}
</style></head><body>
<h1>{title}</h1>
<table class="summary">{summary}</table>
<h2>Operating point</h2><p>{operating_point}</p>
<h2>Scans ({n_rows}; flagged and {positive_word} first)</h2>
<div id="toolbar">
<label>show <select id="filter"></select></label>
<label>sort <select id="sort"><option value="review">review order</option><option value="prob-desc">probability, high first</option>
<option value="prob-asc">probability, low first</option><option value="id">scan id</option></select></label>
<button id="prev">&larr;</button><span id="pageinfo"></span><button id="next">&rarr;</button>
<button id="export">export verdicts (CSV)</button><span id="verdictcount"></span>
<div><small>Keys: <kbd>j</kbd>/<kbd>k</kbd> or arrows move, <kbd>Enter</kbd> enlarges, <kbd>Esc</kbd> closes,
<kbd>c</kbd> confirms the prediction, {class_keys}, <kbd>u</kbd> unsure, <kbd>x</kbd> exclude, <kbd>Backspace</kbd> clears.
Verdicts stay in this browser until exported.</small></div>
</div>
<table id="scans"><thead><tr><th>#</th><th>thumbnail</th><th>scan</th><th>prediction</th><th>probability</th>
<th>status</th><th>needs review</th><th>verdict</th><th>error</th></tr></thead><tbody></tbody></table>
{truncated}
<div id="viewer"><div id="viewertitle"></div><div style="display:flex;gap:1em;justify-content:center">
<img id="viewerimg" alt=""><img id="viewerheat" alt="saliency"></div>
<div id="viewerstack"></div><div id="viewerinfo"></div></div>
<script id="data" type="application/json">{data}</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const PAGE_SIZE = 100, KEY = "review-verdicts:" + DATA.key;
let verdicts = JSON.parse(localStorage.getItem(KEY) || "{{}}");
let view = [], page = 0, selected = 0;
const filters = [["all", "all scans", r => true], ["flagged", "flagged for review", r => r.review],
  ["errors", "errors", r => r.status !== "ok"], ["unreviewed", "no verdict yet", r => !verdicts[r.id]],
  ["ood", "out of distribution", r => r.ood]];
if (DATA.positive) filters.splice(2, 0, ["positive", "called " + DATA.positive, r => r.pred === DATA.positive]);
for (const c of DATA.classes) filters.push(["class:" + c, "predicted " + c, r => r.pred === c]);
const filterBox = document.getElementById("filter");
for (const [value, text] of filters) filterBox.add(new Option(text, value));
function save() {{ localStorage.setItem(KEY, JSON.stringify(verdicts)); }}
function apply() {{
  const keep = filters.find(f => f[0] === filterBox.value)[2];
  view = DATA.rows.filter(keep);
  const how = document.getElementById("sort").value;
  if (how === "prob-desc") view.sort((a, b) => (b.p ?? -1) - (a.p ?? -1));
  if (how === "prob-asc") view.sort((a, b) => (a.p ?? 2) - (b.p ?? 2));
  if (how === "id") view.sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  page = 0; selected = 0; render();
}}
function cell(text) {{ const td = document.createElement("td"); td.textContent = text; return td; }}
function render() {{
  const body = document.querySelector("#scans tbody");
  body.replaceChildren();
  const start = page * PAGE_SIZE, rows = view.slice(start, start + PAGE_SIZE);
  rows.forEach((r, i) => {{
    const tr = document.createElement("tr");
    tr.className = (r.status !== "ok" ? "error" : r.review ? "review" : r.pred === DATA.positive ? "positive" : "")
      + (start + i === selected ? " selected" : "");
    tr.dataset.id = r.id;
    tr.append(cell(r.n));
    const td = document.createElement("td");
    if (DATA.thumbs[r.id]) {{ const img = new Image(); img.alt = r.id; img.loading = "lazy";
      img.src = "data:image/png;base64," + DATA.thumbs[r.id]; td.append(img); }}
    if (DATA.heat[r.id]) {{ const img = new Image(); img.alt = "saliency " + r.id; img.className = "heat";
      img.loading = "lazy"; img.src = "data:image/png;base64," + DATA.heat[r.id]; td.append(img); }}
    tr.append(td, cell(r.id), cell(r.pred), cell(r.p == null ? "" : r.p.toFixed(3)), cell(r.status),
              cell(r.review ? "yes" : "no"));
    const v = cell(verdicts[r.id] ? verdicts[r.id].verdict : ""); v.className = "verdict"; tr.append(v, cell(r.error));
    tr.addEventListener("click", () => {{ selected = start + i; render(); enlarge(); }});
    body.append(tr);
  }});
  const pages = Math.max(1, Math.ceil(view.length / PAGE_SIZE));
  document.getElementById("pageinfo").textContent = `page ${{page + 1}} of ${{pages}} (${{view.length}} scans)`;
  document.getElementById("verdictcount").textContent = `${{Object.keys(verdicts).length}} verdicts`;
}}
function current() {{ return view[selected]; }}
function enlarge() {{
  const r = current(); if (!r) return;
  document.getElementById("viewer").style.display = "block";
  document.getElementById("viewertitle").textContent = r.id;
  const img = document.getElementById("viewerimg");
  img.src = DATA.thumbs[r.id] ? "data:image/png;base64," + DATA.thumbs[r.id] : ""; img.alt = r.id;
  document.getElementById("viewerheat").src = DATA.heat[r.id] ? "data:image/png;base64," + DATA.heat[r.id] : "";
  showStack(r, img);
  document.getElementById("viewerinfo").textContent =
    `prediction ${{r.pred || "-"}}, probability ${{r.p == null ? "-" : r.p.toFixed(3)}}, ${{r.status}} ${{r.error || ""}}`;
}}
function showStack(r, flat) {{
  // Volumes: each plane on a canvas with its own slice slider, drawn from one sprite of slices.
  const box = document.getElementById("viewerstack"), stack = DATA.stacks[r.id];
  box.replaceChildren();
  if (!stack) {{ box.style.display = "none"; return; }}
  box.style.display = "flex"; flat.src = "";
  // A case of several sequences: a canvas for each above another, one slider a plane moving them all.
  const channels = stack.channels || 1, sequences = ((r.id.match(/\{{([^{{}}]*)\}}$/) || [])[1] || "").split(",");
  const named = channels > 1 && sequences.length === channels ? ` (top to bottom: ${{sequences.join(", ")}})` : "";
  const sprite = new Image();
  ["sagittal", "coronal", "axial"].forEach((name, plane) => {{
    const figure = document.createElement("figure"), canvases = [];
    for (let channel = 0; channel < channels; channel++) {{
      const canvas = document.createElement("canvas");
      canvas.width = canvas.height = stack.tile; canvas.dataset.plane = plane; canvas.dataset.channel = channel;
      if (channels > 1) {{ canvas.style.width = `min(${{50 / channels}}vh, 26vw)`; canvas.title = sequences[channel] || ""; }}
      canvases.push(canvas);
    }}
    const slider = document.createElement("input");
    Object.assign(slider, {{type: "range", min: 0, max: stack.n - 1, value: Math.floor(stack.n / 2)}});
    slider.setAttribute("aria-label", name + " slice");
    const caption = document.createElement("figcaption");
    const draw = () => {{
      canvases.forEach((canvas, channel) => {{
        const ctx = canvas.getContext("2d"); ctx.clearRect(0, 0, stack.tile, stack.tile);
        ctx.drawImage(sprite, slider.value * stack.tile, (channel * 3 + plane) * stack.tile, stack.tile, stack.tile,
                      0, 0, stack.tile, stack.tile);
      }});
      caption.textContent = `${{name}} slice ${{+slider.value + 1}} of ${{stack.n}}` + (plane === 0 ? named : "");
    }};
    slider.addEventListener("input", draw);
    sprite.addEventListener("load", draw);
    figure.append(...canvases, slider, caption); box.append(figure);
  }});
  sprite.src = "data:image/png;base64," + stack.png;
}}
function closeViewer() {{ document.getElementById("viewer").style.display = "none"; }}
function move(step) {{
  if (!view.length) return;
  selected = Math.min(view.length - 1, Math.max(0, selected + step));
  page = Math.floor(selected / PAGE_SIZE); render();
  if (document.getElementById("viewer").style.display === "block") enlarge();
}}
function setVerdict(verdict, label) {{
  const r = current(); if (!r) return;
  if (verdict === null) delete verdicts[r.id];
  else verdicts[r.id] = {{verdict, label, at: new Date().toISOString()}};
  save(); render();
}}
function csvField(text) {{ text = String(text); if (/^[=+\-@\t\r]/.test(text)) text = "'" + text;
  return /[",\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text; }}
window.exportCSV = function () {{
  const lines = ["file,label,verdict,reviewed_at,folder"];
  for (const r of DATA.rows) {{
    const v = verdicts[r.id]; if (!v || !v.label) continue;
    lines.push([r.id, v.label, v.verdict, v.at, DATA.folder].map(csvField).join(","));
  }}
  return lines.join("\n") + "\n";
}};
document.getElementById("export").addEventListener("click", () => {{
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([window.exportCSV()], {{type: "text/csv"}}));
  a.download = DATA.export_name; a.click();
}});
document.getElementById("prev").addEventListener("click", () => {{ if (page > 0) {{ page--; selected = page * PAGE_SIZE; render(); }} }});
document.getElementById("next").addEventListener("click", () => {{
  if ((page + 1) * PAGE_SIZE < view.length) {{ page++; selected = page * PAGE_SIZE; render(); }} }});
filterBox.addEventListener("change", apply);
document.getElementById("sort").addEventListener("change", apply);
document.addEventListener("keydown", e => {{
  if (e.target.tagName === "SELECT" || (e.target.tagName === "INPUT" && e.key !== "Escape")) return;
  const k = e.key, r = current();
  if (k === "j" || k === "ArrowDown") move(1);
  else if (k === "k" || k === "ArrowUp") move(-1);
  else if (k === "Enter") enlarge();
  else if (k === "Escape") closeViewer();
  else if (k === "c" && r && r.pred) setVerdict("confirmed", r.pred);
  else if (k === "u") setVerdict("unsure", "");
  else if (k === "x") setVerdict("excluded", "");
  else if (k === "Backspace") setVerdict(null);
  else if (/^[1-9]$/.test(k) && DATA.classes[+k - 1]) setVerdict("relabelled", DATA.classes[+k - 1]);
  else return;
  e.preventDefault();
}});
document.getElementById("viewer").addEventListener("click", closeViewer);
document.getElementById("viewerstack").addEventListener("click", e => e.stopPropagation());
apply();
</script>
</body></html>
"""


def write_review_page(path, report: pd.DataFrame, thumbnails: dict[str, bytes], summary: dict,
                      calibration: dict, classes: list[str], title: str, max_rows: int = 50_000,
                      key: str = "", overlays: dict[str, bytes] | None = None, keep_order: bool = False,
                      stacks: dict[str, dict] | None = None, folder: str = "") -> None:
    """Write the interactive page: filters, sorting, paging, an enlarged view, keyboard verdicts kept
    in the browser (``localStorage``, under ``key``: the report's identity) and exported as a labels
    CSV (``file,label,verdict,reviewed_at,folder``: ``file`` relative to ``folder``, the scored folder)
    that ``pipeline run --extra-labels`` merges.

    ``thumbnails`` maps scan_id -> PNG bytes (those missing show none), ``overlays`` likewise the
    saliency overlays (``pipeline.saliency``) shown beside them, ``stacks`` the volumes' slices
    (``slice_stack``) that the enlarged view pages through with a slider per plane; ``keep_order`` keeps the rows' order
    (a ranking) instead of errors and flagged scans first; rows are embedded as JSON
    and drawn a page of 100 at a time, so a folder of 10,000 scans opens at once.
    """
    screening = calibration.get("screening")
    positive = screening["positive_class"] if screening else None
    ordered = (report if keep_order else review_order(report, positive)).head(max_rows)
    rows = []
    # by column, not by tuple field: itertuples renames columns that are not identifiers ("p_covid-19")
    shown_probability = ordered[f"p_{positive}" if positive else "confidence"].tolist()
    for number, (row, probability) in enumerate(zip(ordered.itertuples(index=False), shown_probability), start=1):
        review = bool(row.needs_review) if row.status == "ok" else True
        rows.append({"n": number, "id": str(row.scan_id), "pred": "" if pd.isna(row.prediction) else str(row.prediction),
                     "p": None if pd.isna(probability) else round(float(probability), 4), "status": str(row.status),
                     "review": review, "error": "" if pd.isna(row.error) else str(row.error),
                     "ood": str(getattr(row, "out_of_distribution", False)) == "True"})
    shown = {r["id"] for r in rows}
    data = {"rows": rows, "classes": list(classes), "positive": positive, "key": key or title,
            "thumbs": {k: base64.b64encode(v).decode() for k, v in thumbnails.items() if k in shown},
            "heat": {k: base64.b64encode(v).decode() for k, v in (overlays or {}).items() if k in shown},
            "stacks": {k: v for k, v in (stacks or {}).items() if k in shown and v is not None},
            "export_name": f"verdicts_{_safe_name(title)}.csv", "folder": folder}
    counts = {"files": summary["files"], "scored": summary["scored"], "errors": summary["errors"],
              "needs review": summary["needs_review"],
              **{f"predicted {c}": n for c, n in summary["predicted"].items()}}
    if cases := summary.get("cases"):
        counts["cases seen in several views"] = (f"{cases['n']}, {cases['called_positive']} called {cases['positive']} "
                                                 f"(see {Path(cases['file']).name})")
    if check := summary.get("against_labels"):
        counts["the folder's own labels"] = format_agreement(check, check["source"], check["labels_naming_no_class"])
    summary_html = "".join(f"<tr><td>{html.escape(k)}</td><td><b>{html.escape(str(v))}</b></td></tr>"
                           for k, v in counts.items())
    if screening:
        ci = screening.get("sensitivity_ci95")
        operating = (
            f"A scan is called <b>{html.escape(positive)}</b> when its calibrated probability is at least "
            f"{screening['decision']:.3f}: sensitivity {screening['sensitivity']:.3f}"
            + (f" (95% CI {ci[0]:.3f}–{ci[1]:.3f})" if ci else "")
            + f", specificity {screening['specificity']:.3f} on {screening['n_positive']} {html.escape(positive)} and "
            f"{screening['n_negative']} other calibration scans. Scans between {screening['review_low']:.3f} and "
            f"{screening['review_high']:.3f} are flagged for review."
        )
        if case_point := screening.get("cases"):
            operating += (f" A case seen in several views is called <b>{html.escape(positive)}</b> when its most "
                          f"probable view reaches {case_point['decision']:.3f}: sensitivity "
                          f"{case_point['sensitivity']:.3f}, specificity {case_point['specificity']:.3f} on "
                          f"{case_point['n_cases']} calibration cases.")
    else:
        operating = (f"Most probable class; a scan is flagged when its confidence is below the threshold at which "
                     f"its class reached precision {calibration.get('target_precision', '')} on "
                     f"{calibration.get('n_calibration', '?')} calibration scans.")
    for warning in calibration.get("warnings", []):
        operating += f"<br><b>Warning:</b> {html.escape(warning)}"
    truncated = (f"<p>The page holds the first {max_rows} of {len(report)} rows; the CSV report has them all.</p>"
                 if len(report) > max_rows else "")
    class_keys = ", ".join(f"<kbd>{i}</kbd> {html.escape(c)}" for i, c in enumerate(classes[:9], start=1))
    # "</" inside the JSON would end the script element early.
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    write_text(path, PAGE.format(title=html.escape(title), summary=summary_html, operating_point=operating,
                                 n_rows=len(ordered), positive_word=html.escape(positive or "error"),
                                 truncated=truncated, data=payload, class_keys=class_keys))


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:60] or "report"
