"""The standalone HTML report: every section from a hand-made comparison result, escaped, plotly.js inline once."""

import copy
import re

import pytest

from ftvpe_core import FtvpeError
from ftvpe_core.studies import report

ATTACK = "<script>alert(1)</script>"
PLOTLY_JS_HEADER = re.compile(r"\* plotly\.js v\d")


def _examples(arm, passed):
    return [
        {
            "index": i,
            "prompt": f"Message {i}: where is my parcel?",
            "reference": "shipping",
            "answer": ATTACK if (arm == "base" and i == 0) else f"{arm} answer {i}",
            "score": float(p),
            "passed": p,
            "detail": "names no label" if not p else "",
            "prompt_tokens": 37,
            "latency_s": 0.2,
        }
        for i, p in enumerate(passed)
    ]


def _arm(name, label, score, latency, train, passed):
    return {
        "name": name,
        "label": label,
        "score": score,
        "n": len(passed),
        "mean_prompt_tokens": 38.2,
        "mean_latency_s": latency,
        "train_seconds": train,
        "techniques": [],
        "examples": _examples(name, passed),
    }


RESULT = {
    "task": {"name": "support_triage", "title": "Support triage", "metric": "accuracy", "n": 3},
    "model": "SmolLM2-135M-Instruct (embedded)",
    "device": "cpu",
    "run_id": "20261123-231432-b4a4",
    "techniques": ["role", "few-shot", "context"],
    "created": 1763940000.0,
    "arms": [
        _arm("base", "Base, plain prompt", 0.0, 0.21, 0.0, [False, False, False]),
        _arm("prompt", "Base, engineered prompt", 1 / 3, 0.5, 0.0, [True, False, False]),
        _arm("tuned", "Fine-tuned", 1.0, 0.2, 45.1, [True, True, True]),
        _arm("tuned+prompt", "Fine-tuned, engineered prompt", 2 / 3, 0.45, 45.1, [True, True, False]),
    ],
    "efficiency": {
        "kshot": [{"k": k, "score": 0.1 * k, "mean_prompt_tokens": 30 + 20 * k} for k in (0, 1, 2, 4, 8)],
        "lora": [
            {"n": n, "score": s, "train_seconds": t} for n, s, t in ((10, 0.2, 3.0), (50, 0.6, 12.0), (167, 0.9, 45.0))
        ],
    },
    "forgetting": [{"question": "What is the capital of France?", "base": "Paris.", "tuned": "shipping <b>x</b>"}],
    "ablation": [
        {"techniques": combo, "score": 0.1 * len(combo), "mean_prompt_tokens": 30 + 40 * len(combo), "n": 3}
        for combo in ([], ["role"], ["few-shot"], ["role", "few-shot"])
    ],
    "gains": {"role": 0.05, "few-shot": 0.2, "cot": -0.1, "context": 0.03},
    "table": [
        {"Feature": "Purpose", "Fine-tuning": "Teaches the labels: 100% accuracy", "Prompt engineering": "33% <i>"},
        {"Feature": "Data", "Fine-tuning": "167 examples", "Prompt engineering": "3 examples in the prompt"},
        {"Feature": "Compute", "Fine-tuning": "45 s training", "Prompt engineering": "none"},
        {"Feature": "Latency", "Fine-tuning": "0.20 s", "Prompt engineering": "0.50 s"},
        {"Feature": "Prompt tokens", "Fine-tuning": "38", "Prompt engineering": "120"},
        {"Feature": "Flexibility", "Fine-tuning": "retrain to change", "Prompt engineering": "edit the prompt"},
    ],
    "recommendation": "**Fine-tune**: it reaches 100% accuracy.\nPrompting reaches 33%.\n\n- cheaper after 150 calls\n"
    "- <img src=x onerror=alert(2)> stays text",
}

CHART_IDS = ["chart-arm-scores", "chart-break-even", "chart-data-efficiency", "chart-ablation", "chart-gains"]


@pytest.fixture(scope="module")
def page():
    return report.html(RESULT)


def test_report_is_a_standalone_page_with_the_run_details(page):
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<title>Fine-tuning vs prompt engineering: Support triage</title>" in page
    for text in (
        "support_triage",
        "SmolLM2-135M-Instruct (embedded)",
        "cpu",
        "20261123-231432-b4a4",
        "role, few-shot, context",
        "2025-11-23 23:20 UTC",
    ):
        assert text in page
    # Offline: nothing is fetched from the network (plotly.js links to its site only in comments and strings).
    assert not re.search(r"<script[^>]+src=", page) and not re.search(r"<link[^>]+href=", page)


def test_report_has_a_div_for_each_chart_with_data(page):
    for div_id in CHART_IDS:
        assert f'id="{div_id}"' in page


