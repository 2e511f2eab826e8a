"""Token Lens: one answer, token by token, under the plain prompt, an engineered prompt and a fine-tuned model."""

import streamlit as st

from ftvpe_core import FtvpeError, figures
from ftvpe_core.studies import lens
from ftvpe_core.tasks import datasets, prompts
from ftvpe_core.ui import classroom, loaders, markdown, navigation
from ftvpe_core.ui import lens_view as view

navigation.through_app()

st.set_page_config(page_title="Token Lens · FT vs PE Studio", page_icon="🔍", layout="wide")
view.init()
loaders.sidebar()
ss = st.session_state

st.title("🔍 Token Lens")
st.caption(
    "Prompting changes what goes into the model; fine-tuning changes the model's weights. Both end up in the "
    "same place: the probabilities of the next token. Here one answer is read token by token under three "
    "conditions (plain prompt, engineered prompt, fine-tuned model with the plain prompt), so you can see where "
    "each one pushes the choice, and where they part ways."
)
classroom.page(view.PAGE, apply=view.apply_url_state)

c1, c2 = st.columns(2)
c1.selectbox("Dataset", datasets.BUILTINS, key="tl_dataset", format_func=lambda n: loaders.dataset(n).title)
test = loaders.dataset(ss.tl_dataset).splits["test"]
c1.radio("Input", view.SOURCES, key="tl_source", horizontal=True)
own = ss.tl_source == view.SOURCES[1]
if own:
    c1.text_area("Your text (sent as the user's message)", key="tl_text", height=80, max_chars=prompts.MAX_TASK_CHARS)
else:
    view.keep_valid("tl_example", list(range(len(test))))
    c1.selectbox(
        "Example from the test split",
        range(len(test)),
        key="tl_example",
        format_func=lambda i: f"{i + 1}. {test[i].prompt[:80]}",
    )
c2.multiselect(
    "Engineered prompt: techniques",
    prompts.TECHNIQUES,
    key="tl_techniques",
    help="Built for the example exactly as the Compare page builds its engineered arm.",
)
classroom.publish(view.PAGE, view.url_state())
adapters = view.adapter_menu(ss.tl_dataset)
view.keep_valid("tl_adapter", [None, *adapters], view.default_adapter(adapters))
c2.selectbox(
    "Fine-tuned adapter",
    [None, *adapters],
    key="tl_adapter",
    format_func=lambda a: "none: compare the two prompts only" if a is None else adapters[a],
)
if not adapters:
    c2.info(view.HOW_TO_GET_ONE)
options = view.follow_options(ss.tl_adapter is not None, not own)
view.keep_valid("tl_follow", options, lens.TUNED if ss.tl_adapter else lens.ENGINEERED)
c2.selectbox(
    "Answer to step through",
    options,
    key="tl_follow",
    help="The greedy answer of one condition, or the dataset's reference answer. Every condition is then "
    "read on exactly these tokens.",
)

if st.button("🔍 Look", type="primary", key="tl_look"):
    try:
        view.look()
    except FtvpeError as e:
        st.error(markdown.literal(e))

data = ss.tl_lens
if not data:
    st.info("Pick an input and press **🔍 Look** to read the next-token choices of each condition.")
    st.stop()

n = len(data["answer_ids"])
ss.tl_pos = min(max(int(ss.tl_pos), 1), n)
st.caption(
    f"{markdown.literal(data['model'])} · {view.WEIGHTS} · following: {data['follow']} · {n} tokens · top {data['k']} shown"
)
b1, b2, b3, b4 = st.columns([1, 1, 8, 3], vertical_alignment="bottom")
b1.button("◀", key="tl_prev", on_click=view.step, args=(-1,), disabled=ss.tl_pos <= 1)
b2.button("▶", key="tl_next", on_click=view.step, args=(1,), disabled=ss.tl_pos >= n)
if n > 1:
    b3.slider("Token in the answer", 1, n, key="tl_pos")
far = lens.Lens.from_dict(data).most_divergent()
if far is not None:
    b4.button("Jump to the biggest disagreement", key="tl_jump", on_click=view.jump, args=(far,))
position = ss.tl_pos - 1

st.markdown(view.answer_html(data, ss.tl_pos), unsafe_allow_html=True)
for line in view.readings(data, position):
    st.markdown(line)
st.plotly_chart(figures.lens_position(data, position), key="tl_fig_position")
st.plotly_chart(figures.lens_track(data, position), key="tl_fig_track")

with st.expander("The prompts each condition saw"):
    for label, messages in data["messages"].items():
        st.caption(f"{label}: {data['prompt_tokens'][label]} tokens with the chat template")
        st.code(view.prompt_text(messages), language=None, wrap_lines=True)
