"""The HTML report really renders: opened in headless Chromium, every plot has a size, the SRM
warning is visible, nothing is fetched from the network, and a screenshot is kept in
./test-artifacts/ for a human to look at.

Skipped only on a developer machine without /usr/bin/chromium; in CI (env CI set) a missing
browser is a failure, not a skip.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from commands.main import app
from training.ab.simulate import SimulationConfig, write_logs

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists() and not os.environ.get("CI"),
                                reason="/usr/bin/chromium not installed (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def online_report(tmp_path_factory) -> Path:
    """Simulated logs with a planted lift and a planted SRM, through `recsys ab-report`."""
    root = tmp_path_factory.mktemp("browser")
    logs = write_logs(root / "logs", SimulationConfig(n_users=5_000, ctr_lift={"B": 0.2}, lost_treatment_share=0.12), seed=31)
    out = root / "report.html"
    result = CliRunner().invoke(app, ["ab-report", "--experiment", str(logs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_report_renders_plots_and_warnings_in_headless_chromium(online_report):
    if not CHROMIUM.exists():
        pytest.fail("CI is set but /usr/bin/chromium is missing: the CI script must apt-get install chromium")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "ab-report-online.png"
    requests: list[str] = []
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(online_report.as_uri(), wait_until="load")

            plots = page.locator("figure svg")
            assert plots.count() == 4  # metric bars, lift forest, confidence sequences, cumulative lift
            for i in range(plots.count()):
                box = plots.nth(i).bounding_box()
                assert box and box["width"] > 300 and box["height"] > 100, f"plot {i} rendered at {box}"
                assert plots.nth(i).locator("path").count() > 10  # drawn marks, not an empty frame
            bars = page.locator("#fig-metrics svg path").first.bounding_box()
            assert bars and bars["width"] > 0 and bars["height"] > 0

            decision = page.locator('[data-decision="dont_ship"]')
            assert decision.is_visible() and "DON'T SHIP" in decision.inner_text()

            alert = page.locator('[data-code="SRM"]')
            assert alert.is_visible() and "SAMPLE RATIO MISMATCH" in alert.inner_text()
            assert alert.bounding_box()["y"] < page.locator("#figures").bounding_box()["y"]  # warnings come first
            assert decision.bounding_box()["y"] < alert.bounding_box()["y"]  # ... after the decision line
            assert page.locator("#comparisons tbody tr").count() == 4  # raw + CUPED rows for 2 metrics

            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 50_000  # a real page, not a blank canvas
    assert all(u.startswith(("file:", "data:", "about:")) for u in requests), requests
    assert not errors, errors
