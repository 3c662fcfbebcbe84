"""The web console (``GET /ui``) in a real browser: Debian's headless chromium, unpacked by `make tools`,
driven through chromedriver by selenium, against a real `modelserve serve`.

The page must load with no error in the browser's console, list every model READY with its traffic, show a
model UNAVAILABLE after its Unload button is clicked, and show the server's message when a load fails. With
authentication on, the page and its figures need an admin key, which the sign-in page keeps for the tab.
A screenshot of each test's page is saved under its tmp folder; ``UPDATE_SCREENSHOTS=1`` also writes the
README's (docs/images/console.png).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from tests.deploy.tools import ROOT, browser
from tests.e2e.server import RunningServer, make_run_options, serve
from tests.server.credentials import ADMIN_KEY, INFER_KEY, bearer

pytestmark = pytest.mark.e2e

WAIT_S = 15.0  # the page polls every 2 s: a change shows within one or two polls
REQUESTS = 40  # inference requests sent before the page opens, so that it has traffic to show
SCREENSHOT = ROOT / "docs" / "images" / "console.png"


@pytest.fixture(scope="module")
def server(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Every example model, served as `make run` serves them: on demand within a memory budget, with the
    predictive pre-warming policy, so the console shows both."""
    root = tmp_path_factory.mktemp("console")
    repository = root / "model_repository"
    shutil.copytree(built_repository, repository)
    with serve(repository, root / "server.log", *make_run_options()) as running:
        yield running


@pytest.fixture(scope="module")
def guarded(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The same models behind API keys: one admin, one infer only."""
    root = tmp_path_factory.mktemp("console-auth")
    arguments = ("--model-control-mode", "explicit", "--load-model", "*")
    keys = {"API_KEYS": f"{ADMIN_KEY}:admin,{INFER_KEY}:infer"}
    with serve(built_repository, root / "server.log", *arguments, env=keys) as running:
        yield running


@pytest.fixture
def driver() -> Iterator[WebDriver]:
    """Headless chromium from .tools, its console messages kept for ``errors``."""
    found = browser()
    options = Options()
    options.binary_location = found.chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(options=options, service=Service(found.chromedriver, env=found.env))
    try:
        yield chrome
    finally:
        chrome.quit()


def errors(driver: WebDriver) -> list[str]:
    """The errors the page's console logged since the last call."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def states(driver: WebDriver) -> dict[str, str]:
    """Each model's state as the page's table shows it, read in one script: a poll may redraw the table
    between two element lookups."""
    script = (
        "return Object.fromEntries(Array.from(document.querySelectorAll('#models tbody tr'),"
        " (row) => [row.dataset.model, row.querySelector('.state').textContent]))"
    )
    return dict(driver.execute_script(script))


def cell(driver: WebDriver, model: str, column: int) -> str:
    """The text of ``model``'s row in ``column`` (1 is the name), read in one script."""
    script = "const row = document.querySelector(`#models tr[data-model='${arguments[0]}']`);"
    return str(driver.execute_script(f"{script} return row ? row.cells[{column - 1}].textContent : '';", model))


def click(driver: WebDriver, model: str, action: str) -> None:
    """Click ``model``'s ``action`` button, again if a poll redrew the table between finding and clicking it."""

    def clicked(d: WebDriver) -> bool:
        d.find_element(By.CSS_SELECTOR, f'button[data-model="{model}"][data-action="{action}"]').click()
        return True

    WebDriverWait(driver, WAIT_S, ignored_exceptions=[StaleElementReferenceException]).until(clicked)


def served(server: RunningServer, headers: dict[str, str] | None = None) -> dict[str, str]:
    """Each model's state as the repository index answers it."""
    index = httpx.post(f"{server.url}/v2/repository/index", json={}, headers=headers, timeout=10)
    assert index.status_code == 200, index.text
    return {entry["name"]: entry["state"] for entry in index.json()}


def send_traffic(server: RunningServer, headers: dict[str, str] | None = None) -> None:
    data = np.arange(16, dtype=np.int32).tolist()
    body = {"inputs": [{"name": n, "shape": [1, 16], "datatype": "INT32", "data": data} for n in ("INPUT0", "INPUT1")]}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        for _ in range(REQUESTS):
            assert client.post("/v2/models/simple/infer", json=body).status_code == 200


def screenshot(driver: WebDriver, folder: Path, *, readme: bool = False) -> None:
    """The page as it looks now, in ``folder``; with ``readme``, also the README's when UPDATE_SCREENSHOTS=1."""
    path = folder / "console.png"
    assert driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if readme and os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOT)


