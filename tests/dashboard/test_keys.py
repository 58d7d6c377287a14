"""Keys, end to end as a person: sign in, create a key and read it from the show-once dialog, use it through
tollgate, see it listed with its prefix and last use, rename it (Enter saves, Escape cancels), disable and
enable it, rotate it, revoke it through the confirmation and see the next call refused."""

import pytest
from playwright.sync_api import expect

from conftest import chat, column, dom_text, key_row, remember_secret, sign_in


def create_key_in_dialog(page, name, fill=None):
    page.get_by_role("button", name="Create key").click()
    form = page.get_by_role("dialog", name="Create key")
    expect(form).to_be_visible()
    form.get_by_label("Name", exact=True).fill(name)
    if fill:
        fill(form)
    form.get_by_role("button", name="Create key").click()
    shown = page.get_by_role("dialog", name="Your new key")
    expect(shown).to_be_visible()
    return shown


def test_a_key_is_created_shown_once_used_renamed_and_revoked(page, account):
    sign_in(page, account)
    expect(page.get_by_text("No keys yet")).to_be_visible()

    shown = create_key_in_dialog(page, "checkout service")
    expect(shown).to_contain_text("only time this key is shown")
    raw_key = shown.get_by_label("Key", exact=True).input_value()
    assert raw_key.startswith("tg_live_"), raw_key
    remember_secret(raw_key)
    shown.get_by_role("button", name="Copy", exact=True).click()
    expect(page.get_by_text("Copied")).to_be_attached()
    assert page.evaluate("navigator.clipboard.readText()") == raw_key
    shown.get_by_role("button", name="Done").click()
    # Gone from the DOM, not only closed: a closed dialog is removed once its close event has run.
    expect(page.locator("dialog")).to_have_count(0)
    assert raw_key not in dom_text(page), "the key stays in the DOM after its dialog closed"
    expect(page.locator("tbody tr[data-key-id]")).to_have_count(1)  # the list refreshed by itself
    expect(page.locator("tbody")).to_contain_text("checkout service")

    # The key works for a real provider call through tollgate.
    reply = chat(raw_key)
    assert reply.status == 200, reply.body
    assert reply.json()["choices"][0]["message"]["content"] == "Hello from mock"

    key = account.api("GET", "/v1/auth/keys").json()["data"][0]
    prefix = key["key_prefix"]
    assert raw_key.startswith(prefix) and len(prefix) < len(raw_key)
    page.reload()
    row = key_row(page, prefix)
    expect(row).to_contain_text("checkout service")
    expect(row).to_contain_text("Active")
    assert key["last_used_at"], "the call was seen"
    expect(column(page, row, "Last used").locator("time")).to_have_attribute("datetime", key["last_used_at"])
    assert raw_key not in dom_text(page), "only the prefix is listed"

    # Rename: Enter saves.
    row.get_by_role("button", name="Rename").click()
    field = row.get_by_role("textbox", name="Name")
    expect(field).to_be_focused()
    field.fill("checkout v2")
    field.press("Enter")
    expect(row).to_contain_text("checkout v2")
    expect(row.get_by_role("textbox")).to_have_count(0)
    assert account.api("GET", f"/v1/auth/keys/{key['id']}").json()["name"] == "checkout v2"

    # Rename: Escape cancels, and nothing is sent.
    row.get_by_role("button", name="Rename").click()
    field = row.get_by_role("textbox", name="Name")
    field.fill("never saved")
    field.press("Escape")
    expect(row).to_contain_text("checkout v2")
    expect(row).not_to_contain_text("never saved")
    expect(row.get_by_role("button", name="Rename")).to_be_focused()
    assert account.api("GET", f"/v1/auth/keys/{key['id']}").json()["name"] == "checkout v2"

    # Disable, then enable: a disabled key is refused 403 and comes back.
    row.get_by_role("button", name="Disable").click()
    expect(row).to_contain_text("Disabled")
    assert chat(raw_key).status == 403
    row.get_by_role("button", name="Enable").click()
    expect(row).to_contain_text("Active")
    assert chat(raw_key).status == 200

    # Revoke, through a confirmation that names the key.
    row.get_by_role("button", name="Revoke").click()
    confirm = page.get_by_role("dialog", name="Revoke key")
    expect(confirm).to_contain_text("checkout v2")
    expect(confirm).to_contain_text(prefix)
    confirm.get_by_role("button", name="Revoke").click()
    expect(confirm).to_have_count(0)
    expect(row).to_contain_text("Revoked")
    refused = chat(raw_key)
    assert refused.status == 401, refused.body
    assert raw_key not in refused.body.decode()


def test_cancelling_a_revocation_keeps_the_key(page, account):
    key = account.create_key(name="keep me")
    sign_in(page, account)
    row = key_row(page, key["key_prefix"])
    row.get_by_role("button", name="Revoke").click()
    confirm = page.get_by_role("dialog", name="Revoke key")
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_have_count(0)
    expect(row).to_contain_text("Active")
    assert chat(key["raw_key"]).status == 200


