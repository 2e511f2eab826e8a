"""A comparison result as one standalone HTML file: tables, charts and every answer, readable offline.

The report is built from the plain comparison dict (``compare``'s JSON-ready result) and nothing else: it runs
no model and reads no run store. plotly.js is embedded once, inline, so the file opens without a network.
Every piece of text from the result (model answers above all) is HTML-escaped before it is written.
"""

from __future__ import annotations

import datetime as dt
import html as html_lib
import re
from collections.abc import Collection
from pathlib import Path

from ftvpe_core import FtvpeError, __version__, figures

ARM_ORDER = ("base", "prompt", "tuned", "tuned+prompt")

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1e293b; margin: 0;
       background: #f8fafc; line-height: 1.5; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 60px; background: #fff; }
h1 { font-size: 1.7rem; margin: 0 0 4px; }
h2 { font-size: 1.25rem; margin: 36px 0 10px; border-bottom: 1px solid #e2e8f0; padding-bottom: 4px; }
h3, h4 { margin: 16px 0 6px; }
.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 12px 0; color: #334155; }
.meta dt { font-weight: 600; }
.meta dd { margin: 0; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 16px; font-size: 0.92rem; }
th, td { border: 1px solid #e2e8f0; padding: 6px 8px; text-align: left; vertical-align: top; }
th { background: #f1f5f9; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.text { white-space: pre-wrap; word-break: break-word; max-height: 12em; overflow: auto; }
.pass { color: #15803d; font-weight: 600; }
.fail { color: #b91c1c; font-weight: 600; }
.detail { color: #64748b; font-size: 0.85em; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
.chart { margin: 12px 0 24px; }
.recommendation { background: #f0fdf4; border-left: 4px solid #16a34a; padding: 8px 16px; }
.note { color: #64748b; font-size: 0.9rem; }
footer { color: #94a3b8; font-size: 0.85rem; margin-top: 40px; }
"""


def _e(value: object) -> str:
    return html_lib.escape("" if value is None else str(value), quote=True)


def _inline(escaped: str) -> str:
    """**bold** and `code` in text that is already HTML-escaped (escaping leaves * and ` alone)."""
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def _markdown_block(lines: list[str]) -> list[str]:
    out: list[str] = []
    paragraph: list[str] = []
    bullets: list[str] = []

    def flush() -> None:
        if paragraph:
            out.append("<p>" + "<br>".join(paragraph) + "</p>")
            paragraph.clear()
        if bullets:
            out.append("<ul>" + "".join(f"<li>{b}</li>" for b in bullets) + "</ul>")
            bullets.clear()

    for line in lines:
        heading = re.match(r"(#{1,6})\s+(.*)", line)
        if heading:
            flush()
            out.append(f"<h4>{_inline(_e(heading.group(2)))}</h4>")
        elif line.startswith(("- ", "* ")):
            if paragraph:
                flush()
            bullets.append(_inline(_e(line[2:].strip())))
        else:
            if bullets:
                flush()
            paragraph.append(_inline(_e(line)))
    flush()
    return out


def markdown_to_html(text: str | None) -> str:
    """The small markdown subset the recommendation uses, as HTML: paragraphs (blank lines), line breaks,
    ``- `` or ``* `` bullets, ``#`` headings, **bold** and `code`. The text is escaped first, so no HTML in it
    survives as markup."""
    blocks: list[str] = []
    for block in re.split(r"\n\s*\n", (text or "").replace("\r\n", "\n").strip()):
        blocks += _markdown_block([line.strip() for line in block.split("\n") if line.strip()])
    return "\n".join(blocks)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _seconds(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f} s"


def _date(created: float | None) -> str:
    if not created:
        return "–"
    return dt.datetime.fromtimestamp(float(created), tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _arms(result: dict) -> list[dict]:
    """The arms in the usual order (base, prompt, tuned, tuned+prompt), unknown names after them."""
    arms = list(result.get("arms") or [])
    rank = {name: n for n, name in enumerate(ARM_ORDER)}
    return sorted(arms, key=lambda a: rank.get(a.get("name"), len(ARM_ORDER)))


def _arm_label(arm: dict) -> str:
    return arm.get("label") or arm.get("name") or "?"


def _table(headers: list[str], rows: list[list[str]], numeric: Collection[int] = ()) -> str:
    """Headers are escaped here; cells arrive as HTML (already escaped by the caller)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _meta(result: dict) -> str:
    task = result.get("task") or {}
    task_text = _e(task.get("title") or task.get("name") or "–")
    if task.get("name") and task.get("title"):
        task_text += f' <span class="note">({_e(task["name"])})</span>'
    items = [
        ("Task", task_text),
        ("Metric", _e(figures.metric_words(task.get("metric")))),
        ("Test examples", _e(task.get("n", "–"))),
        ("Model", _e(result.get("model") or "–")),
        ("Device", _e(result.get("device") or "–")),
        ("Fine-tuning run", _e(result.get("run_id") or "none (no fine-tuned arms)")),
        ("Prompt techniques", _e(", ".join(result.get("techniques") or []) or "none")),
        ("Date", _e(_date(result.get("created")))),
    ]
    return '<dl class="meta">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def _feature_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    headers: list[str] = []
    for row in rows:
        headers += [k for k in row if k not in headers]
    body = [[_e(row.get(h, "")) for h in headers] for row in rows]
    return "<h2>Fine-tuning against prompt engineering, as measured</h2>" + _table(headers, body)


def _arms_table(arms: list[dict], metric: str | None) -> str:
    if not arms:
        return ""
    rows = []
    for arm in arms:
        color = figures.ARM_COLORS.get(arm.get("name"), "#cbd5e1")
        tokens = arm.get("mean_prompt_tokens")
        rows.append(
            [
                f'<span class="swatch" style="background:{color}"></span>{_e(_arm_label(arm))}',
                _e(_pct(arm.get("score"))),
                _e(arm.get("n", "–")),
                _e("–" if tokens is None else f"{tokens:.1f}"),
                _e(_seconds(arm.get("mean_latency_s"))),
                _e("none" if not arm.get("train_seconds") else _seconds(arm["train_seconds"], 1)),
            ]
        )
    headers = ["Arm", figures.metric_words(metric), "Examples", "Mean prompt tokens", "Mean latency", "Training time"]
    return "<h2>Arms</h2>" + _table(headers, rows, numeric={1, 2, 3, 4, 5})


def _charts(result: dict, arms: list[dict], metric: str | None) -> str:
    """The charts that have data; plotly.js goes inline with the first and is reused by the rest."""
    charts = []
    if any(a.get("score") is not None for a in arms):
        charts.append(("chart-arm-scores", figures.arm_scores(arms, metric)))
    if any(a.get("mean_latency_s") is not None for a in arms):
        charts.append(("chart-break-even", figures.break_even(arms)))
    efficiency = result.get("efficiency") or {}
    if any(p.get("score") is not None for key in ("kshot", "lora") for p in efficiency.get(key) or []):
        charts.append(("chart-data-efficiency", figures.data_efficiency(efficiency, metric)))
    if any(c.get("score") is not None for c in result.get("ablation") or []):
        charts.append(("chart-ablation", figures.ablation_chart(result["ablation"], metric)))
    if any(g is not None for g in (result.get("gains") or {}).values()):
        charts.append(("chart-gains", figures.technique_gains_chart(result["gains"], metric)))
    if not charts:
        return ""
    parts = []
    for n, (div_id, fig) in enumerate(charts):
        fig.update_layout(template="plotly_white")
        div = fig.to_html(
            full_html=False,
            include_plotlyjs="inline" if n == 0 else False,
            div_id=div_id,
            config={"displaylogo": False, "responsive": True},
        )
        parts.append(f'<div class="chart">{div}</div>')
    return "<h2>Charts</h2>" + "".join(parts)


def _examples_table(arms: list[dict]) -> str:
    arms = [a for a in arms if a.get("examples")]
    if not arms:
        return ""
    by_index: dict[int, dict[str, dict]] = {}
    for arm in arms:
        for position, example in enumerate(arm["examples"]):
            by_index.setdefault(example.get("index", position), {})[arm.get("name")] = example
    headers = ["#", "Prompt", "Reference"] + [_arm_label(a) for a in arms]
    rows = []
    for index in sorted(by_index):
        examples = by_index[index]
        first = next(iter(examples.values()))
        row = [
            _e(index),
            f'<div class="text">{_e(first.get("prompt"))}</div>',
            f'<div class="text">{_e(first.get("reference"))}</div>',
        ]
        for arm in arms:
            ex = examples.get(arm.get("name"))
            if ex is None:
                row.append("–")
                continue
            verdict = '<span class="pass">✓ pass</span>' if ex.get("passed") else '<span class="fail">✗ fail</span>'
            score = ex.get("score")
            if score is not None and score not in (0, 1):
                verdict += f" ({_e(f'{score:.0%}')})"
            detail = f'<div class="detail">{_e(ex["detail"])}</div>' if ex.get("detail") else ""
            row.append(f'{verdict}<div class="text">{_e(ex.get("answer"))}</div>{detail}')
        rows.append(row)
    passed = ["", "<strong>passed</strong>", ""] + [
        _e(f"{sum(bool(e.get('passed')) for e in a['examples'])} / {len(a['examples'])}") for a in arms
    ]
    rows.append(passed)
    # Each arm saw the example through its own prompt; one column of them is enough to say which example it is.
    note = (
        f'<p class="note">The prompt shown is what the {_e(_arm_label(arms[0]))} arm sent; '
        "each answer is shown as the model wrote it.</p>"
    )
    return "<h2>Every test example</h2>" + note + _table(headers, rows, numeric={0})


def _forgetting_table(probes: list[dict] | None) -> str:
    if not probes:
        return ""
    rows = [[f'<div class="text">{_e(p.get(k))}</div>' for k in ("question", "base", "tuned")] for p in probes]
    note = (
        '<p class="note">General questions outside the task, asked of the base model and of the fine-tuned one: '
        "what fine-tuning changed elsewhere.</p>"
    )
    return "<h2>Forgetting probe</h2>" + note + _table(["Question", "Base model", "Fine-tuned model"], rows)


def html(result: dict) -> str:
    """The comparison result as one standalone HTML page (plotly.js inline, no network needed to open it)."""
    task = result.get("task") or {}
    metric = task.get("metric")
    arms = _arms(result)
    title = f"Fine-tuning vs prompt engineering: {task.get('title') or task.get('name') or 'comparison'}"
    recommendation = result.get("recommendation")
    sections = [
        f"<h1>{_e(title)}</h1>",
        _meta(result),
        f'<h2>Recommendation</h2><div class="recommendation">{markdown_to_html(recommendation)}</div>'
        if recommendation
        else "",
        _feature_table(result.get("table") or []),
        _arms_table(arms, metric),
        _charts(result, arms, metric),
        _examples_table(arms),
        _forgetting_table(result.get("forgetting")),
        f"<footer>Written by FT vs PE Studio {_e(__version__)}.</footer>",
    ]
    body = "\n".join(s for s in sections if s)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def write(result: dict, path: str | Path) -> Path:
    """Write the report to ``path`` (UTF-8), creating its folder; FtvpeError when that cannot be done."""
    path = Path(path)
    text = html(result)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise FtvpeError(f"Could not write the report to {path}: {e.strerror or e}") from e
    return path


def challenge_html(result: dict) -> str:
    """A challenge's results (``results.export``) as one standalone HTML page: leaderboards, the per-track
    chart and every submission. Names and prompts are escaped: they are shown as text."""
    title = f"Class challenge {result.get('code', '')}: {result.get('title', '')}"
    metric = result.get("metric")
    sections = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="note">{_e(figures.metric_words(metric))} on {_e(result.get("hidden_n"))} hidden '
        f"{_e(result.get('hidden_split'))} examples; {_date(result.get('created'))}. "
        f"{_e(result.get('hidden_source', ''))} The leaderboards below are the final ranking (private part); "
        "the live score is what the class saw.</p>",
    ]
    descriptions = result.get("descriptions") or {}
    for track, entries in (result.get("leaderboard") or {}).items():
        rows = [
            [
                _e(e["rank"]),
                _e(e["name"]),
                _pct(e["score"]),
                _pct(e.get("public_score")),
                _e(e["prompt_tokens"] if track == "prompt" else e["train_examples"]),
                f'<div class="text">{_e(descriptions.get(e["id"], descriptions.get(str(e["id"]), "")))}</div>',
            ]
            for e in entries
        ]
        cost = "prompt tokens added" if track == "prompt" else "training examples"
        label = "Prompt" if track == "prompt" else "Fine-tune"
        sections.append(
            f"<h2>{label} leaderboard</h2>"
            + (
                _table(
                    ["#", "name", f"final {figures.metric_words(metric)}", "live score", cost, "submission"],
                    rows,
                    numeric=(0, 2, 3, 4),
                )
                if rows
                else '<p class="note">No scored submissions.</p>'
            )
        )
    fig = figures.challenge_scores(result.get("submissions") or [], metric)
    fig.update_layout(template="plotly_white")
    div = fig.to_html(
        full_html=False,
        include_plotlyjs="inline",
        div_id="chart-challenge",
        config={"displaylogo": False, "responsive": True},
    )
    sections.append(f'<h2>Prompt or fine-tune?</h2><div class="chart">{div}</div>')
    rows = [
        [
            _e(s["id"]),
            _e(s["name"]),
            _e(s["track"]),
            _e(s["status"]),
            _pct(s["score"]),
            _pct(s.get("public_score")),
            f'<div class="text">{_e(descriptions.get(s["id"], descriptions.get(str(s["id"]), "")))}</div>',
        ]
        for s in result.get("submissions") or []
    ]
    sections.append(
        "<h2>Every submission</h2>"
        + _table(["id", "name", "track", "status", "final score", "live score", "submission"], rows, numeric=(0, 4, 5))
    )
    sections.append(f"<footer>Written by FT vs PE Studio {_e(__version__)}.</footer>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{chr(10).join(sections)}\n"
        "</main>\n</body>\n</html>\n"
    )
