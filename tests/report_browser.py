"""Open Snakemake's HTML report in headless Chromium and check what a reader sees.

The report is a single-page app without addresses for its pages, so a small script, added to a copy of
the report, clicks through it the way a reader would: Results, the figure's category (and
subcategory), the figure's "view" icon, then its "info" icon. For every figure it records whether the
picture is on the screen, decoded (its natural size is that of the PNG) and not blank (enough non-white
pixels when drawn on a canvas), and whether the caption's text appears. Chromium's ``--dump-dom``
returns the record; a screenshot of one figure is kept for a person to look at.
"""
from __future__ import annotations

import html as html_lib
import json
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
RESULT_ID = "modmask-report-check"


def find_chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def report_data(html: str) -> tuple[dict, dict]:
    """The report's embedded results (path -> entry) and categories (category -> subcategory -> paths)."""
    results = json.loads(re.search(r"var results = (\{.*?\});?\s*</script>", html, re.S).group(1))
    categories = json.loads(re.search(r"var categories = (\{.*?\});?\s*</script>", html, re.S).group(1))
    return results, categories


def plain_text(caption_html: str) -> str:
    return re.sub(r"\s+", " ", html_lib.unescape(re.sub(r"<[^>]+>", " ", caption_html))).strip()


def figure_entries(html: str, suffix: str = ".png") -> list[dict]:
    """What the clicking script needs of every figure: where it sits in the menus, what it shows."""
    results, categories = report_data(html)
    entries = []
    for category, subcategories in categories.items():
        for subcategory, paths in subcategories.items():
            for path in paths:
                entry = results[path]
                if not path.endswith(suffix):
                    continue
                entries.append({"path": path, "category": category, "subcategory": subcategory,
                                "labels": entry.get("labels") or None, "name": entry["name"],
                                "data_prefix": entry["data_uri"][:200],
                                "caption": plain_text(entry.get("caption") or "")[:60]})
    return entries


_SCRIPT = r"""
<script>
(() => {
const ENTRIES = %(entries)s;
const sleep = ms => new Promise(r => setTimeout(r, ms));
const norm = s => (s || "").replace(/\s+/g, " ").trim();
function byText(t) {
  return [...document.querySelectorAll("a,button,li,span,div,td,th,p,h1,h2,h3")]
    .filter(e => e.children.length <= 3 && norm(e.textContent) === t);
}
function clickText(t) {
  const els = byText(t);
  if (!els.length) return false;
  els[els.length - 1].click();
  return true;
}
function rowOf(entry) {
  if (entry.labels) {
    const values = Object.values(entry.labels).map(String);
    return [...document.querySelectorAll("tr")].find(tr => {
      const cells = [...tr.querySelectorAll("td")].map(td => norm(td.textContent));
      return values.every(v => cells.includes(v));
    });
  }
  const els = byText(entry.path).concat(byText(entry.name));
  if (!els.length) return null;
  let row = els[els.length - 1];
  for (let k = 0; k < 5 && row && row.querySelectorAll("svg").length < 2; k++) row = row.parentElement;
  return row;
}
function icons(row) {
  return [...row.querySelectorAll("a,button")].filter(e => e.querySelector("svg"));
}
function blankness(img) {
  const canvas = document.createElement("canvas");
  const w = canvas.width = Math.min(img.naturalWidth, 400), h = canvas.height = Math.min(img.naturalHeight, 300);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "white"; ctx.fillRect(0, 0, w, h);
  ctx.drawImage(img, 0, 0, w, h);
  const data = ctx.getImageData(0, 0, w, h).data;
  let ink = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i] + data[i + 1] + data[i + 2] < 600) ink++;
  return ink / (w * h);
}
async function visit(entry) {
  const record = {path: entry.path};
  clickText("Results"); await sleep(200);
  if (!clickText(entry.category)) return {...record, error: "category " + entry.category + " not in the menu"};
  await sleep(200);
  if (entry.subcategory !== "Other" && !clickText(entry.subcategory)) {
    // a single subcategory may be shown directly; only fail when the row is not there either
  }
  await sleep(200);
  const row = rowOf(entry);
  if (!row) return {...record, error: "no row for the figure in its category"};
  const buttons = icons(row);
  if (buttons.length < 1) return {...record, error: "no view icon"};
  buttons[0].click(); await sleep(400);
  const img = [...document.querySelectorAll("img")].find(i => (i.getAttribute("src") || "").startsWith(entry.data_prefix));
  if (!img) return {...record, error: "the figure is not shown"};
  const box = img.getBoundingClientRect();
  record.width = img.naturalWidth; record.height = img.naturalHeight;
  record.shown = box.width > 50 && box.height > 50;
  record.ink = img.naturalWidth ? blankness(img) : 0;
  if (buttons.length > 1) { buttons[1].click(); await sleep(300); }
  const squeeze = s => (s || "").replace(/\s+/g, "");
  record.caption = !entry.caption || squeeze(document.body.innerText).includes(squeeze(entry.caption));
  return record;
}
window.addEventListener("load", async () => {
  await sleep(500);
  const records = [];
  for (const entry of ENTRIES) {
    try { records.push(await visit(entry)); } catch (e) { records.push({path: entry.path, error: String(e)}); }
  }
  if (%(show_first)s && ENTRIES.length) { await visit(ENTRIES[0]); }
  const pre = document.createElement("pre");
  pre.id = "%(result_id)s";
  pre.textContent = JSON.stringify(records);
  document.body.appendChild(pre);
});
})();
</script>
"""


def clicking_copy(report: Path, entries: list[dict], out: Path, show_first: bool = False) -> Path:
    """A copy of the report with the clicking script added before ``</body>``."""
    html = report.read_text()
    script = _SCRIPT % {"entries": json.dumps(entries), "result_id": RESULT_ID,
                        "show_first": "true" if show_first else "false"}
    at = html.rfind("</body>")
    out.write_text(html[:at] + script + html[at:])
    return out


def chromium(binary: str, page: Path, *args: str, budget_ms: int, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--virtual-time-budget={budget_ms}", "--window-size=1400,1000", *args, page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def check_report(report: Path, work: Path, binary: str) -> tuple[list[dict], list[dict], Path]:
    """Visit every figure of ``report``; returns (figure entries, one record per figure, a screenshot
    of the first figure as the report shows it)."""
    entries = figure_entries(report.read_text())
    page = clicking_copy(report, entries, work / "report_clicked.html")
    budget = 2000 + 1500 * len(entries)
    dom = chromium(binary, page, "--dump-dom", budget_ms=budget).stdout
    match = re.search(rf'<pre id="{RESULT_ID}">(.*?)</pre>', dom, re.S)
    records = json.loads(html_lib.unescape(match.group(1))) if match else []
    shot_page = clicking_copy(report, entries[:1], work / "report_first.html", show_first=True)
    screenshot = work / "report_first_figure.png"
    chromium(binary, shot_page, f"--screenshot={screenshot}", budget_ms=6000)
    return entries, records, screenshot
