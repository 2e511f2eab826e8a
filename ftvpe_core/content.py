"""Teaching text shared by the pages, in our own words, following the seed article's ideas.

Plain data: no functions that compute anything.
"""

INTRO = (
    "There are two ways to make a language model do what you want. "
    "**Prompt engineering** changes the words you send: a role, worked examples, a request to reason step "
    "by step, or context such as tone, audience and length. "
    "**Fine-tuning** changes the model itself by training its weights on a small, specialised dataset; "
    "here you try both on a real model and measure what each one buys."
)

# The seed article's six-row comparison, rephrased.
COMPARISON = [
    {"Feature": "Purpose", "Fine-tuning": "Teach the model specialised knowledge",
     "Prompt engineering": "Get better answers from the model as it is"},
    {"Feature": "Method", "Fine-tuning": "Train it further on new examples",
     "Prompt engineering": "Write clearer, richer instructions"},
    {"Feature": "Difficulty", "Fine-tuning": "Technical; needs good data",
     "Prompt engineering": "Creative; needs good wording"},
    {"Feature": "Cost", "Fine-tuning": "High: training takes compute",
     "Prompt engineering": "Free or cheap"},
    {"Feature": "Speed", "Fine-tuning": "Slow: training comes first",
     "Prompt engineering": "Instant: try, read, rewrite"},
    {"Feature": "Use case", "Fine-tuning": "An industry's or a brand's own model",
     "Prompt engineering": "Everyday use and quick experiments"},
]  # fmt: skip

PAGES = [
    {"path": "pages/1_Prompt_Lab.py", "title": "Prompt Lab", "icon": "✍️",
     "text": "Switch on role, few-shot, chain-of-thought and context; run next to the plain prompt; see the "
             "next-token probabilities move."},
]  # fmt: skip

CHOOSE_MODEL = (
    "The app runs **SmolLM2-135M-Instruct**, which ships inside the app, so it works offline on a laptop. "
    "To use another model, type it in the sidebar (or start the app with `FTVPE_MODEL=...`): a local folder "
    "with safetensors weights, a `.gguf` file, or a Hugging Face id that is already downloaded on this "
    "machine. Nothing is downloaded unless `FTVPE_ALLOW_DOWNLOAD=1` is set. A GPU is used when present."
)
