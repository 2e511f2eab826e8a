"""The "which technique?" quiz: scenarios, their answers with explanations, and grading.

Each question describes a real-world situation and asks whether prompt engineering, fine-tuning or both
fit it best; each explanation ties the answer to the trade-offs the app teaches (cost, time, overfitting,
specialisation, instant iteration, combining the two) and names the page that demonstrates it. Plain data
and pure functions: no streamlit, no model, nothing stored; a page renders the questions and keeps the
user's choices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ftvpe_core import FtvpeError

ANSWERS = ("prompt", "fine-tune", "both")
"""The three possible answers, as stored in choices and questions."""

ANSWER_LABELS = {"prompt": "Prompt engineering", "fine-tune": "Fine-tuning", "both": "Both"}
"""The words a page shows for each answer."""

PROMPT_LAB = "pages/1_Prompt_Lab.py"
FINE_TUNE_LAB = "pages/2_Fine_Tune_Lab.py"
RUNS = "pages/6_Runs.py"
COMPARE = "pages/4_Compare.py"


@dataclass(frozen=True)
class Question:
    """One scenario, its best answer, why, and where in the app to see it for yourself."""

    key: str
    """Short stable id, used as the key of a choice and of a page widget."""
    scenario: str
    """Two or three sentences describing a concrete situation."""
    answer: str
    """The best fit: one of ANSWERS."""
    explanation: str
    """Two to four sentences on why, shown after grading."""
    page: str
    """Path of the page that demonstrates the idea, from the repository root."""
    page_hint: str
    """One sentence on what to try on that page."""

    def __post_init__(self) -> None:
        if self.answer not in ANSWERS:
            raise FtvpeError(f"Question '{self.key}' has answer '{self.answer}'; use one of {', '.join(ANSWERS)}.")


QUESTIONS: list[Question] = [
    # --- Prompt engineering -------------------------------------------------------------------------------
    Question(
        key="travel-blog",
        scenario=(
            "A small travel agency needs one warm, roughly 100-word opening for a blog post on green holiday "
            'ideas for American families. Their first attempt, "Write something about travel", came back '
            "bland and generic."
        ),
        answer="prompt",
        explanation=(
            "This is a single piece of writing, so there is nothing to repeat and no dataset to learn from. "
            "Naming the audience, the tone, the length and the topic in the request steers the model at once "
            "and costs nothing, and a weak draft is fixed by rewording rather than retraining."
        ),
        page=PROMPT_LAB,
        page_hint="Load the travel preset and run the vague request next to the one with role and context.",
    ),
    Question(
        key="skincare-campaign",
        scenario=(
            "A start-up launches a fragrance-free moisturiser next week and wants three campaign ideas by this "
            "afternoon. Nobody on the team has written marketing copy before."
        ),
        answer="prompt",
        explanation=(
            "Asking the model to act as an experienced marketer changes the structure and voice of its ideas "
            "in seconds, with no examples to gather. A deadline of hours rules out collecting data and "
            "training, while a role plus a few constraints can be tried, read and rewritten many times before lunch."
        ),
        page=PROMPT_LAB,
        page_hint="Pick the skincare preset and switch the role on and off to see how the campaign changes.",
    ),
    Question(
        key="weekly-facts",
        scenario=(
            "A garden centre's chatbot must quote this week's opening hours and special offers, which change "
            "every Monday. Last week's offers must never be repeated to a shopper."
        ),
        answer="prompt",
        explanation=(
            "Weights hold whatever was true on the day of training, so a tuned model would need retraining "
            "every week and could still mix old offers with new ones. Pasting the current facts into the "
            "prompt as context keeps every answer up to date the moment the list changes. On this app's "
            "invented battery, facts in the prompt raised recall from 1.1 % to 31.9 %, while a quick "
            "fine-tune reached only 3.3 %."
        ),
        page=COMPARE,
        page_hint="Compare the four arms on the domain knowledge task and see the prompt with context win.",
    ),
    Question(
        key="no-data-experiment",
        scenario=(
            "A product manager wonders whether a model could turn messy meeting notes into action items. "
            "There are no example summaries yet, and she wants an answer by tomorrow morning."
        ),
        answer="prompt",
        explanation=(
            "Fine-tuning needs a set of good input and output pairs, and she has none. Trying a few phrasings, "
            "a role and an output format shows within minutes whether the idea works at all, before anyone "
            "spends time building a dataset. If the experiment turns into a daily high-volume job, the prompts "
            "that worked become the seed of that dataset."
        ),
        page=PROMPT_LAB,
        page_hint="Type your own task, toggle the techniques one by one and compare each answer with the plain one.",
    ),
    Question(
        key="small-budget",
        scenario=(
            "A primary school teacher with an old laptop and no budget wants varied reading questions for her "
            "class, about a dozen a week. The topics change with every book the class reads."
        ),
        answer="prompt",
        explanation=(
            "At a dozen requests a week, the time and compute spent on training would never be earned back, "
            "and every new book would call for new data. A well-written prompt is free, runs on the model she "
            "already has, and adapts to a new book by changing one line."
        ),
        page=COMPARE,
        page_hint="Open the break-even chart and read how many calls it takes before training pays for itself.",
    ),
    Question(
        key="twenty-examples",
        scenario=(
            "A team has collected only 20 examples of the replies they like and plans to fine-tune on them. "
            "The model will face questions unlike any of those twenty."
        ),
        answer="prompt",
        explanation=(
            "With so few examples a model tends to memorise them instead of learning the pattern behind them, "
            "so it gets worse at anything new: that is overfitting. Putting three or four of the examples in "
            "the prompt as few-shot demonstrations shows the style without changing the weights, and keeps "
            "the model's general skill intact."
        ),
        page=RUNS,
        page_hint="Train the overfit-on-purpose preset, then overlay its curves with a quick run's and watch it climb.",
    ),
    Question(
        key="show-the-working",
        scenario=(
            "A homework helper must explain how to work out a train's arrival time, not just give the time. "
            "Parents complain that bare answers teach their children nothing."
        ),
        answer="prompt",
        explanation=(
            "Asking the model to reason step by step and end with a clear final line makes the working visible "
            "and the result easy to check. The skill is already in the model; the request only has to ask for "
            "it, so no training is needed."
        ),
        page=PROMPT_LAB,
        page_hint="Load the arrival-time preset and compare the answer with chain-of-thought on and off.",
    ),
    # --- Fine-tuning --------------------------------------------------------------------------------------
    Question(
        key="hospital-terms",
        scenario=(
            "A hospital network's assistant answers 10,000 staff chats a day and must use the same clinical "
            "terms and abbreviations every time. It has years of reviewed chat logs to learn from."
        ),
        answer="fine-tune",
        explanation=(
            "Consistency across a huge volume of similar requests is where training shines: the vocabulary "
            "becomes the model's default instead of something a long prompt has to restate on every call. "
            "The engineered prompts measured here added 157 to 375 tokens per call, a cost multiplied by "
            "10,000 a day, while the reviewed logs are exactly the data fine-tuning needs."
        ),
        page=FINE_TUNE_LAB,
        page_hint="Upload a small JSONL of question and answer pairs and watch the probe answers adopt its wording.",
    ),
    Question(
        key="ticket-routing",
        scenario=(
            "An online shop's help desk receives 50,000 messages a month, each to be sent to billing, shipping, "
            "technical or account. It has two years of messages already labelled by its staff."
        ),
        answer="fine-tune",
        explanation=(
            "The same narrow decision, made tens of thousands of times, with plenty of labelled history, is "
            "the textbook case for training. On this app's support triage task the base model got 4.4 % right "
            "and an engineered prompt 15.6 %, while 45 seconds of LoRA training on a laptop CPU reached 88.9 %."
        ),
        page=FINE_TUNE_LAB,
        page_hint="Launch the quick preset on support triage and read the test accuracy before and after.",
    ),
    Question(
        key="brand-voice",
        scenario=(
            'An outdoor-gear shop wants every reply to greet readers as "trail-mate", stay under 60 words, '
            'avoid words like "unfortunately" and end with its own sign-off. It has about 170 replies that '
            "its copywriters approved."
        ),
        answer="fine-tune",
        explanation=(
            "A brand's voice is a set of habits that has to hold in every answer, and approved replies show "
            "those habits better than any description of them. Measured here, a prompt describing the rules "
            "kept 60.0 % of them, while the tuned model kept 96.3 %."
        ),
        page=FINE_TUNE_LAB,
        page_hint="Train on the brand voice dataset and chat with the base and tuned models side by side.",
    ),
    Question(
        key="json-at-scale",
        scenario=(
            "An insurer turns 200,000 claim e-mails a night into records with exactly the same JSON fields. "
            "One malformed record stops the whole batch, and the team has thousands of checked examples."
        ),
        answer="fine-tune",
        explanation=(
            "A strict format repeated at scale is learned best from examples of that format: the model stops "
            "drifting, and the instructions no longer have to ride along with each e-mail. Every token of an "
            "engineered prompt is paid 200,000 times a night, whereas the training cost is paid once."
        ),
        page=COMPARE,
        page_hint="Look at the prompt-tokens column and the break-even chart to see when training becomes cheaper.",
    ),
    Question(
        key="maritime-jargon",
        scenario=(
            'A shipping-law firm\'s drafting assistant keeps writing "delay fee" where the firm always writes '
            '"demurrage", and muddles other terms of the trade. The firm has 5,000 reviewed memos in its '
            "house style."
        ),
        answer="fine-tune",
        explanation=(
            "A niche field's vocabulary and phrasing are specialisation, and thousands of memos are a rich "
            "source to train it from. After training, the right term comes out without a glossary pasted into "
            "every request; the facts of each new case still belong in the prompt."
        ),
        page=FINE_TUNE_LAB,
        page_hint="Compare the probe answers at each evaluation to see the tuned wording take over from the base one.",
    ),
    Question(
        key="private-data",
        scenario=(
            "A bank wants to sort transaction disputes automatically, but customer data may not leave its own "
            "servers, so large hosted models are off limits. The small model it can run in-house mislabels "
            "disputes whatever prompt the team tries, and 30,000 labelled past cases sit in its archive."
        ),
        answer="fine-tune",
        explanation=(
            "Training a small model on in-house hardware keeps every record inside the bank and turns the "
            "archive into accuracy that prompting alone could not reach. The result is a small adapter file the "
            "bank owns. On this app, a 135-million-parameter model went from 15.6 % with a prompt to 88.9 % "
            "after training on a 2-core CPU."
        ),
        page=FINE_TUNE_LAB,
        page_hint="Upload your own JSONL or CSV file: it is trained on this machine, and nothing is sent anywhere.",
    ),
    # --- Both ---------------------------------------------------------------------------------------------
    Question(
        key="patient-friendly",
        scenario=(
            "A clinic has a model trained on thousands of medical conversations that knows its terminology "
            "well. Now it must explain results to patients in plain, reassuring words suited to each "
            "patient's age."
        ),
        answer="both",
        explanation=(
            "Training gave the model its medical expertise, while the audience and tone change from one "
            "conversation to the next, which is a job for the prompt. Each technique does what it is good at. "
            "Still measure the pair: on this app's small model, adding a prompt to the tuned triage model "
            "dropped accuracy from 88.9 % to 40.0 %."
        ),
        page=PROMPT_LAB,
        page_hint="Load the medical-term preset and see how a role, an audience and a tone reshape the answer.",
    ),
    Question(
        key="summer-sale",
        scenario=(
            "The outdoor-gear shop already has a model tuned to its brand voice. For one sale weekend, every "
            "reply must also mention a discount code and stay under 40 words."
        ),
        answer="both",
        explanation=(
            "The voice is permanent and worth keeping in the weights; the code lasts two days, and retraining "
            "for it would take longer than the sale. A short prompt on top of the tuned model carries the "
            "temporary detail. Keep that prompt lean: here, stacking a long one on the tuned model cut the "
            "rules kept from 96.3 % to 66.7 %."
        ),
        page=COMPARE,
        page_hint="Run the brand voice task and read the fine-tuned and fine-tuned-plus-prompt columns together.",
    ),
    Question(
        key="new-product",
        scenario=(
            "A router maker's help desk model is tuned on three years of tickets for routing and tone. Next "
            "week a new router ships with its own error codes, and no tickets about it exist yet."
        ),
        answer="both",
        explanation=(
            "The tuned model keeps doing the routing it learned, while the new product's error codes go into "
            "the prompt as context from day one. Once enough tickets about the new router pile up, they can "
            "join the next training run. This pairing matches the measurements here, where fine-tuning won on "
            "format and voice and context won on facts."
        ),
        page=COMPARE,
        page_hint="Run the comparison on domain knowledge and on support triage to see which arm wins each.",
    ),
    Question(
        key="tax-memos",
        scenario=(
            "An accounting firm tuned a model on 8,000 of its reviewed tax memos. Every January the tax "
            "thresholds change, and clients want to see how each figure was reached."
        ),
        answer="both",
        explanation=(
            "The memos taught the firm's style and structure, which stays the same from year to year. The new "
            "thresholds belong in the prompt as context, and asking for step-by-step reasoning makes each "
            "figure checkable, with no retraining every January."
        ),
        page=PROMPT_LAB,
        page_hint="Turn on chain-of-thought and add the facts as context, then check the steps in the answer.",
    ),
]

QUESTIONS_BY_KEY = {q.key: q for q in QUESTIONS}


@dataclass(frozen=True)
class Result:
    """How one question went."""

    key: str
    """The question's key."""
    chosen: str | None
    """The answer picked, or None when the question was left unanswered."""
    answer: str
    """The right answer."""
    correct: bool
    """Whether the answer picked is the right one."""


