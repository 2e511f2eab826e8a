"""Home: what the app teaches, the comparison table, links to the labs, and the model's status (the default page
of ``app.py``'s navigation)."""

import streamlit as st

from ftvpe_core.teaching import classroom as guided
from ftvpe_core.teaching import content
from ftvpe_core.ui import classroom, loaders

st.set_page_config(page_title="FT vs PE Studio", page_icon="🧪", layout="wide")
handle = loaders.sidebar()

st.title("🧪 FT vs PE Studio")
classroom.page("home.py")
classroom.publish("home.py", {})
st.markdown(content.INTRO)

st.subheader("Fine-tuning vs prompt engineering at a glance")
st.table(content.COMPARISON, hide_index=True)

st.subheader("Try it")
for row in range(0, len(content.PAGES), 4):
    for col, page in zip(st.columns(4), content.PAGES[row : row + 4]):
        with col.container(border=True):
            st.page_link(page["path"], label=page["title"], icon=page["icon"])
            st.caption(page["text"])

st.subheader("In a classroom")
st.markdown(content.CLASSROOM)
st.page_link(
    "pages/0_Learn.py",
    label="Start the guided demo in classroom mode",
    icon="🏫",
    query_params=guided.encode({}, classroom=True, step=1),
)

st.subheader("Model")
loaders.status(handle)
st.markdown(content.CHOOSE_MODEL)
