"""The Snakemake HTML report, rendered by headless Chromium.

The report is a React app: the HTML holds the results as data and JavaScript draws the menu and
the pages, so the tests drive a real browser as a reader would: open the report, check the
RESULTS menu lists every category the workflow declares, click Results -> Scorecard (-> its
subcategory) -> the scorecard's eye button, and read the table the page then shows (an iframe
holding results/tables/scorecard.html). Snakemake shows images, HTML and PDF results in the
page; a TSV is only a download link, so the scorecard is checked through its HTML rendering.

Chromium is driven through the DevTools protocol over a pipe (--remote-debugging-pipe: JSON
messages ending in NUL on file descriptors 3 and 4), so the tests need Debian's `chromium` and
nothing else: no ChromeDriver, no Selenium, no network.

- test_toy_report_renders_scorecard builds a two-rule workflow's report in a temporary folder
  (runs under plain `pytest`, about 15 s);
- test_workflow_report_renders_scorecard checks the demo's report (results/report.html, or one
  it builds from results/ when that is missing or older than the scorecard) and its front page
  (the studies and this run's scorecard headline); skipped, saying how to run it, before the
  demo (`snakemake --cores all`) has run.
"""

from __future__ import annotations

import csv
import html
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_REPORT = REPO / "results" / "report.html"
WORKFLOW_SCORECARD = REPO / "results" / "tables" / "scorecard.tsv"
WORKFLOW_HEADLINE = REPO / "results" / "report" / "scorecard_headline.rst"
CHROMIUM = (
    os.environ.get("KNEESYNTH_CHROMIUM")
    or shutil.which("chromium")
    or shutil.which("chromium-browser")
    or shutil.which("google-chrome")
)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
]
TIMEOUT_S = 60.0

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium (apt-get install chromium, or set KNEESYNTH_CHROMIUM to a Chrome binary)",
)


class DevToolsBrowser:
    """Headless Chromium driven through the DevTools protocol over --remote-debugging-pipe."""

    def __init__(self, binary: str, log_path: Path):
        self.profile = tempfile.mkdtemp(prefix="kneesynth-chromium-")
        to_browser_read, to_browser_write = os.pipe()
        from_browser_read, from_browser_write = os.pipe()

        def use_fds_3_and_4():
            # Chromium reads commands on fd 3 and writes replies on fd 4
            commands, replies = os.dup(to_browser_read), os.dup(from_browser_write)
            os.dup2(commands, 3)
            os.dup2(replies, 4)

        self.log = open(log_path, "wb")  # closed in close()
        self.process = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            pass_fds=(3, 4),
            preexec_fn=use_fds_3_and_4,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self.commands = to_browser_write
        self.replies = from_browser_read
        self.buffer = b""
        self.last_id = 0
        self.session: str | None = None
        self.log_path = log_path

    def send(self, method: str, session: str | None = None, **params) -> dict:
        """Send one command and return its result (events in between are dropped)."""
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            while b"\0" not in self.buffer:
                remaining = deadline - time.monotonic()
                ready, _, _ = select.select([self.replies], [], [], max(remaining, 0))
                if not ready:
                    raise TimeoutError(f"Chromium did not answer {method} in {TIMEOUT_S:.0f} s")
                chunk = os.read(self.replies, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"Chromium exited; its log: {self.log_path}")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.send("Page.enable", self.session)
        self.send("Page.navigate", self.session, url=url)

    def evaluate(self, expression: str, context: int | None = None):
        """The value of a JavaScript expression in the page (or in one frame's context)."""
        params = {"expression": expression, "returnByValue": True}
        if context is not None:
            params["contextId"] = context
        result = self.send("Runtime.evaluate", self.session, **params)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str):
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError as error:  # the page is (re)loading: no document to ask yet
                if "navigated" not in str(error) and "context" not in str(error):
                    raise
                value = None
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"the report never showed {what} ({TIMEOUT_S:.0f} s)")

    def frame_texts(self) -> list[str]:
        """innerText of every child frame (iframes of data: URLs, whose origin is opaque)."""
        tree = self.send("Page.getFrameTree", self.session)["frameTree"]
        texts = []
        for child in tree.get("childFrames", []):
            world = self.send(
                "Page.createIsolatedWorld", self.session, frameId=child["frame"]["id"]
            )
            text = self.evaluate(
                "document.body ? document.body.innerText : ''", world["executionContextId"]
            )
            texts.append(text or "")
        return texts

    def close(self) -> None:
        os.close(self.commands)
        os.close(self.replies)
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


