"""What a researcher sees: `mlflow ui` on a smoke table's store, opened in a real browser (the system's Chromium,
driven by Playwright) at the README's URL. Skipped, saying why, only where Chromium or Playwright is missing."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import tracking
from tests.test_safety import _free_port, _stop, _wait_healthy

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
# the README's link to the runs of a fresh store (its tables experiment is always experiment 1)
RUNS_PATH = "/#/experiments/1/runs?workflowType=machine_learning"
# Chromium as the machine runs it: no sandbox as root, and no background calls to hosts it cannot reach
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser():
    if not CHROMIUM:
        pytest.skip("Chromium is not installed (apt install chromium)")
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' (playwright)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def test_mlflow_ui_opens_on_the_table_runs_with_figures_and_metrics(workdir, capsys, browser):
    from benchmark.__main__ import main
    assert RUNS_PATH in README, "the README gives the URL this test opens"
    # sprites, one pass: the smoke data and judge that tests/test_tables.py uses too (one session cache)
    assert main(["run", "--table", "2", "--profile", "smoke", "--seeds", "1", "--datasets", "sprites",
                 "--passes", "1"]) == 0
    parent = json.loads(capsys.readouterr().out)["parent_run_id"]
    cells = tracking.search_runs(f"tags.mlflow.parentRunId = '{parent}'")
    assert len(cells) == 4
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri",
                               f"sqlite:///{workdir / 'mlruns.db'}", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_healthy(base, timeout=180)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.set_default_timeout(90_000)

        # 1. the README's URL opens the runs table (not MLflow 3's GenAI overview), described, with the table run;
        #    expanding it shows its cells' runs
        page.goto(base + RUNS_PATH)
        page.get_by_text("table2-smoke").first.wait_for()
        body = page.inner_text("body")
        assert "Tables and single runs" in body, "the experiment's description"
        assert "Detect Issues" not in body and "Traces\n0" not in body, "not the GenAI overview"
        page.locator(f'[row-id="{parent}"]').locator("button").first.click()
        for run in cells:
            page.get_by_text(run.info.run_name).first.wait_for()

        # 2. the table's parent run shows the table: its markdown as the description and mean/std/n as metrics
        page.goto(f"{base}/#/experiments/1/runs/{parent}?workflowType=machine_learning")
        page.get_by_text("table/sprites/s3vae/acc_mean").first.wait_for()
        body = page.inner_text("body")
        assert "Table 2: Ablation" in body and "table/sprites/no-mi/h_y_given_x_std" in body
        assert re.search(r"Metrics \(\d+\)", body)

        # 3. a cell's figure renders as an image, with its caption drawn into it
        cell = next(r for r in cells if r.data.tags["model"] == "s3vae")
        page.goto(f"{base}/#/experiments/1/runs/{cell.info.run_id}/artifacts/figures/swap.png"
                  "?workflowType=machine_learning")
        page.wait_for_function("() => [...document.images].some(i => i.src.startsWith('blob:') && i.complete "
                               "&& i.naturalWidth > 100 && i.naturalHeight > 100)")
        page.get_by_text("figures/swap.png").first.wait_for()
    finally:
        _stop(server)