@dataclass
class Graded:
    """A graded quiz: one result per question, in quiz order."""

    results: list[Result] = field(default_factory=list)
    """Every question's result, answered or not."""

    @property
    def score(self) -> int:
        """Number of right answers."""
        return sum(r.correct for r in self.results)

    @property
    def total(self) -> int:
        """Number of questions."""
        return len(self.results)

    @property
    def percent(self) -> float:
        """Share of right answers, 0 to 100 (0 for an empty quiz)."""
        return 100.0 * self.score / self.total if self.total else 0.0

    @property
    def missing(self) -> list[str]:
        """Keys of the questions left unanswered (counted as wrong)."""
        return [r.key for r in self.results if r.chosen is None]

    @property
    def wrong(self) -> list[str]:
        """Keys of the questions answered wrongly, unanswered ones excluded."""
        return [r.key for r in self.results if r.chosen is not None and not r.correct]

    def summary(self) -> str:
        """One encouraging sentence that fits the score."""
        head = f"{self.score} of {self.total} right"
        if self.percent >= 80:
            return (
                f"{head}: you pick the right tool almost every time, so go and check your hunches against the "
                "numbers on the Compare page."
            )
        if self.percent >= 50:
            return f"{head}: a solid start, and the explanations below show the trade-off behind each one you missed."
        return (
            f"{head}: every scenario links to a page where you can try it yourself, which is the quickest way to "
            "build the instinct."
        )