# JavaScript run in the report page; `text` is the visible text of a menu item or table cell.
CLICK_TEXT = """(text => {
  const hits = [...document.querySelectorAll('nav a, nav span, nav td')]
    .filter(element => element.textContent.trim() === text);
  if (!hits.length) return false;
  hits[hits.length - 1].click();  // the innermost element; the click bubbles to its link
  return true;
})(%s)"""
RESULT_CATEGORIES = """(() => {
  const items = [...document.querySelectorAll('nav li')];
  const heading = items.findIndex(item => item.textContent.trim().toLowerCase() === 'results');
  return heading < 0 ? null : items.slice(heading + 1).map(item => item.textContent.trim());
})()"""
CLICK_ROW_BUTTON = """((cells, icon) => {
  const rows = [...document.querySelectorAll('nav tr')].filter(
    row => cells.every(cell => row.innerText.includes(cell)));
  if (rows.length !== 1) return false;
  const button = rows[0].querySelector(`a[iconname="${icon}"]`);
  if (!button) return false;
  button.click();
  return true;
})(%s, %s)"""


class ReportPage:
    """One Snakemake report open in the browser, navigated through its menu."""

    def __init__(self, browser: DevToolsBrowser, report: Path):
        self.browser = browser
        self.report = report
        browser.open(report.resolve().as_uri())
        self.home()

    def home(self) -> None:
        """Reload the report: its start page with the menu (the app keeps no state in the URL)."""
        self.browser.evaluate("window.kneesynthStale = true")
        self.browser.send("Page.reload", self.browser.session)
        self.browser.wait_for(
            "!window.kneesynthStale && document.body && " + RESULT_CATEGORIES, "its menu"
        )

    def data(self, name: str):
        """One of the report's embedded JavaScript globals (results, categories), to navigate."""
        return self.browser.evaluate(f"JSON.stringify({name})")

    def categories(self) -> list[str]:
        return self.browser.wait_for(RESULT_CATEGORIES, "the list of result categories")

    def click(self, text: str) -> None:
        self.browser.wait_for(CLICK_TEXT % json.dumps(text), f"a menu item {text!r}")

    def text(self) -> str:
        return self.browser.evaluate("document.body.innerText")

    def show_category(self, category: str) -> dict[str, list[str]]:
        """Click a category (and nothing more); its subcategories with their result paths."""
        subcategories = json.loads(self.data("categories"))[category]
        self.click(category)
        return subcategories

    def show_result(self, category: str, path: str, icon: str) -> None:
        """Results -> category -> subcategory -> the result's row -> its eye or info button."""
        subcategories = self.show_category(category)
        subcategory = next(name for name, paths in subcategories.items() if path in paths)
        if len(subcategories) > 1:
            self.click(subcategory)
        entry = json.loads(self.data("results"))[path]
        cells = list(entry["labels"].values()) if entry.get("labels") else [path]
        self.browser.wait_for(
            CLICK_ROW_BUTTON % (json.dumps([str(cell) for cell in cells]), json.dumps(icon)),
            f"the {icon} button of {path} under {category} / {subcategory}",
        )


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def declared_categories(rule_files: list[Path]) -> set[str]:
    """Categories named in the rules' report(..., category="...") calls."""
    pattern = re.compile(r'(?<![a-z_])category\s*=\s*"([^"]+)"')
    return {name for path in rule_files for name in pattern.findall(path.read_text())}


