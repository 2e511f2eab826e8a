"""What the benchmark scripts share: torch on every CPU, progress lines, rounded figures, and the JSON-or-table
ending."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

DECODE_MESSAGES = [{"role": "user", "content": "Explain in a few short paragraphs how a railway timetable is planned."}]
"""The decode benches' short chat prompt."""
FACTS = [
    "The night train leaves Vienna at 21:40 and reaches Venice at 08:55 the next morning.",
    "Sleeper cabins hold up to four people and come with breakfast served at the seat.",
    "Children under six travel free when they share a bed with an adult.",
    "Bicycles must be booked in advance and travel in the last carriage.",
    "The train stops in Villach for twenty minutes while carriages are coupled.",
    "Pets under ten kilograms may travel in a closed carrier at no extra cost.",
]
FACTS_QUESTION = "Using only these facts, when does the night train arrive in Venice?"


def facts_messages(size: Callable[[list[dict]], int], target: int) -> list[dict]:
    """A chat prompt of about ``target`` tokens by ``size`` (chat template included): background facts, repeated,
    the last one cut word by word while the prompt stays at or above the target."""

    def build(lines: list[str]) -> list[dict]:
        content = "Background facts:\n" + "\n".join(f"- {f}" for f in lines) + f"\n\n{FACTS_QUESTION}"
        return [{"role": "user", "content": content}]

    lines: list[str] = []
    while size(build(lines)) < target:
        lines.append(FACTS[len(lines) % len(FACTS)])
    while lines and len(lines[-1].split()) > 1:
        shorter = [*lines[:-1], lines[-1].rsplit(" ", 1)[0]]
        if size(build(shorter)) < target:
            break
        lines = shorter
    return build(lines)


def use_all_threads() -> int:
    """Let torch use every CPU, on this thread and on the app's compute thread (``models.compute``), where the
    app's forward passes run and so do the benches'.

    Returns:
        The thread count.
    """
    import torch

    from ftvpe_core.model import models

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    models.compute(torch.set_num_threads, threads)
    return threads


def quiet_transformers() -> None:
    """No transformers warnings or progress bars: stderr holds the bench's own progress lines."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def note_busy_machine(report: dict, threads: int) -> None:
    """Record the closing load average; note when other processes shared the CPU."""
    report["load_average_end"] = os.getloadavg()
    busiest = max(report["load_average_start"][0], report["load_average_end"][0])
    if busiest > threads:
        report["notes"].append(
            f"the machine was busy (1-min load average up to {busiest:.1f} on {threads} CPUs): other processes "
            "shared the CPU; every figure, ratios included, is unreliable: rerun on a quiet machine"
        )


def log(message: str) -> None:
    """A progress line on stderr (stdout holds the table or the JSON object)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def rounded(value):
    """Floats rounded to 4 places, inside dicts and lists too."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def finish(args, run: Callable, render: Callable[[dict], str]) -> int:
    """Run the bench and print its report as JSON (``--json``) or a table; an FtvpeError exits 2 in one line."""
    from ftvpe_core import FtvpeError

    try:
        report = rounded(run(args))
    except FtvpeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0
