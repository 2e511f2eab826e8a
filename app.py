"""Home: what the app teaches, the comparison table, links to the labs, and the model's status."""

import streamlit as st

from ftvpe_core import content
from ftvpe_core.ui import loaders

st.set_page_config(page_title="FT vs PE Studio", page_icon="🧪", layout="wide")
handle = loaders.sidebar()

st.title("🧪 FT vs PE Studio")
st.markdown(content.INTRO)

st.subheader("Fine-tuning vs prompt engineering at a glance")
st.table(content.COMPARISON, hide_index=True)

st.subheader("Try it")
cols = st.columns(max(len(content.PAGES), 3))
for col, page in zip(cols, content.PAGES):
    with col.container(border=True):
        st.page_link(page["path"], label=page["title"], icon=page["icon"])
        st.caption(page["text"])

st.subheader("Model")
loaders.status(handle)
st.markdown(content.CHOOSE_MODEL)