def check_report(report: Path, categories: set[str], scorecard_tsv: Path, log_dir: Path) -> None:
    """Every category is listed, each opens, and the scorecard table renders with its rows."""
    with open(scorecard_tsv, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert rows, f"{scorecard_tsv}: no claims"
    columns = list(rows[0])
    assert "reproduced" in columns, f"{scorecard_tsv}: no column 'reproduced' in {columns}"
    claim_column = "claim" if "claim" in columns else columns[0]

    browser = DevToolsBrowser(CHROMIUM, log_dir / "chromium.log")
    try:
        page = ReportPage(browser, report)
        listed = page.categories()
        missing = categories - set(listed)
        assert not missing, f"{report}: categories {sorted(missing)} not in the menu {listed}"

        for category in sorted(categories):
            page.home()
            subcategories = page.show_category(category)
            first = sorted(subcategories)[0]
            shown = (
                f"the subcategory {first!r} of {category!r}"
                if len(subcategories) > 1
                else f"a result of {category!r}"
            )
            expected = first if len(subcategories) > 1 else subcategories[first][0]
            browser.wait_for(
                f"document.querySelector('nav').innerText.includes({json.dumps(expected)})", shown
            )

        results = json.loads(page.data("results"))
        in_scorecard = json.loads(page.data("categories")).get("Scorecard", {}).values()
        pages = [
            path
            for paths in in_scorecard
            for path in paths
            if Path(path).name.startswith("scorecard") and results[path]["mime_type"] == "text/html"
        ]
        assert pages, (
            f"{report}: no HTML scorecard under 'Scorecard' (Snakemake shows a TSV only as a "
            "download link): add results/tables/scorecard.html to the report"
        )
        scorecard = pages[0]

        page.home()
        page.show_result("Scorecard", scorecard, "eye")
        browser.wait_for(
            "[...document.querySelectorAll('iframe')].some(f => f.src.startsWith('data:'))",
            f"{scorecard} in the page",
        )
        deadline = time.monotonic() + TIMEOUT_S
        rendered = ""
        while time.monotonic() < deadline and "reproduced" not in rendered:
            rendered = normalise(" ".join(browser.frame_texts()))
            time.sleep(0.2)
        for column in columns:
            assert column in rendered, f"{scorecard}: column {column!r} not shown: {rendered[:300]}"
        for row in rows:
            claim = normalise(row[claim_column])
            assert claim in rendered, f"{scorecard}: claim {claim!r} not shown"
        verdicts = {normalise(row["reproduced"]) for row in rows}
        assert all(verdict in rendered for verdict in verdicts), verdicts

        page.home()
        page.show_result("Scorecard", scorecard, "information-circle")
        caption = normalise(html.unescape(re.sub(r"<[^>]+>", " ", results[scorecard]["caption"])))
        assert caption, f"{scorecard}: empty caption"
        browser.wait_for(
            f"document.body.innerText.replace(/\\s+/g, ' ').includes({json.dumps(caption[:60])})",
            f"the caption of {scorecard}",
        )
    finally:
        browser.close()


HTML_IN_REPORT = """report(
            "results/tables/scorecard.html",
            caption="report/scorecard.rst",
            category="Scorecard",
            subcategory="stats",
        )"""
TOY_SNAKEFILE = """\
rule all:
    input:
        "results/tables/scorecard.tsv",
        "results/tables/table1_drr.tsv",


rule scorecard:
    output:
        tsv=report(
            "results/tables/scorecard.tsv",
            caption="report/scorecard.rst",
            category="Scorecard",
            subcategory="stats",
        ),
        html=HTML_OUTPUT,
        provenance=report(
            "results/tables/provenance.tsv",
            caption="report/scorecard.rst",
            category="Scorecard",
            subcategory="provenance",
        ),
    run:
        import pandas as pd

        table = pd.DataFrame(
            {
                "claim": ["CTM beats CSM on SSIM (contour)", "DDPM FID < WGAN FID"],
                "paper_value": [0.91, 1.0],
                "our_value": [0.87, 0.0],
                "reproduced": ["yes", "no"],
            }
        )
        table.to_csv(output.tsv, sep="\\t", index=False)
        table.to_html(output.html, index=False)
        table.head(1).to_csv(output.provenance, sep="\\t", index=False)


rule table1:
    output:
        report(
            "results/tables/table1_drr.tsv",
            caption="report/table1.rst",
            category="Study A",
            subcategory="stats",
        ),
    shell:
        "printf 'model\\\\tvalue\\\\ncsm\\\\t1\\\\n' > {output}"
"""


def build_toy_report(folder: Path, html_output: str) -> Path:
    """A two-rule workflow's report: a scorecard (TSV and html_output) and a Study A table."""
    (folder / "report").mkdir()
    (folder / "Snakefile").write_text(TOY_SNAKEFILE.replace("HTML_OUTPUT", html_output))
    (folder / "report" / "scorecard.rst").write_text(
        "The reproduction scorecard: one row per claim of the papers.\n"
    )
    (folder / "report" / "table1.rst").write_text("Table I of Mei et al.\n")
    for args in (["--cores", "1"], ["--report", "results/report.html"]):
        run = subprocess.run(
            [sys.executable, "-m", "snakemake", *args],
            cwd=folder,
            env={key: value for key, value in os.environ.items() if key != "SNAKEMAKE_PROFILE"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return folder / "results" / "report.html"


@pytest.mark.slow
@needs_chromium
def test_toy_report_renders_scorecard(tmp_path):
    report = build_toy_report(tmp_path, HTML_IN_REPORT)
    categories = declared_categories([tmp_path / "Snakefile"])
    assert categories == {"Scorecard", "Study A"}
    check_report(report, categories, tmp_path / "results/tables/scorecard.tsv", tmp_path)


@pytest.mark.slow
@needs_chromium
def test_toy_report_without_html_scorecard_fails_the_check(tmp_path):
    """The check can fail: a scorecard that is only a TSV is a download link, not a page."""
    report = build_toy_report(tmp_path, '"results/tables/scorecard.html"')
    with pytest.raises(AssertionError, match="no HTML scorecard"):
        check_report(
            report, {"Scorecard", "Study A"}, tmp_path / "results/tables/scorecard.tsv", tmp_path
        )


def workflow_report(folder: Path) -> Path:
    """The demo's report: results/report.html when it is as new as the scorecard, else built
    here from the run's results (`snakemake --report` into ``folder``; results/ is untouched)."""
    if (
        WORKFLOW_REPORT.exists()
        and WORKFLOW_REPORT.stat().st_mtime >= WORKFLOW_SCORECARD.stat().st_mtime
    ):
        return WORKFLOW_REPORT
    report = folder / "report.html"
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--report", str(report)],
        cwd=REPO,
        env={key: value for key, value in os.environ.items() if key != "SNAKEMAKE_PROFILE"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return report


def check_front_page(report: Path, headline: Path, log_dir: Path) -> None:
    """The report opens on the workflow's description: the studies and this run's headline."""
    first = headline.read_text().splitlines()[0]  # **This run:** N claims: ...
    expected = normalise(first.replace("**", ""))
    browser = DevToolsBrowser(CHROMIUM, log_dir / "chromium-front.log")
    try:
        page = ReportPage(browser, report)
        text = browser.wait_for(
            f"document.body.innerText.replace(/\\s+/g, ' ').includes({json.dumps(expected)})"
            " && document.body.innerText",
            f"the scorecard headline {expected!r} on the front page",
        )
        for study in ("Study A (Mei et al.)", "Study B (Smits Serena et al.)", "Study C"):
            assert study in page.text(), f"{report}: {study!r} not on the front page"
        assert "What each study reproduces" in text
    finally:
        browser.close()


@pytest.mark.slow
@needs_chromium
@pytest.mark.skipif(
    not (WORKFLOW_SCORECARD.exists() and WORKFLOW_HEADLINE.exists()),
    reason=f"no {WORKFLOW_SCORECARD.relative_to(REPO)} and "
    f"{WORKFLOW_HEADLINE.relative_to(REPO)} (or results/ of an older version): run the demo "
    "first (`snakemake --cores all`); this test then builds the report itself "
    "(or reads results/report.html from `snakemake --report results/report.html`)",
)
def test_workflow_report_renders_scorecard(tmp_path):
    rule_files = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    categories = declared_categories(rule_files)
    assert "Scorecard" in categories, "no rule puts a result in the category 'Scorecard'"
    report = workflow_report(tmp_path)
    check_report(report, categories, WORKFLOW_SCORECARD, tmp_path)
    check_front_page(report, WORKFLOW_HEADLINE, tmp_path)