def question(key: str) -> Question:
    """The question with this key.

    Raises:
        FtvpeError: when no question has this key.
    """
    try:
        return QUESTIONS_BY_KEY[key]
    except KeyError:
        raise FtvpeError(f"Unknown quiz question '{key}'; the questions are {', '.join(QUESTIONS_BY_KEY)}.") from None


def grade(choices: dict[str, str | None], keys: Sequence[str] | None = None) -> Graded:
    """Grade a set of choices against the quiz (or against the questions named in ``keys``).

    Args:
        choices: question key -> chosen answer (one of ANSWERS). Questions missing from it, or mapped to None
            (an untouched radio button), count as unanswered and wrong.
        keys: grade only these questions (a short quiz, e.g. the Learn page's three); None for all.

    Returns:
        One result per question, in quiz order.

    Raises:
        FtvpeError: for a key that names no question, or an answer that is not one of ANSWERS.
    """
    for key, chosen in choices.items():
        question(key)
        if chosen is not None and chosen not in ANSWERS:
            raise FtvpeError(f"Answer {chosen!r} to question '{key}' is not one of {', '.join(ANSWERS)}.")
    asked = QUESTIONS if keys is None else [question(k) for k in keys]
    results = []
    for q in asked:
        chosen = choices.get(q.key)
        results.append(Result(key=q.key, chosen=chosen, answer=q.answer, correct=chosen == q.answer))
    return Graded(results)
