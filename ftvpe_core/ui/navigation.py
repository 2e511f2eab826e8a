"""Every page under app.py's navigation, on a fresh server's first visit too.

Streamlit runs an app that has a ``pages/`` folder the old way (each file a page, listed by file name: "app",
"Prompt Lab", ...) until ``st.navigation`` has been called once in the server process. So the first visitor of a
fresh server who arrives on a deep link (a teacher's ``/Prompt_Lab?preset=...``) would get that list instead of
app.py's Home and sections, and app.py would not run for them. A page run that way hands over to app.py: it marks
the folder as not in use and reruns, and app.py's navigation routes the same URL (Streamlit derives a page's
identity from its URL path, which app.py gives each page as the folder did).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from streamlit import config
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner import get_script_run_ctx

ENTRY = "app.py"


def through_app() -> None:
    """Rerun through app.py when this page was started by the ``pages/`` folder; otherwise nothing.

    Outside a server started on app.py the page runs as it is: an AppTest (which resets Streamlit's choice before
    every run, so a hand-over there would repeat at every run) or a page file run alone."""
    if not PagesManager.uses_pages_directory or config.get_option("global.appTest"):
        return
    ctx = get_script_run_ctx()
    if ctx is None or Path(ctx.pages_manager.main_script_path).name != ENTRY:
        return
    PagesManager.uses_pages_directory = False
    st.rerun()
