"""Every page at a desktop and a phone width, with data on it: saved as screenshots (the driver keeps them under
target/dashboard-screenshots/). On each: at 360 px nothing makes the page itself scroll sideways; the layout does
not shift when the data arrives (cumulative layout shift under 0.1, the browser's own measure); every control
has an accessible name, which contains its visible label; and Tab, all the way through the page, shows where
focus is on every control it reaches."""

import pytest
from playwright.sync_api import expect

from conftest import DESKTOP, PHONE, chat, screenshot, sign_in, sign_in_as_operator, wait_for

PAGES = [
    ("keys", "Keys"),
    ("usage", "Usage"),
    ("projects", "Projects"),
    ("claim", "Claim a trial key"),
]


# Counts the page's layout shifts (not those right after input) from its first paint.
MEASURE_SHIFTS = """
window.__shift = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) if (!e.hadRecentInput) window.__shift += e.value;
}).observe({ type: 'layout-shift', buffered: true });
"""

# Visible controls without a name, or whose name leaves out the text they show.
UNNAMED = """() => [...document.querySelectorAll('button, a[href], input, select, textarea')]
  .filter((e) => e.getClientRects().length > 0 && e.type !== 'hidden')
  .filter((e) => {
    const shown = (e.matches('button, a') ? e.textContent : '').trim().replace(/\\s+/g, ' ');
    const label = e.getAttribute('aria-label');
    const labelledBy = e.getAttribute('aria-labelledby');
    const named = label || labelledBy || (e.labels && e.labels.length) || shown;
    return !named || (label && shown && !label.includes(shown));
  })
  .map((e) => e.outerHTML.slice(0, 120))"""


# The element focus is on, and whether it shows it (an outline or a focus ring drawn as a box shadow).
FOCUSED = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return null;
  const s = getComputedStyle(e);
  const shown = (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0) || s.boxShadow !== 'none';
  return { what: e.outerHTML.slice(0, 100), shown };
}"""


def focus_is_visible_all_the_way(page):
    """Tab through the whole page: every control it reaches shows that it has focus."""
    page.locator("body").focus()
    seen, hidden = [], []
    for _ in range(80):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUSED)
        if focused is None or (seen and focused["what"] == seen[0]):
            break
        seen.append(focused["what"])
        if not focused["shown"]:
            hidden.append(focused["what"])
    assert len(seen) > 3, f"{page.url}: Tab reached only {seen}"
    assert not hidden, f"{page.url}: focus not visible on {hidden}"


def well_made(page):
    fits(page)
    shift = page.evaluate("window.__shift")
    assert shift < 0.1, f"{page.url}: layout shifted by {shift:.3f} as its data arrived"
    unnamed = page.evaluate(UNNAMED)
    assert not unnamed, f"{page.url}: controls without a matching accessible name: {unnamed}"


def fits(page):
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"{page.url} is {width} px wide"


@pytest.fixture
def account_with_data(account):
    project = account.api("POST", "/v1/projects", {"name": "mobile app"}).json()
    key = account.create_key(name="ios client", project_id=project["id"])
    account.create_key(name="nightly batch jobs", kind="live")
    account.create_key(name="marketing site", kind="publishable", allowed_origins=["https://www.example.com"])
    for tokens in ["900 300", "2400 800"]:
        assert chat(key["raw_key"], {"x-mock": f"usage {tokens}"}).status == 200
    wait_for(
        "the usage flush",
        lambda: sum(d["total_tokens"] for d in account.api("GET", "/v1/usage").json()["data"]) == 4400,
    )
    return account


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_every_page_at_desktop_and_phone_widths(page, account_with_data, size):
    page.set_viewport_size(DESKTOP if size == "desktop" else PHONE)
    page.add_init_script(MEASURE_SHIFTS)
    page.goto("/dashboard/signin")
    expect(page.get_by_role("heading", level=1, name="Sign in")).to_be_visible()
    well_made(page)
    screenshot(page, f"signin-{size}")
    sign_in(page, account_with_data)
    for path, heading in PAGES:
        page.goto(f"/dashboard/{path}")
        expect(page.get_by_role("heading", level=1, name=heading)).to_be_visible()
        expect(page.get_by_text("Loading…")).to_have_count(0)
        well_made(page)
        if size == "desktop":
            focus_is_visible_all_the_way(page)
        screenshot(page, f"{path}-{size}")
    page.goto("/dashboard/keys")
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_role("dialog", name="Create key")).to_be_visible()
    screenshot(page, f"create-key-{size}")
    if size == "desktop":
        # The dark scheme (prefers-color-scheme) too, for a look.
        page.emulate_media(color_scheme="dark")
        for path, heading in PAGES[:2]:
            page.goto(f"/dashboard/{path}")
            expect(page.get_by_role("heading", level=1, name=heading)).to_be_visible()
            expect(page.get_by_text("Loading…")).to_have_count(0)
            screenshot(page, f"{path}-desktop-dark")


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_the_operator_pages_at_desktop_and_phone_widths(page, account_with_data, size):
    page.set_viewport_size(DESKTOP if size == "desktop" else PHONE)
    page.add_init_script(MEASURE_SHIFTS)
    sign_in_as_operator(page)
    expect(page.get_by_role("cell", name=account_with_data.email)).to_be_visible()
    well_made(page)
    if size == "desktop":
        focus_is_visible_all_the_way(page)
    screenshot(page, f"accounts-{size}")