def test_the_console_shows_the_models_and_an_unload_clicked(
    server: RunningServer, driver: WebDriver, tmp_path: Path
) -> None:
    send_traffic(server)
    driver.get(f"{server.url}/ui")

    assert driver.title == "modelserve console"
    assert states(driver) == served(server)
    assert set(states(driver).values()) == {"READY"}
    # The first poll, 2 s on, has a window to compute rates over: the requests above are in it.
    WebDriverWait(driver, WAIT_S).until(lambda d: cell(d, "simple", 5) not in ("—", "0.0"))
    assert cell(driver, "simple", 6).endswith(" ms")  # p50
    assert cell(driver, "simple", 8) == "1.0"  # one request per batch: they were sent one after another
    assert "MODEL_MEMORY_BUDGET_MB" in driver.find_element(By.ID, "memory").text
    prewarming = driver.find_element(By.ID, "prewarming").text
    assert "Policy: predictive. Cold starts 0, lru's on the same requests 0" in prewarming
    # The models asked for are unloaded some time after their requests: the policy's plan lists when and why.
    WebDriverWait(driver, WAIT_S).until(lambda d: "Planned, soonest first" in d.find_element(By.ID, "prewarming").text)
    assert "evict simple" in driver.find_element(By.ID, "prewarming").text

    click(driver, "mlp", "unload")

    WebDriverWait(driver, WAIT_S).until(lambda d: states(d).get("mlp") == "UNAVAILABLE")
    assert served(server)["mlp"] == "UNAVAILABLE"
    assert states(driver)["iris"] == "READY"  # no traffic: nothing but the click changes it
    assert driver.find_element(By.ID, "action-error").is_displayed() is False
    screenshot(driver, tmp_path, readme=True)
    assert errors(driver) == []


def test_a_failed_load_shows_the_servers_message(server: RunningServer, driver: WebDriver, tmp_path: Path) -> None:
    assert httpx.post(f"{server.url}/v2/repository/models/mlp/unload", json={}, timeout=10).status_code == 200
    model = server.log.parent / "model_repository" / "mlp" / "1" / "model.onnx"
    model.write_bytes(b"not an ONNX model")
    driver.get(f"{server.url}/ui")
    # Waited for, not read once: one full run on a loaded host found no mlp row at the first read.
    WebDriverWait(driver, WAIT_S).until(lambda d: states(d).get("mlp") == "UNAVAILABLE")

    click(driver, "mlp", "load")

    notice = driver.find_element(By.ID, "action-error")
    WebDriverWait(driver, WAIT_S).until(lambda _: notice.is_displayed())
    assert notice.text.startswith("load mlp failed: ")
    assert "mlp" in notice.text[len("load mlp failed: ") :]  # the server's own message names the model
    WebDriverWait(driver, WAIT_S).until(lambda d: states(d).get("mlp") == "FAILED")
    screenshot(driver, tmp_path)
    # The refused call is the only error: the browser logs a response it was answered 4xx.
    logged = errors(driver)
    assert len(logged) == 1
    assert "/v2/repository/models/mlp/load" in logged[0]


def test_with_authentication_the_console_needs_an_admin_key(guarded: RunningServer) -> None:
    page = f"{guarded.url}/ui"

    assert httpx.get(page).status_code == 401
    assert httpx.get(page, headers=bearer(INFER_KEY)).status_code == 403
    answered = httpx.get(page, headers=bearer(ADMIN_KEY))
    assert answered.status_code == 200
    assert answered.headers["content-type"].startswith("text/html")
    assert httpx.get(f"{guarded.url}/ui/summary").status_code == 401
    assert httpx.get(f"{guarded.url}/ui/summary", headers=bearer(INFER_KEY)).status_code == 403
    # The files a browser fetches before it can send a key are open; they hold no data.
    for name in ("signin.html", "signin.js", "console.js", "console.css"):
        assert httpx.get(f"{guarded.url}/ui/static/{name}").status_code == 200, name


def test_the_sign_in_page_opens_the_console_and_its_calls_send_the_key(
    guarded: RunningServer, driver: WebDriver, tmp_path: Path
) -> None:
    send_traffic(guarded, bearer(ADMIN_KEY))
    driver.get(f"{guarded.url}/ui/static/signin.html")
    driver.find_element(By.ID, "key").send_keys(ADMIN_KEY)
    driver.find_element(By.CSS_SELECTOR, "#signin button").click()

    WebDriverWait(driver, WAIT_S).until(lambda d: states(d).get("simple") == "READY")
    # Polls send the key: the figures update, and no update fails.
    WebDriverWait(driver, WAIT_S).until(lambda d: cell(d, "simple", 5) not in ("—", "0.0"))
    assert driver.find_element(By.ID, "poll-error").is_displayed() is False
    assert "Pre-warming off" in driver.find_element(By.ID, "prewarming").text
    click(driver, "iris", "unload")
    WebDriverWait(driver, WAIT_S).until(lambda d: states(d).get("iris") == "UNAVAILABLE")
    assert served(guarded, bearer(ADMIN_KEY))["iris"] == "UNAVAILABLE"
    screenshot(driver, tmp_path)
    assert errors(driver) == []
