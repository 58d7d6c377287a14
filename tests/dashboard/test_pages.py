"""The other pages: usage (the chart and the tables follow the calls made), projects, claiming a trial key, and the
operator's accounts and plans."""

import datetime

from playwright.sync_api import expect

from conftest import (
    OPERATOR_TOKEN,
    PROVIDER_KEY,
    chat,
    http,
    key_row,
    new_account,
    remember_secret,
    sign_in,
    sign_in_as_operator,
    wait_for,
)


def test_the_usage_chart_and_tables_follow_the_calls(page, account):
    key = account.create_key(name="metered")
    for _ in range(3):
        assert chat(key["raw_key"], {"x-mock": "usage 1200 345"}).status == 200
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    expected = 3 * (1200 + 345)

    def flushed():
        data = account.api("GET", "/v1/usage?group_by=day").json()["data"]
        return sum(d["total_tokens"] for d in data) == expected

    wait_for("the usage flush", flushed)
    sign_in(page, account)
    page.get_by_role("link", name="Usage").click()
    expect(page.get_by_role("heading", level=1, name="Usage")).to_be_visible()
    chart = page.get_by_role("img", name="Tokens per day")
    expect(chart).to_be_visible()
    bar = chart.locator(f'rect[data-day="{today}"]')
    expect(bar).to_have_attribute("data-tokens", str(expected))
    expect(bar.locator("title")).to_contain_text(today)
    assert float(bar.get_attribute("height")) > 0
    expect(page.locator("#usage-total")).to_contain_text("4,635")
    by_model = page.locator("table", has=page.locator("caption", has_text="By model"))
    expect(by_model).to_contain_text("gpt-4o-mini")
    by_key = page.locator("table", has=page.locator("caption", has_text="By key"))
    expect(by_key).to_contain_text(key["key_prefix"])
    by_end_user = page.locator("table", has=page.locator("caption", has_text="By end user"))
    expect(by_end_user).to_contain_text("No usage in this range.")

    # A range without the calls shows nothing.
    page.get_by_label("From", exact=True).fill("2020-01-01")
    page.get_by_label("To", exact=True).fill("2020-01-31")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#usage-total")).to_contain_text("0 tokens")
    expect(chart.locator(f'rect[data-day="{today}"]')).to_have_count(0)


