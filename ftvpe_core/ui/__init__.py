"""The only part of the core that imports streamlit: cached loaders, session-state helpers, rendering."""
