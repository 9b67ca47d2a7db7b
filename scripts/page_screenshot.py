"""Screenshot of the page at / on a running server: ``python scripts/page_screenshot.py URL OUT.png``.

Types two texts, submits, waits for the answers and saves the window (reports/page.png was made so, on
the demo student and teacher). Needs selenium and Debian's chromium + chromium-driver (``make browser``).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

TEXTS = ["a gripping, beautifully acted film that never drags", "dull and far too long, and not funny at all"]


def screenshot(url: str, out: Path, texts: list[str], top_n: int = 8) -> Path:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        raise SystemExit("no Chromium or chromedriver on PATH (make browser)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        driver.get(url.rstrip("/") + "/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: d.find_element(By.ID, "student").get_attribute("value"))
        box = driver.find_element(By.ID, "texts")
        box.clear()
        box.send_keys("\n".join(texts))
        field = driver.find_element(By.ID, "top-n")
        field.clear()
        field.send_keys(str(top_n))
        driver.find_element(By.ID, "submit").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "answered"))
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print(screenshot(args.url, args.out, TEXTS))


if __name__ == "__main__":
    main()