def test_report_embeds_plotly_js_exactly_once(page):
    assert len(PLOTLY_JS_HEADER.findall(page)) == 1
    assert page.index("plotly.js v") < page.index('id="chart-arm-scores"')


def test_report_has_the_measured_table_and_the_arms_table(page):
    for row in RESULT["table"]:
        assert f"<td>{row['Feature']}</td>" in page
    assert "33% &lt;i&gt;" in page
    for header in ("Mean prompt tokens", "Mean latency", "Training time"):
        assert f"<th>{header}</th>" in page
    for cell in ("33.3%", "100.0%", "0.21 s", "45.1 s", "38.2"):
        assert f'<td class="num">{cell}</td>' in page


def test_report_lists_every_example_with_pass_and_fail_per_arm(page):
    for arm in RESULT["arms"]:
        assert f"<th>{arm['label']}</th>" in page
    assert "Message 2: where is my parcel?" in page
    assert page.count("✓ pass") == 6 and page.count("✗ fail") == 6
    assert "names no label" in page and "3 / 3" in page and "0 / 3" in page


def test_model_output_is_escaped_never_raw_html(page):
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert" not in page
    assert "shipping &lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page  # forgetting probe
    assert "&lt;img src=x onerror=alert(2)&gt;" in page and "<img src=x" not in page  # recommendation


def test_report_has_the_forgetting_probe_and_the_recommendation_as_html(page):
    assert "Forgetting probe" in page and "What is the capital of France?" in page and "Paris." in page
    assert "<p><strong>Fine-tune</strong>: it reaches 100% accuracy.<br>Prompting reaches 33%.</p>" in page
    assert "<ul><li>cheaper after 150 calls</li>" in page


def test_markdown_subset():
    assert report.markdown_to_html("a\nb\n\nc") == "<p>a<br>b</p>\n<p>c</p>"
    assert report.markdown_to_html("Intro\n- one\n* **two**\nafter") == (
        "<p>Intro</p>\n<ul><li>one</li><li><strong>two</strong></li></ul>\n<p>after</p>"
    )
    assert report.markdown_to_html("## Verdict\nuse `lora`") == "<h4>Verdict</h4>\n<p>use <code>lora</code></p>"
    assert report.markdown_to_html("<b>5 > 3 & 2</b>") == "<p>&lt;b&gt;5 &gt; 3 &amp; 2&lt;/b&gt;</p>"
    assert report.markdown_to_html(None) == report.markdown_to_html("") == ""


def test_report_without_the_optional_studies_leaves_their_charts_out():
    result = {**RESULT, "efficiency": None, "forgetting": None, "ablation": None, "gains": None}
    page = report.html(result)
    assert 'id="chart-arm-scores"' in page and 'id="chart-break-even"' in page
    for div_id in ("chart-data-efficiency", "chart-ablation", "chart-gains"):
        assert f'id="{div_id}"' not in page
    assert "Forgetting probe" not in page
    assert len(PLOTLY_JS_HEADER.findall(page)) == 1


def test_report_without_tuned_arms_still_compares_the_prompts():
    result = copy.deepcopy(RESULT)
    result["arms"] = [a for a in result["arms"] if not a["name"].startswith("tuned")]
    result.update(run_id=None, forgetting=None, efficiency={"kshot": RESULT["efficiency"]["kshot"], "lora": []})
    page = report.html(result)
    assert "Fine-tuned" not in page.split('id="chart-arm-scores"')[0]  # not in the tables before the charts
    assert "none (no fine-tuned arms)" in page
    assert "Base, engineered prompt" in page and 'id="chart-data-efficiency"' in page
    assert "fine-tuning pays off" not in page
    assert len(PLOTLY_JS_HEADER.findall(page)) == 1


def test_report_of_a_nearly_empty_result_has_no_charts_and_no_plotly():
    page = report.html({"task": {"name": "t"}, "arms": []})
    assert "<h1>Fine-tuning vs prompt engineering: t</h1>" in page
    assert "plotly.js v" not in page and "Charts" not in page


def test_write_saves_utf8_and_creates_the_folder(tmp_path):
    path = report.write(RESULT, tmp_path / "reports" / "support.html")
    assert path == tmp_path / "reports" / "support.html"
    text = path.read_text(encoding="utf-8")
    assert "✓ pass" in text and 'id="chart-gains"' in text


@pytest.mark.parametrize("where", ["under_a_file", "a_folder"])
def test_write_to_an_unwritable_path_raises_a_clear_error(tmp_path, where):
    blocker = tmp_path / "blocker.txt"
    blocker.write_text("not a folder")
    path = blocker / "report.html" if where == "under_a_file" else tmp_path
    with pytest.raises(FtvpeError, match="Could not write the report to"):
        report.write({"task": {"name": "t"}, "arms": []}, path)