def test_projects_are_created_renamed_and_deleted_only_when_empty(page, account):
    sign_in(page, account)
    page.get_by_role("link", name="Projects").click()
    expect(page.get_by_text("No projects yet")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("backend")
    page.get_by_label("Key cap").fill("3")
    page.get_by_role("button", name="Create project").click()
    expect(page.get_by_role("row").filter(has_text="backend")).to_contain_text("0 of 3")
    project = account.api("GET", "/v1/projects").json()["data"][0]
    row = page.locator(f'tr[data-project-id="{project["id"]}"]')

    row.get_by_role("button", name="Rename").click()
    field = row.get_by_role("textbox", name="Name")
    field.fill("payments")
    field.press("Enter")
    expect(row).to_contain_text("payments")
    assert account.api("GET", f"/v1/projects/{project['id']}").json()["name"] == "payments"

    key = account.create_key(name="in project", project_id=project["id"])
    page.reload()
    expect(row).to_contain_text("1 of 3")
    row.get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog", name="Delete project")
    dialog.get_by_role("button", name="Delete").click()
    expect(dialog.get_by_role("alert")).to_contain_text("has 1 active key; revoke it")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_have_count(0)
    assert account.api("GET", f"/v1/projects/{project['id']}").status == 200, "refused while it holds keys"

    account.api("DELETE", f"/v1/auth/keys/{key['id']}")
    page.reload()
    row.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog", name="Delete project").get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    assert account.api("GET", f"/v1/projects/{project['id']}").status == 404


def test_a_trial_key_is_claimed_after_signing_in(page, account):
    anonymous = http(
        "POST",
        "/v1/chat/completions",
        body={"model": "gpt-4o-mini", "messages": []},
        headers={"X-Provider-Key": PROVIDER_KEY, "User-Agent": "claim-test/1"},
    )
    assert anonymous.status == 200, anonymous.body
    trial_key = anonymous.headers["x-tollgate-key-provisioned"]
    remember_secret(trial_key)
    assert anonymous.headers["x-tollgate-claim-url"] == "/dashboard/claim"

    # The claim URL, followed signed out, asks to sign in and comes back.
    page.goto("/dashboard/claim")
    expect(page.get_by_role("heading", level=1, name="Sign in")).to_be_visible()
    sign_in_form_then = page.get_by_label("Email")
    sign_in_form_then.fill(account.email)
    page.get_by_label("Password", exact=True).fill(account.password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("heading", level=1, name="Claim a trial key")).to_be_visible()
    page.get_by_label("Trial key").fill(trial_key)
    page.get_by_role("button", name="Claim key").click()
    expect(page.locator("main .success")).to_contain_text("Claimed: the key")
    keys = account.api("GET", "/v1/auth/keys").json()["data"]
    assert [k["kind"] for k in keys] == ["trial"]
    expect(page.locator("main .success")).to_contain_text(keys[0]["key_prefix"])
    assert trial_key not in page.evaluate("document.body.innerText")
    page.get_by_role("link", name="Keys", exact=True).first.click()
    expect(key_row(page, keys[0]["key_prefix"])).to_contain_text("Trial")

    # A key that is not a trial key is refused, with the API's message next to the field.
    live = account.create_key(name="not a trial key")
    page.get_by_role("link", name="Claim a trial key").click()
    page.get_by_label("Trial key").fill(live["raw_key"])
    page.get_by_role("button", name="Claim key").click()
    field = page.get_by_label("Trial key")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(page.locator(f"#{field.get_attribute('aria-describedby').split()[0]}")).to_contain_text("is not a trial key")
    # The same key again: claimed already, and the page says so.
    page.get_by_label("Trial key").fill(trial_key)
    page.get_by_role("button", name="Claim key").click()
    expect(page.locator("main form").get_by_role("alert")).to_contain_text("claimed already")


def test_the_operator_creates_an_account_and_changes_its_plan(page):
    sign_in_as_operator(page)
    plans = page.locator("table", has=page.locator("caption", has_text="Plans"))
    expect(plans).to_contain_text("default")
    expect(page.get_by_role("navigation", name="Main").get_by_role("link")).to_have_text(["Accounts"])

    email = "new-person@example.com"
    password = "a long enough password 123"
    remember_secret(password)
    form = page.locator("form", has=page.get_by_role("button", name="Create account"))
    form.get_by_label("Email").fill(email)
    form.get_by_label("Password").fill(password)
    form.get_by_label("Key cap").fill("4")
    form.get_by_role("button", name="Create account").click()
    row = page.get_by_role("row").filter(has_text=email)
    expect(row).to_contain_text("default")
    expect(row).to_contain_text("4")
    login = http("POST", "/v1/auth/login", body={"email": email, "password": password})
    assert login.status == 200
    remember_secret(login.json()["access_token"])

    expect(plans).to_contain_text("pro")
    row.get_by_role("button", name="Edit").click()
    row.get_by_label("Plan").select_option("pro")
    row.get_by_label("Key cap").fill("7")
    row.get_by_role("button", name="Save").click()
    expect(row).to_contain_text("pro")
    expect(row).to_contain_text("7")
    accounts = http("GET", "/v1/accounts?limit=1000", token=OPERATOR_TOKEN).json()["data"]
    assert [(a["plan"], a["key_cap"]) for a in accounts if a["email"] == email] == [("pro", 7)]

    # Escape leaves an edit without saving.
    row.get_by_role("button", name="Edit").click()
    row.get_by_label("Key cap").fill("9")
    row.get_by_label("Key cap").press("Escape")
    expect(row.get_by_role("button", name="Edit")).to_be_visible()
    accounts = http("GET", "/v1/accounts?limit=1000", token=OPERATOR_TOKEN).json()["data"]
    assert [a["key_cap"] for a in accounts if a["email"] == email] == [7]

    # Disabling asks first, naming the account; then it can no longer sign in, until enabled again.
    row.get_by_role("button", name="Disable").click()
    confirm = page.get_by_role("dialog", name="Disable account")
    expect(confirm).to_contain_text(email)
    confirm.get_by_role("button", name="Disable").click()
    expect(confirm).to_have_count(0)
    expect(row).to_contain_text("Disabled")
    assert http("POST", "/v1/auth/login", body={"email": email, "password": password}).status == 403
    row.get_by_role("button", name="Enable").click()
    expect(row).to_contain_text("Active")
    again = http("POST", "/v1/auth/login", body={"email": email, "password": password})
    assert again.status == 200
    remember_secret(again.json()["access_token"])

    # The same email again: the API's refusal, shown on the form.
    form.get_by_label("Email").fill(email)
    form.get_by_label("Password").fill(password)
    form.get_by_role("button", name="Create account").click()
    expect(form.get_by_role("alert")).to_contain_text("already exists")


def test_a_second_account_sees_none_of_the_first_ones_keys(page, account):
    key = account.create_key(name="private")
    other = new_account()
    sign_in(page, other)
    expect(page.get_by_text("No keys yet")).to_be_visible()
    expect(key_row(page, key["key_prefix"])).to_have_count(0)
