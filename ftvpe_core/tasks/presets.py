"""Ready-made Prompt Lab experiments: a task plus the techniques that improve it.

The first two come from the seed article (the travel blog and the skincare campaign); the rest are ours.
Each preset's plain prompt is its task alone, so the comparison shows what the techniques add.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftvpe_core import FtvpeError
from ftvpe_core.tasks.prompts import PromptSpec


@dataclass(frozen=True)
class Preset:
    key: str
    title: str
    lesson: str
    """One sentence on what the preset shows."""
    spec: PromptSpec


PRESETS: list[Preset] = [
    Preset(
        "travel",
        "Travel blog introduction",
        "A vague request against the same request with a role, a tone, an audience, a length and a topic.",
        PromptSpec(
            task="Write something about travel.",
            enabled=("role", "context"),
            role="a travel blogger",
            facts="The post is about eco-friendly travel tips: taking trains, packing light, reusable bottles.",
            tone="friendly",
            audience="families in the USA",
            words=100,
            output_format="a blog introduction",
        ),
    ),
    Preset(
        "skincare",
        "Skincare campaign (role assignment)",
        "Asking the model to act as a marketing expert changes the voice and structure of the campaign.",
        PromptSpec(
            task="Write a campaign for a new skincare product.",
            enabled=("role", "context"),
            role="a marketing expert",
            facts="The product is a fragrance-free moisturiser called Dewdrop, made for sensitive skin.",
            audience="adults with sensitive skin",
            tone="confident",
            words=80,
            output_format="a bulleted list of three campaign ideas",
        ),
    ),
    Preset(
        "sentiment",
        "Review sentiment (few-shot)",
        "Two worked examples teach the model the exact answer format without any training.",
        PromptSpec(
            task="Review: The strap broke on the second day and support never replied.",
            enabled=("few-shot",),
            examples=[
                ("Review: Arrived early and works perfectly. Love it!", "positive"),
                ("Review: The screen cracked within a week.", "negative"),
                ("Review: Does what it says, nothing more.", "neutral"),
            ],
        ),
    ),
    Preset(
        "train",
        "Arrival time (chain-of-thought)",
        "Asking for the steps and a final 'Answer:' line makes the reasoning visible and the result checkable.",
        PromptSpec(
            task="A train leaves at 3:40 pm and the trip takes 85 minutes. When does it arrive?",
            enabled=("cot",),
        ),
    ),
    Preset(
        "patient",
        "Medical term for a patient (complementary)",
        "The seed's closing example: the same facts, explained kindly for a patient through context and role.",
        PromptSpec(
            task="Explain what hypertension means.",
            enabled=("role", "context"),
            role="a friendly nurse",
            facts="Hypertension is blood pressure that stays at or above 130/80 mmHg. It often has no symptoms.",
            audience="a patient with no medical training",
            tone="reassuring",
            words=60,
        ),
    ),
    Preset(
        "triage",
        "Support ticket triage (few-shot + format)",
        "Labels from a fixed list: examples plus a format rule keep the answer to one word.",
        PromptSpec(
            task="I was charged twice for my subscription this month.",
            enabled=("few-shot", "context"),
            examples=[
                ("My parcel has been stuck in transit for ten days.", "shipping"),
                ("The app crashes whenever I open the settings page.", "technical"),
                ("I can't log in after changing my email address.", "account"),
            ],
            output_format="one word: billing, shipping, technical or account",
        ),
    ),
    Preset(
        "json",
        "Contact details as JSON (format)",
        "Naming the output format turns free text into data a program can read.",
        PromptSpec(
            task="Extract the name, city and phone number: 'Hi, this is Maria Lopez from Denver, call me on 555-0142.'",
            enabled=("context",),
            output_format="JSON with the keys name, city and phone",
        ),
    ),
]

PRESETS_BY_KEY = {p.key: p for p in PRESETS}


def get(key: str) -> Preset:
    try:
        return PRESETS_BY_KEY[key]
    except KeyError:
        raise FtvpeError(f"Unknown preset '{key}': choose one of {', '.join(PRESETS_BY_KEY)}.") from None
