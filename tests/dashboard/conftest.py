"""Fixtures for the dashboard's browser tests: the running tollgate (its address from the environment the
Rust driver, tests/binary/dashboard.rs, sets), headless Chromium through Playwright, fresh accounts made
with the operator token, and the management API for set-up and checks.

Every secret a test sees (keys, signing secrets, passwords, access tokens) is appended to
TOLLGATE_SECRETS_FILE; the driver then checks none of them is in the server's logs or its store.
"""

import json
import os
import time
import urllib.error
import urllib.request
import uuid

import pytest
from playwright.sync_api import expect, sync_playwright

BASE = os.environ["TOLLGATE_URL"].rstrip("/")
OPERATOR_TOKEN = os.environ["TOLLGATE_OPERATOR_TOKEN"]
PROVIDER_KEY = os.environ["TOLLGATE_PROVIDER_KEY"]
ARTIFACTS = os.environ["TOLLGATE_ARTIFACTS"]
SECRETS_FILE = os.environ["TOLLGATE_SECRETS_FILE"]
CHROMIUM = os.environ.get("TOLLGATE_CHROMIUM", "/usr/bin/chromium")

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 360, "height": 740}

expect.set_options(timeout=10_000)


def remember_secret(value):
    with open(SECRETS_FILE, "a", encoding="utf-8") as f:
        f.write(value + "\n")


class Reply:
    def __init__(self, status, body, headers):
        self.status, self.body, self.headers = status, body, headers

    def json(self):
        return json.loads(self.body)


def http(method, path, token=None, body=None, headers=None):
    """One request to tollgate; any status comes back as a Reply."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return Reply(r.status, r.read(), r.headers)
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.read(), e.headers)


def chat(service_key, extra_headers=None):
    """A provider call through tollgate to the mock upstream, as an OpenAI client makes it."""
    headers = {"X-Provider-Key": PROVIDER_KEY}
    headers.update(extra_headers or {})
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    return http("POST", "/v1/chat/completions", token=service_key, body=body, headers=headers)


def wait_for(what, check, timeout=15.0):
    """Polls `check` until it returns something truthy (usage reaches the store with the next flush)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Account:
    def __init__(self, email, password, account_id):
        self.email, self.password, self.id = email, password, account_id
        self._token = None

    @property
    def token(self):
        if self._token is None:
            reply = http("POST", "/v1/auth/login", body={"email": self.email, "password": self.password})
            assert reply.status == 200, reply.body
            self._token = reply.json()["access_token"]
            remember_secret(self._token)
        return self._token

    def api(self, method, path, body=None):
        return http(method, path, token=self.token, body=body)

    def create_key(self, **fields):
        reply = self.api("POST", "/v1/auth/keys", fields)
        assert reply.status == 201, reply.body
        key = reply.json()
        # A publishable key is public by design (stored, and shown on every view); its signing secret is not.
        if key["kind"] == "publishable":
            if key.get("signing_secret"):
                remember_secret(key["signing_secret"])
        else:
            remember_secret(key["raw_key"])
        return key


def new_account(**fields):
    email = f"person-{uuid.uuid4().hex[:10]}@example.com"
    password = f"correct horse {uuid.uuid4().hex}"
    remember_secret(password)
    reply = http("POST", "/v1/accounts", token=OPERATOR_TOKEN, body={"email": email, "password": password, **fields})
    assert reply.status == 201, reply.body
    return Account(email, password, reply.json()["id"])


@pytest.fixture
def account():
    return new_account()


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


# What Chromium's console says when the page's policy refuses something.
POLICY_WORDS = ("Content Security Policy", "Refused to", "TrustedScript", "TrustedHTML", "Trusted Type")


class Watched:
    """A page whose script errors and policy violations are collected, to fail the test that caused them."""

    def __init__(self, context):
        self.context = context
        self.page = context.new_page()
        self.problems = []
        self.page.on("pageerror", lambda e: self.problems.append(f"uncaught: {e}"))
        self.page.on(
            "console",
            lambda m: self.problems.append(f"console: {m.text}")
            if any(word in m.text for word in POLICY_WORDS)
            else None,
        )


@pytest.fixture
def watched(browser):
    context = browser.new_context(viewport=DESKTOP, base_url=BASE)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=BASE)
    w = Watched(context)
    yield w
    context.close()
    assert not w.problems, w.problems


@pytest.fixture
def page(watched):
    return watched.page


def sign_in(page, account, then="Keys"):
    page.goto("/dashboard/signin")
    page.get_by_label("Email").fill(account.email)
    page.get_by_label("Password", exact=True).fill(account.password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("heading", level=1, name=then)).to_be_visible()


def sign_in_as_operator(page):
    page.goto("/dashboard/signin")
    page.get_by_label("Operator token").fill(OPERATOR_TOKEN)
    page.get_by_role("button", name="Sign in as operator").click()
    expect(page.get_by_role("heading", level=1, name="Accounts")).to_be_visible()


def key_row(page, prefix):
    return page.get_by_role("row").filter(has=page.locator("code", has_text=prefix))


def column(page, row, name):
    """The cell of `row` under the column headed `name`."""
    headers = page.locator("thead th").all_inner_texts()
    index = [h.strip() for h in headers].index(name)
    return row.locator("td, th").nth(index)


def dom_text(page):
    """Everything the DOM holds as text or in a form control's value."""
    return page.evaluate(
        """() => document.documentElement.outerHTML + '\\n' +
        [...document.querySelectorAll('input, textarea')].map(e => e.value).join('\\n')"""
    )


def screenshot(page, name):
    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, f"{name}.png"), full_page=True)
