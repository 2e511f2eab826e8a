"""FT vs PE Studio: ``streamlit run app.py``. The navigation: Home, then every page under its section, with the
titles and icons of ``content.PAGES`` and the URLs the page files have always had (``/Prompt_Lab?...`` links keep
working). Each page is a flat script that sets itself up (sidebar, state defaults), so it also runs on its own.
"""

import streamlit as st

from ftvpe_core.teaching import classroom, content
from ftvpe_core.ui import loaders

loaders.start_jobs()  # once per server: the job processes come up warm while a class challenge is open

home = st.Page("home.py", title="Home", icon="🧪", default=True)
sections: dict[str, list] = {"": [home]}
for page in content.PAGES:
    sections.setdefault(page["section"], []).append(
        st.Page(page["path"], title=page["title"], icon=page["icon"], url_path=classroom.url_path(page["path"]))
    )
st.navigation(sections).run()
