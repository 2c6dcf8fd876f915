"""The review page opens in headless Chromium from disk, with no console errors, and shows
every flagged scan. CI installs Debian's chromium (.ci/run) and sets REQUIRE_BROWSER=1."""

import io
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.config import load_config
from pipeline.stages.calibrate import calibrate
from pipeline.stages.score import score
from pipeline.trainer import Trainer

from toy import toy_images, toy_training_data

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]


@pytest.fixture
def browser():
    if CHROMIUM is None:
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail("REQUIRE_BROWSER is set but no chromium binary is on PATH")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return CHROMIUM


def scored_folder(tmp_path, broken="broken.png"):
    """A toy model's report on 25 toy scans and a broken file: (report CSV, page)."""
    data = toy_training_data()
    run = tmp_path / "run"
    config = load_config(None, ["preprocess.spatial_size=[16,16]", "network.channels=[8,16]", "train.steps=15",
                                "train.eval_every=15", "train.threads=1", "calibrate.min_support=3"])
    Trainer(config, data, run, progress=False).fit()
    calibrate(run, data=data)
    scans = tmp_path / "scans"
    scans.mkdir()
    images, _ = toy_images(25, seed=21)
    for i, image in enumerate(images):
        Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(scans / f"s{i:02d}.png")
    (scans / broken).write_text("x")
    out = score(scans, run, out=tmp_path / "report.csv", workers=1, progress=False)
    return out, out.with_suffix(".html")


