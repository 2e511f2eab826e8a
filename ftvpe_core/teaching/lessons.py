"""The Learn page's lesson: short sections in our own words, following the seed article's ideas.

Plain data: each section's text, and the small facts its live widget needs. The figures and widgets are
drawn by ``ftvpe_core/ui/learn_view.py``; numbers quoted here were measured with this app (see README).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    body: str
    """Markdown, a few short paragraphs at most."""
    try_it: str = ""
    """One line introducing the section's widget."""


TECHNIQUES = {
    "role": (
        "Role assignment",
        "Tell the model who to be. The article's example: ask it to act as a marketing "
        "expert before it drafts a campaign for a new skincare product, and the voice and structure change.",
    ),
    "few-shot": (
        "Few-shot examples",
        "Show a couple of finished examples inside the prompt; the model copies "
        "their pattern and format for the new case.",
    ),
    "cot": (
        "Chain-of-thought",
        "Ask for the reasoning step by step before the result, so the steps can be read "
        "and checked (here the last line starts with 'Answer:').",
    ),
    "context": (
        "Context addition",
        "Add the background and the constraints: tone, audience, length, format, facts the model cannot know.",
    ),
}
"""Technique key -> (name, one-sentence explanation with the article's example where it has one)."""

SECTIONS: tuple[Section, ...] = (
    Section(
        "prompting",
        "1 · Prompt engineering: change the words",
        "Prompt engineering leaves the model exactly as it is and works on what you send it. Anyone who has "
        "rephrased a question to get a better answer has done it: no code, no training, and the result of a "
        "rewrite is there in seconds.\n\n"
        "The article's example is a request that leaves the model guessing, *Write something about travel.*, "
        "against one that spells out the job: a friendly opening of roughly 100 words for a blog post that gives "
        "American families tips on travelling in an eco-friendly way. Four techniques do most of the work:",
        "Switch the techniques on and off: the prompt below is rebuilt at once, coloured by what each one adds, "
        "while the model's weights stay untouched.",
    ),
    Section(
        "finetuning",
        "2 · Fine-tuning: change the weights",
        "Fine-tuning starts from a general model that has already learned language from a huge amount of text. "
        "You then keep training it on a small, focused set of examples of the job you care about, such as "
        "support tickets with their labels or replies in a brand's voice. Training nudges the model's internal "
        "parameters, the numbers that decide which word comes next, until its answers look like the examples. "
        "(LoRA, used here, freezes the original weights and trains two thin matrices beside some layers: a "
        "small file that changes what those layers compute.)\n\n"
        "**What it buys** (measured on this app's built-in tasks, quick runs of about a minute on a 2-core laptop):\n"
        "- *Specialisation*: the model does one job, in the format the job needs.\n"
        "- *Accuracy*: support triage went from 4 % right (plain prompt) and 16 % (engineered prompt) to 89 %.\n"
        "- *A better experience*: short, on-format answers without a long prompt on every call.\n"
        "- *Brand customisation*: replies that kept the brand's rules went from 41 % to 96 %.\n\n"
        "**What it costs**: data to collect and clean, compute and time before the first answer, and the risk of "
        "**overfitting**: trained too hard on too few examples, a model memorises them and gets worse on new "
        "ones (the *Overfit on purpose* preset in the Fine-Tune Lab shows it happen).",
        "A recorded quick run replays below, exactly as it was logged: the training loss falls and the probe "
        "answers turn into labels.",
    ),
    Section(
        "weights",
        "3 · Words vs weights",
        "Here is the whole difference in one picture. Each square is one weight matrix of the model: a layer "
        "(rows) and one of its projections (columns). Prompting changes none of them; it only makes the input "
        "longer. A LoRA fine-tune changes every matrix it was attached to, by a small amount, and leaves the "
        "rest exactly as they were.",
        "Pick an adapter: one trained in the Fine-Tune Lab on this machine, or the recorded one that ships with "
        "the app.",
    ),
    Section(
        "difference",
        "4 · The difference, side by side",
        "Both aim at better answers; they get there by different routes. Fine-tuning adjusts the model itself "
        "with data; prompt engineering adjusts the conversation with words. The article sums it up in six rows:",
        "On the ⚖️ Compare page the same six rows are filled with numbers measured on this machine: accuracy, "
        "prompt tokens per call, seconds per answer and training time.",
    ),
    Section(
        "together",
        "5 · Better together",
        "The two are not rivals. The article's example: a model fine-tuned on medical conversations knows the "
        "terms and the domain, and a prompt then asks it to explain things in a way a patient understands. The "
        "weights carry the knowledge; the words shape each answer for the person asking.\n\n"
        "Stacking them is worth measuring, not assuming. On this app's support-triage task the fine-tuned model "
        "alone scored 89 %, but the same model with a long engineered prompt on top scored 40 %: the prompt "
        "pulled it away from the one-word format it had learned.",
        "The patient example: the facts stay the same, and the prompt decides how they are told.",
    ),
    Section(
        "quiz",
        "6 · Check yourself",
        "Three situations from the quiz. Decide what you would reach for first; the full quiz has "
        "more, each with the reason and the page that shows it.",
    ),
)

SECTIONS_BY_KEY = {s.key: s for s in SECTIONS}

LEARN_QUIZ = ("travel-blog", "hospital-terms", "patient-friendly")
"""Quiz question keys asked on the Learn page (the Quiz page asks them all)."""
