"""The page of `softprompt serve` (serve/web.py): its data endpoints answer what the library,
the training log and the metrics hold, behind the API key; and, in a real headless Chromium,
the page loads, takes the key, runs a classification whose label is the API's, and draws the
similarity heatmaps and a training curve (screenshot: docs/web.png, rewritten when
SOFTPROMPT_WEB_SCREENSHOT names a path)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest
from helpers import ECHO, TOY, YN, learnable_llama, save_library_prompt, tiny_llama, toy_task

from softprompt.config import TrainConfig
from softprompt.io import load_prompt
from softprompt.plots import read_log
from softprompt.serve.app import BackgroundServer, create_app
from softprompt.serve.web import quantile
from softprompt.spot.similarity import avg_cosine, per_token_cosine
from softprompt.train import train

KEY = "s3cret-key"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def lm():
    return learnable_llama()


@pytest.fixture(scope="module")
def library(lm, tmp_path_factory):
    """Saved prompts of three tasks, an ensemble, a prompt of another model (skipped) and a real
    30-step training output folder (best/, embedding/, log.jsonl)."""
    lib = tmp_path_factory.mktemp("library")
    save_library_prompt(lib, "toy-a", lm, TOY, 4, 1, accuracy=0.5)
    save_library_prompt(lib, "toy-b", lm, TOY, 6, 2, accuracy=0.75)
    save_library_prompt(lib, "yn", lm, YN, 5, 4)
    save_library_prompt(lib, "echo", lm, ECHO, 3, 5)
    save_library_prompt(lib, "other-model", tiny_llama(seed=5, hidden_size=16), TOY, 4, 6)
    (lib / "ensembles.json").write_text(json.dumps({"toy-mean": ["toy-a", "toy-b"]}))
    cfg = TrainConfig(steps=30, batch_size=8, prompt_length=4, optimizer="adamw", lr=0.3, eval_every=5, embed_step=5)
    train(lm, toy_task(), cfg, lib / "toy-run", progress=False)
    shutil.rmtree(lib / "toy-run" / "checkpoint")
    return lib


@pytest.fixture(scope="module")
def server(lm, library):
    app = create_app(lm, library, max_batch=64, max_wait_ms=20, rescan_s=0, api_key=KEY)
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=60, headers={"X-API-Key": KEY}) as http:
        yield url, http


def test_the_page_and_its_files_load_without_a_key_and_the_data_needs_it(server):
    url, http = server
    for path, kind in [("/", "text/html"), ("/web/static/app.js", "javascript"), ("/web/static/style.css", "text/css")]:
        reply = httpx.get(url + path)
        assert reply.status_code == 200 and kind in reply.headers["content-type"], path
    page = httpx.get(url + "/").text
    assert "default-src 'self'" in httpx.get(url + "/").headers["content-security-policy"]
    assert "/web/static/app.js" in page and "http" not in page.replace("http-equiv", "")  # nothing from elsewhere
    assert "X-API-Key" in httpx.get(url + "/web/static/app.js").text
    assert httpx.get(url + "/web/static/secret.txt").status_code == 404
    assert httpx.get(url + "/web/static/..%2Fapp.py").status_code == 404
    for path in ("/web/library", "/web/similarity", "/web/curves?run=toy-run", "/web/stats"):
        assert httpx.get(url + path).status_code == 401, path
        assert httpx.get(url + path, headers={"X-API-Key": "wrong"}).status_code == 401, path
        assert http.get(path).status_code == 200, path


def test_library_lists_sizes_embeddings_and_runs(server, library):
    url, http = server
    files = http.get("/web/library").json()
    assert sorted(files["prompts"]) == ["echo", "toy-a", "toy-b", "toy-run", "yn"]
    assert files["runs"] == ["toy-run"]
    run = files["prompts"]["toy-run"]
    best = library / "toy-run" / "best"
    assert run["bytes"] == sum(
        f.stat().st_size for f in best.iterdir() if f.name in ("prompt.json", "prompt.safetensors")
    )
    assert run["embedding"] and run["log"] and run["created"]
    assert not files["prompts"]["toy-a"]["embedding"] and not files["prompts"]["toy-a"]["log"]


def test_similarity_is_both_spot_measures_over_the_task_embeddings(server, library):
    url, http = server
    sim = http.get("/web/similarity").json()
    names = sim["names"]
    assert names == ["echo", "toy-a", "toy-b", "toy-run", "yn"]
    assert sim["source"]["toy-run"] == "embedding" and sim["source"]["toy-a"] == "prompt"
    vectors = {n: load_prompt(library / n).weight for n in names if n != "toy-run"}
    vectors["toy-run"] = load_prompt(library / "toy-run" / "embedding").weight  # the early prompt, not best/
    for measure, f in (("avg_cosine", avg_cosine), ("per_token_cosine", per_token_cosine)):
        matrix = sim["measures"][measure]
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                assert matrix[i][j] == pytest.approx(f(vectors[a], vectors[b]), abs=1e-5)
    assert all(sim["measures"]["avg_cosine"][i][i] == pytest.approx(1.0) for i in range(len(names)))


def test_curves_are_the_training_log(server, library):
    url, http = server
    curves = http.get("/web/curves", params={"run": "toy-run"}).json()
    records = read_log(library / "toy-run" / "log.jsonl")
    assert curves["loss"] == [[r["step"], r["loss"]] for r in records if "loss" in r]
    assert len(curves["loss"]) == 30
    assert curves["eval"]["accuracy"] == [[r["step"], r["eval"]["accuracy"]] for r in records if "eval" in r]
    assert [s for s, _ in curves["eval"]["accuracy"]] == [5, 10, 15, 20, 25, 30]
    for bad in ("toy-a", "nope", "../toy-run", "toy-run/best", ".."):
        reply = http.get("/web/curves", params={"run": bad})
        assert reply.status_code == 404 and "no training output folder" in reply.json()["detail"], bad
    assert http.get("/web/curves").status_code == 422  # run is required


def test_stats_are_the_servers_metrics(server):
    url, http = server
    for text in ("great", "awful", "a b"):
        assert http.post("/classify", json={"task": "toy-a", "input": text}).status_code == 200
    assert http.post("/classify", json={"task": "nope", "input": "x"}).status_code == 404
    stats = http.get("/web/stats").json()
    metrics = http.get("/metrics").text

    def metric(name):
        return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(name))

    assert (
        stats["requests"]["/classify"]["200"]
        == metric('softprompt_requests_total{endpoint="/classify",status="200"}')
        >= 3
    )
    assert stats["requests"]["/classify"]["404"] >= 1
    assert stats["batches"]["count"] == metric("softprompt_batch_rows_count") >= 1
    assert stats["batches"]["rows"] == metric("softprompt_batch_rows_sum")
    assert sum(h["batches"] for h in stats["batches"]["histogram"]) == stats["batches"]["count"]
    latency = stats["latency"]["/classify"]
    assert latency["count"] == metric('softprompt_request_seconds_count{endpoint="/classify"}')
    assert 0 < latency["p50_ms"] <= latency["p90_ms"] <= latency["p99_ms"]
    assert stats["prompts"] == 5 and stats["queue"] == 0


def test_quantile_interpolates_in_the_bucket_as_prometheus_does():
    buckets = [(0.1, 2.0), (0.5, 6.0), (1.0, 8.0), (float("inf"), 10.0)]
    assert quantile(buckets, 0.1) == pytest.approx(0.05)  # rank 1 of 2 in (0, 0.1]
    assert quantile(buckets, 0.4) == pytest.approx(0.1 + 0.4 * 2 / 4)  # rank 4: 2 of 4 into (0.1, 0.5]
    assert quantile(buckets, 0.99) == 1.0  # in +Inf: the highest finite bound
    assert quantile([(0.1, 0.0), (float("inf"), 0.0)], 0.5) is None


# -- the page in a real browser ---------------------------------------------------------------


@pytest.fixture
def browser(monkeypatch):
    """Headless Chromium from the system packages through its chromedriver; never downloads one."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(f"{CHROMIUM} or {CHROMEDRIVER} missing (bash scripts/install_browser.sh installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not fetch a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1480",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_in_chromium_classifies_and_draws(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, http = server
    started = time.monotonic()
    wait = WebDriverWait(browser, 20)
    browser.get(url + "/")
    # No key yet: the data endpoints answer 401 and the page says so.
    wait.until(lambda d: d.find_element(By.ID, "banner").is_displayed())
    assert "API key" in browser.find_element(By.ID, "banner").text
    browser.find_element(By.ID, "api-key").send_keys(KEY)
    browser.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#library-table tbody tr[data-name]")) == 5)
    assert browser.execute_script("return sessionStorage.getItem('softprompt-api-key')") == KEY
    rows = {
        r.get_attribute("data-name"): r.text for r in browser.find_elements(By.CSS_SELECTOR, "#library-table tbody tr")
    }
    assert "toy" in rows["toy-b"] and "accuracy 75.0" in rows["toy-b"]
    assert "other-model" in browser.find_element(By.ID, "skipped").text

    # The playground: a generation, then a classification through the form, against the API's answers.
    Select(browser.find_element(By.ID, "target")).select_by_value("echo")
    assert (
        browser.find_element(By.ID, "max-tokens").is_displayed()
        and not browser.find_element(By.ID, "normalize").is_displayed()
    )
    box = browser.find_element(By.ID, "inputs")
    box.clear()
    box.send_keys("a b c")
    browser.find_element(By.ID, "run").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results pre.generated"))
    generated = http.post("/generate", json={"task": "echo", "input": "a b c"}).json()["results"][0]["text"]
    assert browser.find_element(By.CSS_SELECTOR, "#results pre.generated").get_attribute("textContent") == generated
    assert browser.find_element(By.ID, "curl").text.startswith(f"curl -s {url}/generate")

    text = "the movie great"
    Select(browser.find_element(By.ID, "target")).select_by_value("toy-run")
    box = browser.find_element(By.ID, "inputs")
    box.clear()
    box.send_keys(text)
    browser.find_element(By.ID, "run").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .label"))
    answer = http.post("/classify", json={"task": "toy-run", "input": text}).json()["results"][0]
    assert browser.find_element(By.CSS_SELECTOR, "#results .label").text == answer["label"]
    shown = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#results .bar-value")]
    assert shown == [f"{100 * p:.1f}%" for p in answer["probabilities"].values()]
    curl = browser.find_element(By.ID, "curl").text
    assert (
        curl.startswith(f"curl -s {url}/classify")
        and '"task":"toy-run"' in curl
        and "X-API-Key" in curl
        and KEY not in curl
    )

    # The heatmaps (two measures, 5 x 5 cells each) and the curve of toy-run's log.
    wait.until(
        lambda d: d.execute_script(
            "return document.body.dataset.similarity === 'ready' && document.body.dataset.curve === 'ready'"
        )
    )
    maps = browser.find_elements(By.CSS_SELECTOR, "#similarity svg.heatmap")
    assert [m.get_attribute("data-measure") for m in maps] == ["avg_cosine", "per_token_cosine"]
    assert all(len(m.find_elements(By.CSS_SELECTOR, "rect.cell")) == 25 for m in maps)
    assert browser.find_element(By.CSS_SELECTOR, "#curve svg").get_attribute("data-run") == "toy-run"
    loss = browser.find_element(By.CSS_SELECTOR, "#curve path.loss-line").get_attribute("d")
    assert loss.count("L") == 29  # 30 logged steps
    assert browser.find_element(By.CSS_SELECTOR, "#curve path.metric-line").get_attribute("d").count("L") == 5
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#stats-table tr[data-endpoint="/classify"]'))
    assert browser.find_elements(By.CSS_SELECTOR, "#stats svg rect.batch-bar")

    # No script error, no resource refused by the page's Content-Security-Policy (the 401s before the key are expected).
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE" and "401" not in e["message"]]
    assert not errors, errors

    shot = tmp_path / "web.png"
    assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("SOFTPROMPT_WEB_SCREENSHOT"):
        shutil.copy(shot, os.environ["SOFTPROMPT_WEB_SCREENSHOT"])
    assert time.monotonic() - started < 60
