"""What the benchmark scripts share: progress lines, rounded figures, and the JSON-or-table ending."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable


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
