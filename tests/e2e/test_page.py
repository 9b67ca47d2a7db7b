"""The page at / in headless Chromium against a real server process: type, submit, read the answers and
the shading. Skips, saying why, where no browser can be had (``make browser`` installs Debian's
chromium and chromium-driver where apt and root are available)."""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.ops.server_process import ServerProcess
from training.data.task_data import TaskData
from training.testing.quick import make_tiny_student

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 30.0


def chromium_driver() -> Any:
    """Headless Chromium through Debian's chromedriver (no download: Selenium Manager is bypassed)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        pytest.skip("no headless Chromium here: `make browser` installs Debian's chromium and chromium-driver "
                    "(needs apt-get and root)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, mr_small: TaskData) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("page-e2e")
    student = make_tiny_student(root / "mr-tiny", mr_small.train.texts, mr_small.train.labels, mr_small.label_names)
    with ServerProcess(["--student", str(student), "--threads", "1"], log=root / "server.log", cwd=REPO_ROOT) as s:
        s.wait_ready()
        yield s


def explain_directly(url: str, texts: list[str], top_n: int) -> dict[str, Any]:
    request = urllib.request.Request(f"{url}/v1/explain", json.dumps({"texts": texts, "top_n": top_n}).encode(),
                                     {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        result: dict[str, Any] = json.load(answer)
    return result


def test_the_page_shows_the_answers_and_shades_the_ngrams(server: ServerProcess, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    texts = ["a gripping , beautifully acted film", "dull and far too long , not funny at all"]
    driver = chromium_driver()
    try:
        driver.get(server.url + "/")
        wait = WebDriverWait(driver, WAIT_S)
        wait.until(lambda d: d.find_element(By.ID, "student").get_attribute("value") == "mr-tiny")
        box = driver.find_element(By.ID, "texts")
        box.clear()
        box.send_keys("\n".join(texts))
        top_n = driver.find_element(By.ID, "top-n")
        top_n.clear()
        top_n.send_keys("6")
        driver.find_element(By.ID, "submit").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "answered"))
        cards = driver.find_elements(By.CSS_SELECTOR, "#results .card")
        want = explain_directly(server.url, texts, 6)["results"]
        assert len(cards) == len(texts)
        for card, expected in zip(cards, want, strict=True):
            student = card.find_element(By.CSS_SELECTOR, '.answer[data-route="student"]')
            assert student.find_element(By.CLASS_NAME, "label").text == expected["label"]
            assert f"coverage {100 * expected['coverage']:.0f}%" in student.text
            absent = card.find_element(By.CSS_SELECTOR, '.answer[data-route="teacher"]')
            assert "no teacher is loaded" in absent.text
            shaded = card.find_elements(By.CSS_SELECTOR, ".shaded .seg")
            assert shaded, "no shaded span"
            shaded_ngrams = {g for seg in shaded for g in (seg.get_attribute("data-ngrams") or "").split("|")}
            assert shaded_ngrams == {g["ngram"] for g in expected["ngrams"]}
            for seg in shaded:  # each shaded piece's words belong to every n-gram said to cover it
                for g in (seg.get_attribute("data-ngrams") or "").split("|"):
                    assert set(re.findall(r"\w\w+", seg.text.lower())) <= set(g.split()), (seg.text, g)
            listed = [td.get_attribute("data-ngram") for td in card.find_elements(By.CSS_SELECTOR, "td.ngram")]
            assert listed == [g["ngram"] for g in expected["ngrams"]]
        driver.save_screenshot(str(tmp_path / "page.png"))
    finally:
        driver.quit()
