"""The operator console in a real browser: Debian's headless Chromium driven by Selenium
(chromium-driver) against the real Serve app over loopback.

One walk through, in the order an operator would go: sign in (a wrong token first), break a
rule's YAML and see the error at its line, fix and apply it, post events and watch the rule's
fires appear on the live overview, open a customer's ``why``, trace an event, replay a
quarantined record, run a backtest, and switch to Chinese. Every page is saved as a screenshot
under ``docs/console/screenshots/`` (linked from ``docs/guide/console.md``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runtime.dev.client import EspClient
from tests.e2e.helpers import T0

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "console" / "screenshots"
RULE = "console-ticks"
BROKEN = f"""kind: rule
name: {RULE}
when:
  event: console.tick
  bogus: 1
then:
  - emit: {RULE}
"""
FIXED = BROKEN.replace("  bogus: 1\n", "")

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()), reason="make chromium installs the browser"
)


@pytest.fixture(scope="module")
def tokens(platform) -> dict[str, str]:
    made = {}
    with httpx.Client(base_url=platform.base_url, headers={"Authorization": f"Bearer {platform.admin_token}"}) as h:
        for role in ("viewer", "operator"):
            answer = h.post("/v1/tokens", json={"name": f"console-{role}", "role": role})
            assert answer.status_code == 201, answer.text
            made[role] = answer.json()["token"]
    return made


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--lang=en-US"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,1000")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def shot(driver, page: str) -> None:
    """A full-height screenshot of the current page as ``docs/console/screenshots/<page>.png``."""
    for _ in range(3):  # the window's outer size includes what the viewport does not show
        inner, full = driver.execute_script("return [window.innerHeight, document.documentElement.scrollHeight]")
        if full <= inner or inner >= 3000:
            break
        driver.set_window_size(1280, min(driver.get_window_size()["height"] + full - inner + 8, 3200))
    driver.save_screenshot(str(SHOTS / f"{page}.png"))
    driver.set_window_size(1280, 1000)


def wait_for(driver, css: str, timeout: float = 20):
    return WebDriverWait(driver, timeout).until(lambda d: d.find_element(By.CSS_SELECTOR, css))


def sign_in(driver, base: str, token: str) -> None:
    driver.get(f"{base}/console/login")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "sign-in").click()


def test_sign_in_is_refused_clearly_and_pages_need_a_session(platform, tokens) -> None:
    base = platform.base_url
    with httpx.Client(base_url=base) as http:
        assert http.get("/console/overview").headers["location"] == "/console/login"  # 303 to sign in
        wrong = http.post("/console/login", data={"token": "esp_0123456789abcdef_" + "x" * 43})
        assert wrong.status_code == 401 and "login-error" in wrong.text
        assert http.post("/console/login", data={"token": ""}).status_code == 400
        ok = http.post("/console/login", data={"token": tokens["viewer"]})
        assert ok.status_code == 303 and "httponly" in ok.headers["set-cookie"].lower()
        assert tokens["viewer"] not in ok.headers["set-cookie"]
        assert http.get("/console/overview").status_code == 200
        # a viewer reads but may not replay, even with the form's own CSRF token
        page = http.get("/console/quarantine").text
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        assert http.post("/console/quarantine/replay", data={"csrf": csrf}).status_code == 403
        assert http.post("/console/quarantine/replay", data={"csrf": "forged"}).status_code == 403
        # revoking the token ends its sessions at once
        admin = {"Authorization": f"Bearer {platform.admin_token}"}
        assert http.delete("/v1/tokens/console-viewer", headers=admin).status_code == 200
        assert http.get("/console/overview").headers["location"] == "/console/login"


def test_an_operator_walks_through_the_console(platform, tokens, browser, client) -> None:
    base = platform.base_url
    driver = browser
    driver.get(f"{base}/console/overview")
    assert driver.current_url.endswith("/console/login")
    driver.find_element(By.ID, "token").send_keys("esp_not_a_token")
    driver.find_element(By.ID, "sign-in").click()
    assert "failed" in wait_for(driver, "#login-error").text
    shot(driver, "login")
    sign_in(driver, base, tokens["operator"])
    wait_for(driver, "#live")

    # break a rule's YAML: the error is shown at its line, then fixed and applied
    driver.get(f"{base}/console/config/rule/{RULE}")
    area = driver.find_element(By.ID, "yaml")
    area.clear()
    area.send_keys(BROKEN)
    driver.find_element(By.ID, "dry-run").click()
    error = wait_for(driver, ".yaml-error")
    assert error.get_attribute("data-line") == "5" and "bogus" in error.text
    assert driver.find_element(By.CSS_SELECTOR, "#gutter span.bad").get_attribute("data-line") == "5"
    shot(driver, "config-error")
    area = driver.find_element(By.ID, "yaml")
    area.clear()
    area.send_keys(FIXED)
    driver.find_element(By.ID, "diff-button").click()
    assert f"+name: {RULE}" in wait_for(driver, "#diff").text
    driver.find_element(By.ID, "apply").click()
    assert "version" in wait_for(driver, "#notice").text.lower()
    shot(driver, "config-editor")
    driver.get(f"{base}/console/config")
    wait_for(driver, f"a[href='/console/config/rule/{RULE}']")
    shot(driver, "config")

    # two offers compete for one customer under a policy: one is sent, the other loses arbitration
    with EspClient(base) as admin:
        admin.put_config({"kind": "policy", "name": "console", "arbitration_window": "1s"})
        profile = {"city": "上海", "tier": "gold", "tags": ["frequent-traveller"], "segments": ["commuters"]}
        admin.request("PUT", "/v1/profiles/alice", json={**profile, "scores": {"roaming-pack": 0.82}})
        for offer, priority in (("a", 80), ("b", 20)):
            admin.put_config({"kind": "campaign", "name": f"console-{offer}", "priority": priority})
            notify = {"channel": "console-sms", "template": offer, "campaign": f"console-{offer}"}
            admin.put_config(
                {"kind": "rule", "name": f"console-offer-{offer}", "when": {"event": "console.offer"},
                 "then": [{"notify": notify}]}
            )  # fmt: skip

    # events in; the rule's fires appear on the overview by themselves (Ray exports metrics every few seconds)
    events = [
        {"id": f"ct{i}", "type": "console.tick", "time": T0 + i, "subject": "alice", "data": {"n": i}} for i in range(3)
    ]
    bad = {"id": "ct-bad", "time": T0, "subject": "alice", "data": {}}  # no type: quarantined
    offer = {"id": "co1", "type": "console.offer", "time": T0 + 10, "subject": "alice", "data": {}}
    assert client.send([*events, offer, bad]).accepted == 4
    driver.get(f"{base}/console/overview")
    WebDriverWait(driver, 60, poll_frequency=1).until(
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, f"tr[data-rule='{RULE}'] .fires")
            and int(d.find_element(By.CSS_SELECTOR, f"tr[data-rule='{RULE}'] .fires").text) >= 3
        )
    )
    shot(driver, "overview")

    # a customer's why, an event's trace
    driver.get(f"{base}/console/customer?id=alice")
    assert RULE in wait_for(driver, f"#why-{RULE}").text
    assert "ct2" in driver.find_element(By.CSS_SELECTOR, f"#why-{RULE} table.fires").text

    def decided(d) -> bool:
        d.refresh()
        outcomes = d.find_elements(By.CSS_SELECTOR, "#contacts td")
        return any(o.text == "sent" for o in outcomes) and any("lost_arbitration" in o.text for o in outcomes)

    WebDriverWait(driver, 45, poll_frequency=1.5).until(decided)
    shot(driver, "customer")
    driver.get(f"{base}/console/event?source=e2e&id=ct1")
    assert wait_for(driver, "#trace-status").text == "accepted"
    shot(driver, "event")

    # the quarantined record: inspect its raw payload, replay it
    driver.get(f"{base}/console/quarantine?source=e2e")
    wait_for(driver, "a.qid").click()
    assert "ct-bad" in wait_for(driver, "#raw").text
    shot(driver, "quarantined")
    driver.find_element(By.ID, "replay").click()
    assert "replayed 1" in wait_for(driver, "#notice").text
    shot(driver, "quarantine")

    driver.get(f"{base}/console/deadletters")
    shot(driver, "deadletters")

    # before go-live: the rule's backtest over the log of the last hour
    start = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 3600))
    driver.get(f"{base}/console/golive?rule={RULE}&start={start}")
    assert int(wait_for(driver, "#bt-fires").text) == 3
    shot(driver, "golive")
    driver.get(f"{base}/console/campaigns")
    shot(driver, "campaigns")

    # Chinese
    driver.get(f"{base}/console/overview")
    driver.find_element(By.ID, "lang").click()
    assert wait_for(driver, "#nav-overview").text == "概览"
    shot(driver, "overview-zh")
    driver.find_element(By.ID, "lang").click()
    wait_for(driver, "#nav-overview")


def test_the_chinese_glyphs_font_is_installed() -> None:
    """Screenshots in Chinese need a CJK font (make chromium installs fonts-wqy-zenhei)."""
    if shutil.which("fc-list") is None:
        pytest.skip("fontconfig is not installed")
    import subprocess

    fonts = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True, check=False).stdout
    assert fonts.strip(), "no Chinese font: run make chromium"


def test_an_api_token_alone_opens_no_console_page(platform, tokens) -> None:
    with httpx.Client(base_url=platform.base_url) as http:
        answer = http.get("/console/config", headers={"Authorization": f"Bearer {tokens['operator']}"})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/login"