def run_page(browser, tmp_path, page, profile="profile"):
    result = subprocess.run([browser, *FLAGS, f"--user-data-dir={tmp_path / profile}", "--allow-file-access-from-files",
                             "--virtual-time-budget=15000", "--dump-dom", page.as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    console_errors = [line for line in result.stderr.splitlines()
                      if "CONSOLE" in line and re.search(r"error|uncaught", line, re.I)]
    assert not console_errors, console_errors
    return result.stdout


def test_review_page_loads_without_console_errors_and_shows_flagged_scans(browser, tmp_path):
    out, page = scored_folder(tmp_path)
    dom = run_page(browser, tmp_path, page)
    report = pd.read_csv(out, keep_default_na=False)
    flagged = report.loc[report["needs_review"].astype(str) == "True", "scan_id"]
    assert len(flagged) >= 1  # the broken file at least
    for scan_id in flagged:
        assert f'data-id="{scan_id}"' in dom, scan_id
    assert dom.count("<img") >= 25  # every scored scan's thumbnail (one page of 100 rows)
    shot = tmp_path / "page.png"
    subprocess.run([browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", f"--screenshot={shot}",
                    "--window-size=1000,800", page.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 5000


HARNESS = """<!doctype html><html><body><pre id="out">pending</pre>
<iframe id="f" src="REPORT" width="1000" height="700"></iframe>
<script>
const frame = document.getElementById("f"), out = document.getElementById("out");
const steps = [];
function key(k) { frame.contentWindow.document.dispatchEvent(new KeyboardEvent("keydown", {key: k, bubbles: true})); }
function doc() { return frame.contentWindow.document; }
let loads = 0;
frame.addEventListener("load", () => {
  loads += 1;
  const d = doc();
  try {
    if (loads === 1) {
      const filter = d.getElementById("filter");
      filter.value = "flagged"; filter.dispatchEvent(new Event("change"));
      steps.push({flagged_rows: d.querySelectorAll("#scans tbody tr").length});
      filter.value = "all"; filter.dispatchEvent(new Event("change"));
      steps.push({all_rows: d.querySelectorAll("#scans tbody tr").length});
      key("j"); key("Enter");
      steps.push({viewer: d.getElementById("viewer").style.display,
                  viewer_title: d.getElementById("viewertitle").textContent,
                  selected: d.querySelector("tr.selected").dataset.id});
      key("Escape");
      steps.push({viewer_after_escape: d.getElementById("viewer").style.display});
      key("c");                    // confirm the second row's prediction
      key("j"); key("j"); key("2"); // relabel the fourth row as class 2
      key("j"); key("u");          // the fifth: unsure (not exported as a label)
      steps.push({verdicts_before_reload: d.getElementById("verdictcount").textContent});
      frame.contentWindow.location.reload();
    } else {
      steps.push({verdicts_after_reload: d.getElementById("verdictcount").textContent,
                  csv: frame.contentWindow.exportCSV(),
                  ids: Array.from(d.querySelectorAll("#scans tbody tr")).slice(0, 5).map(r => r.dataset.id)});
      out.textContent = JSON.stringify(steps);
    }
  } catch (error) { out.textContent = "harness error: " + error; }
});
</script></body></html>"""


def test_review_page_filters_enlarges_keeps_keyboard_verdicts_across_reloads_and_exports(browser, tmp_path):
    import html
    import json

    out, page = scored_folder(tmp_path)
    harness = tmp_path / "harness.html"
    harness.write_text(HARNESS.replace("REPORT", page.as_uri()))
    dom = run_page(browser, tmp_path, harness)
    text = html.unescape(re.search(r'<pre id="out">(.*?)</pre>', dom, re.S).group(1))
    assert not text.startswith(("pending", "harness error")), text
    steps = {k: v for step in json.loads(text) for k, v in step.items()}
    report = pd.read_csv(out, keep_default_na=False)
    assert steps["flagged_rows"] == (report["needs_review"].astype(str) == "True").sum()
    assert steps["all_rows"] == len(report)
    assert steps["viewer"] == "block" and steps["viewer_title"] == steps["selected"]
    assert steps["viewer_after_escape"] == "none"
    assert steps["verdicts_before_reload"] == "3 verdicts" and steps["verdicts_after_reload"] == "3 verdicts"
    ids = steps["ids"]
    exported = pd.read_csv(io.StringIO(steps["csv"]), keep_default_na=False)
    assert list(exported.columns) == ["file", "label", "verdict", "reviewed_at", "folder"]
    assert set(exported["folder"]) == {str((tmp_path / "scans").resolve())}  # the scored folder, for the merge
    by_file = exported.set_index("file")
    predicted = report.set_index("scan_id")["prediction"]
    assert by_file.loc[ids[1], ["label", "verdict"]].tolist() == [predicted[ids[1]], "confirmed"]
    assert by_file.loc[ids[3], ["label", "verdict"]].tolist() == ["b", "relabelled"]  # key 2: the second class
    assert ids[4] not in by_file.index and len(exported) == 2  # unsure is recorded, not exported as a label


# A page in a frame, a canvas's brightness, and BODY run once it has loaded (its result written to #out)
CANVAS_HARNESS = """<!doctype html><html><body><pre id="out">pending</pre>
<iframe id="f" src="REPORT" width="1000" height="700"></iframe>
<script>
const frame = document.getElementById("f"), out = document.getElementById("out");
function brightness(canvas) {
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let total = 0; for (let i = 0; i < pixels.length; i += 4) total += pixels[i]; return total;
}
frame.addEventListener("load", () => {
  const d = frame.contentWindow.document;
  try {
BODY
  } catch (error) { out.textContent = "harness error: " + error; }
});
</script></body></html>"""

SLIDER_HARNESS = CANVAS_HARNESS.replace("BODY", """
    d.querySelector('#scans tbody tr[data-id="head.nii.gz"]').click();
    const canvases = Array.from(d.querySelectorAll("#viewerstack canvas"));
    const sliders = Array.from(d.querySelectorAll("#viewerstack input[type=range]"));
    setTimeout(() => {
      const result = {planes: canvases.length, sliders: sliders.length, max: sliders.map(s => +s.max),
                      flat_hidden: d.getElementById("viewerimg").getAttribute("src") === "", first: [], last: []};
      sliders.forEach((slider, plane) => {
        slider.value = 0; slider.dispatchEvent(new Event("input"));
        result.first.push(brightness(canvases[plane]));
        slider.value = slider.max; slider.dispatchEvent(new Event("input"));
        result.last.push(brightness(canvases[plane]));
      });
      result.caption = d.querySelector("#viewerstack figcaption").textContent;
      d.querySelector('#scans tbody tr[data-id="chest.png"]').click();
      result.stack_for_2d = d.getElementById("viewerstack").style.display;
      out.textContent = JSON.stringify(result);
    }, 200);""")


def harness_result(browser, tmp_path, harness_page: str, page) -> dict:
    """What a harness (CANVAS_HARNESS with its BODY) wrote to #out about ``page``, as JSON."""
    import html
    import json

    harness = tmp_path / "harness.html"
    harness.write_text(harness_page.replace("REPORT", page.as_uri()))
    dom = run_page(browser, tmp_path, harness)
    text = html.unescape(re.search(r'<pre id="out">(.*?)</pre>', dom, re.S).group(1))
    assert not text.startswith(("pending", "harness error")), text
    return json.loads(text)


def test_enlarged_volume_pages_through_slices_in_three_planes(browser, tmp_path):

    from pipeline.review import slice_stack, thumbnail_png, write_review_page

    volume = np.zeros((1, 20, 24, 28), np.float32)
    volume[0, :5, :6, :7] = 1.0  # a bright block at the low end of every axis: first slices bright, last dark
    picture = np.random.default_rng(0).random((1, 16, 16)).astype(np.float32)
    report = pd.DataFrame({"scan_id": ["head.nii.gz", "chest.png"], "path": ["", ""], "prediction": ["a", "b"],
                           "confidence": [0.9, 0.8], "p_a": [0.9, 0.2], "p_b": [0.1, 0.8], "needs_review": [True, False],
                           "status": ["ok", "ok"], "error": ["", ""]})
    summary = {"files": 2, "scored": 2, "errors": 0, "needs_review": 1, "predicted": {"a": 1, "b": 1}}
    page = tmp_path / "report.html"
    write_review_page(page, report, {"head.nii.gz": thumbnail_png(volume), "chest.png": thumbnail_png(picture)},
                      summary, {}, ["a", "b"], title="slices",
                      stacks={"head.nii.gz": slice_stack(volume), "chest.png": slice_stack(picture)})
    result = harness_result(browser, tmp_path, SLIDER_HARNESS, page)
    assert result["planes"] == 3 and result["sliders"] == 3 and result["max"] == [23, 23, 23]  # 24 slices
    assert result["flat_hidden"]
    assert all(first > 0 for first in result["first"]), result
    assert all(last == 0 for last in result["last"]), result  # the slider really moves through the volume
    assert result["caption"] == "sagittal slice 24 of 24"
    assert result["stack_for_2d"] == "none"


WIDTHS = """<!doctype html><html><body><pre id="out">pending</pre>
<iframe id="f" src="REPORT" width="1000" height="700"></iframe>
<script>
document.getElementById("f").addEventListener("load", () => {
  const d = document.getElementById("f").contentWindow.document;
  const cells = Array.from(d.querySelector('#scans tbody tr[data-id="NAME"]').children);
  document.getElementById("out").textContent = JSON.stringify(cells.map(c => c.getBoundingClientRect().width));
});
</script></body></html>"""


def test_a_long_id_without_spaces_wraps_and_leaves_the_error_readable(browser, tmp_path):
    import html
    import json

    # a case's id (7100000/{t1_mprage_tra,...}) has no space to break at
    name = "{" + ",".join(["t1_mprage_tra_km", "t2_tirm_tra_dark_fluid"] * 4) + "}.png"
    out, page = scored_folder(tmp_path, broken=name)
    harness = tmp_path / "widths.html"
    harness.write_text(WIDTHS.replace("REPORT", page.as_uri()).replace("NAME", name))
    text = html.unescape(re.search(r'<pre id="out">(.*?)</pre>', run_page(browser, tmp_path, harness), re.S).group(1))
    widths = json.loads(text)
    assert widths[2] < 300 and widths[-1] > 150, widths  # the scan's id wraps; the error has room


CHANNELS_HARNESS = CANVAS_HARNESS.replace("BODY", """
    d.querySelector('#scans tbody tr[data-id="7100000/{flair,t1}"]').click();
    setTimeout(() => {
      const figure = d.querySelector("#viewerstack figure"), slider = figure.querySelector("input[type=range]");
      const canvases = Array.from(figure.querySelectorAll("canvas"));
      const result = {canvases: d.querySelectorAll("#viewerstack canvas").length, titles: canvases.map(c => c.title),
                      thumb: d.querySelector('#scans tbody tr[data-id="7100000/{flair,t1}"] img').naturalHeight};
      slider.value = 0; slider.dispatchEvent(new Event("input"));
      result.first = canvases.map(brightness);
      slider.value = slider.max; slider.dispatchEvent(new Event("input"));
      result.last = canvases.map(brightness);
      result.caption = figure.querySelector("figcaption").textContent;
      out.textContent = JSON.stringify(result);
    }, 200);""")


def test_an_enlarged_case_shows_each_of_its_sequences_at_one_slice(browser, tmp_path):
    # a tumour that shows on the FLAIR alone must be seen: every sequence of a case, not the first one only

    from pipeline.review import slice_stack, thumbnail_png, write_review_page

    case = np.zeros((2, 20, 24, 28), np.float32)
    case[0, :5] = 1.0  # the FLAIR bright at the first sagittal slices
    case[1, -5:] = 1.0  # the T1 bright at the last
    case_id = "7100000/{flair,t1}"
    report = pd.DataFrame({"scan_id": [case_id], "path": [""], "prediction": ["a"], "confidence": [0.9],
                           "p_a": [0.9], "p_b": [0.1], "needs_review": [True], "status": ["ok"], "error": [""]})
    summary = {"files": 1, "scored": 1, "errors": 0, "needs_review": 1, "predicted": {"a": 1}}
    page = tmp_path / "report.html"
    write_review_page(page, report, {case_id: thumbnail_png(case)}, summary, {}, ["a", "b"], title="case",
                      stacks={case_id: slice_stack(case)})
    result = harness_result(browser, tmp_path, CHANNELS_HARNESS, page)
    assert result["canvases"] == 6 and result["titles"] == ["flair", "t1"]  # two a plane, three planes
    assert result["first"][0] > 0 and result["first"][1] == 0, result  # the first slice: the FLAIR's block
    assert result["last"][0] == 0 and result["last"][1] > 0, result  # the last: the T1's
    assert result["caption"] == "sagittal slice 24 of 24 (top to bottom: flair, t1)"
    assert result["thumb"] == 64  # the thumbnail: a row of three planes a sequence, 96 pixels wide