@pytest.mark.parametrize("grace", ["", "3600"])
def test_a_rotation_shows_the_new_key_once_and_the_old_one_ends(page, account, grace):
    old = account.create_key(name="rotating")
    sign_in(page, account)
    key_row(page, old["key_prefix"]).get_by_role("button", name="Rotate").click()
    dialog = page.get_by_role("dialog", name="Rotate key")
    dialog.get_by_label("Grace period (seconds)").fill(grace)
    dialog.get_by_role("button", name="Rotate").click()
    shown = page.get_by_role("dialog", name="Your new key")
    new_key = shown.get_by_label("Key", exact=True).input_value()
    remember_secret(new_key)
    assert new_key.startswith("tg_live_") and new_key != old["raw_key"]
    shown.get_by_role("button", name="Done").click()
    # Gone from the DOM, not only closed: a closed dialog is removed once its close event has run.
    expect(page.locator("dialog")).to_have_count(0)
    assert new_key not in dom_text(page)
    assert chat(new_key).status == 200
    new = [k for k in account.api("GET", "/v1/auth/keys").json()["data"] if k["id"] != old["id"]]
    assert [k["name"] for k in new] == ["rotating"]
    expect(key_row(page, new[0]["key_prefix"])).to_contain_text("Active")
    if grace:
        # The old key keeps working through the grace period, and says until when.
        assert chat(old["raw_key"]).status == 200
        revoked_at = account.api("GET", f"/v1/auth/keys/{old['id']}").json()["revoked_at"]
        assert revoked_at
        expect(key_row(page, old["key_prefix"])).to_contain_text("Active")
    else:
        assert chat(old["raw_key"]).status == 401
        expect(key_row(page, old["key_prefix"])).to_contain_text("Revoked")


def test_a_publishable_key_is_created_with_its_origins_and_signing_secret(page, account):
    def publishable(form):
        form.get_by_label("Kind").select_option("publishable")
        form.get_by_label("Allowed origins").fill("https://app.example.com\nhttps://*.example.org")

    sign_in(page, account)
    shown = create_key_in_dialog(page, "web widget", publishable)
    raw_key = shown.get_by_label("Key", exact=True).input_value()
    secret = shown.get_by_label("Signing secret").input_value()
    remember_secret(secret)
    assert raw_key.startswith("tg_pub_"), raw_key
    assert secret and secret != raw_key
    shown.get_by_role("button", name="Copy signing secret").click()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    shown.get_by_role("button", name="Done").click()
    # Gone from the DOM, not only closed: a closed dialog is removed once its close event has run.
    expect(page.locator("dialog")).to_have_count(0)
    assert secret not in dom_text(page), "the signing secret stays in the DOM after its dialog closed"

    key = account.api("GET", "/v1/auth/keys").json()["data"][0]
    assert key["kind"] == "publishable"
    assert key["allowed_origins"] == ["https://app.example.com", "https://*.example.org"]
    expect(key_row(page, key["key_prefix"])).to_contain_text("Publishable")
    # The browser origin it names may use it; another may not.
    allowed = chat(raw_key, {"Origin": "https://app.example.com"})
    assert allowed.status == 200, allowed.body
    assert chat(raw_key, {"Origin": "https://evil.example.net"}).status == 403


def test_an_invalid_field_is_named_next_to_it(page, account):
    sign_in(page, account)
    page.get_by_role("button", name="Create key").click()
    form = page.get_by_role("dialog", name="Create key")
    form.get_by_label("Name", exact=True).fill("limits")
    form.get_by_label("Requests per minute").fill("0")
    form.get_by_role("button", name="Create key").click()
    field = form.get_by_label("Requests per minute")
    expect(field).to_have_attribute("aria-invalid", "true")
    described = field.get_attribute("aria-describedby")
    assert described, "the error is tied to its field"
    expect(page.locator(f"#{described.split()[0]}")).to_contain_text("outside")
    assert account.api("GET", "/v1/auth/keys").json()["data"] == [], "nothing was created"


def test_filters_and_search_narrow_the_list(page, account):
    project = account.api("POST", "/v1/projects", {"name": "mobile"}).json()
    a = account.create_key(name="alpha", project_id=project["id"])
    b = account.create_key(name="beta")
    account.api("DELETE", f"/v1/auth/keys/{b['id']}")
    sign_in(page, account)
    rows = page.locator("tbody tr[data-key-id]")
    expect(rows).to_have_count(2)
    page.get_by_label("Status").select_option("revoked")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("beta")
    page.get_by_label("Status").select_option(label="All statuses")
    page.get_by_label("Project").select_option(project["id"])
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("alpha")
    page.get_by_label("Project").select_option(label="All projects")
    page.get_by_label("Search").fill(a["key_prefix"])
    expect(rows).to_have_count(1)
    page.get_by_label("Search").fill("no such key")
    expect(rows).to_have_count(0)
    expect(page.get_by_text("No keys match these filters.")).to_be_visible()
