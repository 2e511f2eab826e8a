"""A fresh server's first visitor arriving on a deep link gets app.py's navigation and the linked experiment.

Streamlit treats an app with a ``pages/`` folder the old way until ``st.navigation`` has run once in the server,
so this module starts its own server (the other browser modules open Home first, which hides the case)."""

from __future__ import annotations

from tests.test_browser import (
    _expect_navigation,
    _no_exception_shown,
    app_home,
    app_url,
    browser,
    page,
    pytestmark,
)

__all__ = ["app_home", "app_url", "browser", "page", "pytestmark"]  # the fixtures and marks this module reuses


def test_a_deep_link_to_a_fresh_server_opens_its_page_under_the_apps_navigation(page, app_url):
    from playwright.sync_api import expect

    page.goto(app_url + "/Prompt_Lab?preset=skincare&techniques=role")
    expect(page.get_by_role("heading", name="Prompt Lab")).to_be_visible()
    _expect_navigation(page)  # Home and the sections, not the pages/ folder's "app", "Prompt Lab", ...
    expect(page.get_by_text("a marketing expert").first).to_be_visible()  # the link's preset and technique
    assert "/Prompt_Lab" in page.url and "preset=skincare" in page.url
    _no_exception_shown(page)
