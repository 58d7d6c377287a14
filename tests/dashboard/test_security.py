"""What the dashboard must not do: store a token for a wrong password, run markup from the API as HTML, keep a
token past sign-out or expiry, or be served without its security headers."""

from playwright.sync_api import expect

from conftest import BASE, DESKTOP, http, key_row, sign_in

SESSION = "tollgate.session"


def stored_session(page):
    return page.evaluate(f"sessionStorage.getItem('{SESSION}')")


def session_token(page):
    return page.evaluate(f"JSON.parse(sessionStorage.getItem('{SESSION}')).token")


def test_a_wrong_password_shows_an_error_and_stores_nothing(page, account):
    page.goto("/dashboard/signin")
    page.get_by_label("Email").fill(account.email)
    page.get_by_label("Password", exact=True).fill("not the password at all")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("Invalid email or password")
    expect(page.get_by_role("heading", level=1, name="Sign in")).to_be_visible()
    assert stored_session(page) is None
    assert page.evaluate("document.cookie") == ""
    assert page.evaluate("localStorage.length") == 0


def test_a_wrong_operator_token_is_refused(page):
    page.goto("/dashboard/signin")
    page.get_by_label("Operator token").fill("not-the-operator-token-at-all")
    page.get_by_role("button", name="Sign in as operator").click()
    expect(page.get_by_role("alert")).to_contain_text("Invalid operator token")
    assert stored_session(page) is None


def test_markup_in_a_key_name_renders_as_text(page, account):
    names = ["<script>window.__pwned = 1</script>", '<img src=x onerror="window.__pwned = 2">']
    keys = [account.create_key(name=name) for name in names]
    sign_in(page, account)
    for name, key in zip(names, keys):
        expect(key_row(page, key["key_prefix"])).to_contain_text(name)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main script, main img").count() == 0


def test_signing_out_forgets_the_token_and_ends_it(page, account):
    sign_in(page, account)
    token = session_token(page)
    assert http("GET", "/v1/auth/keys", token=token).status == 200
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", level=1, name="Sign in")).to_be_visible()
    assert stored_session(page) is None
    assert http("GET", "/v1/auth/keys", token=token).status == 401, "signing out ends the token on the server"
    page.goto("/dashboard/keys")
    expect(page.get_by_role("heading", level=1, name="Sign in")).to_be_visible()


def test_an_ended_token_sends_the_person_back_to_sign_in(page, account):
    sign_in(page, account)
    token = session_token(page)
    # The token ends elsewhere (a logout from another tab): the next call is 401.
    assert http("POST", "/v1/auth/logout", token=token).status == 200
    page.get_by_role("link", name="Usage").click()
    expect(page.get_by_role("heading", level=1, name="Sign in")).to_be_visible()
    expect(page.get_by_text("Your session has expired. Sign in again.")).to_be_visible()
    assert stored_session(page) is None


def test_a_session_past_its_expiry_is_not_used(page, account):
    sign_in(page, account)
    page.evaluate(
        f"""() => {{
        const s = JSON.parse(sessionStorage.getItem('{SESSION}'));
        s.expires_at = '2000-01-01T00:00:00Z';
        sessionStorage.setItem('{SESSION}', JSON.stringify(s));
    }}"""
    )
    page.goto("/dashboard/keys")
    expect(page.get_by_role("heading", level=1, name="Sign in")).to_be_visible()
    assert stored_session(page) is None


def test_the_pages_carry_the_security_headers(page):
    for path in ["/dashboard/", "/dashboard/keys", "/dashboard/claim"]:
        response = page.goto(path)
        headers = response.headers
        policy = headers["content-security-policy"]
        for directive in ["default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "connect-src 'self'"]:
            assert directive in policy, (path, policy)
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert "set-cookie" not in headers
    script = http("GET", "/dashboard/js/app.js")
    assert script.status == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "default-src 'none'" in script.headers["content-security-policy"]


def test_the_policy_blocks_an_inline_script(browser):
    """The header is not decoration: a script injected into the page is refused by the browser."""
    context = browser.new_context(viewport=DESKTOP, base_url=BASE)
    page = context.new_page()
    page.goto("/dashboard/signin")
    # Refused twice over: Trusted Types (the script's text was not a TrustedScript), and script-src.
    with page.expect_console_message(lambda m: "TrustedScript" in m.text or "Content Security Policy" in m.text):
        page.evaluate(
            """() => { const s = document.createElement('script');
            s.appendChild(document.createTextNode('window.__ran = 1')); document.body.append(s); }"""
        )
    assert page.evaluate("window.__ran") is None
    # An HTML sink is refused outright (Trusted Types), whatever the string.
    refused = page.evaluate(
        """() => { try { document.createElement('div').innerHTML = '<b>x</b>'; return null; }
        catch (e) { return e.name; } }"""
    )
    assert refused == "TypeError", refused
    context.close()


def test_every_control_is_reachable_by_keyboard(page, account):
    sign_in(page, account)
    # Tab from the top of the page reaches "Create key" with a visible focus ring, and Enter opens the dialog.
    page.locator("body").focus()
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.trim()") == "Create key":
            break
    else:
        raise AssertionError("Create key was not reached by Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "focus is visible"
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Create key")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("Name", exact=True)).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(page.get_by_role("button", name="Create key")).to_be_focused()
