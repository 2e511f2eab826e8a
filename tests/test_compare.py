"""Comparisons on the tiny model: four arms, the measured table, the recommendation, as a job and from the CLI."""

from __future__ import annotations

import json

import pytest

from ftvpe_core import FtvpeError, cli
from ftvpe_core.jobs import foreground, worker
from ftvpe_core.store.runs import RunStore
from ftvpe_core.studies import compare
from ftvpe_core.training import finetune, tuning

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def tuned_run(tiny_model_dir) -> str:
    settings = finetune.TrainSettings(max_steps=2, eval_every=2, batch_size=4, max_length=48, max_val_examples=4)
    return foreground.finetune("support_triage", settings, str(tiny_model_dir), measure_accuracy=False)["run_id"]


def _arm(name, score, tokens, latency, train=0.0):
    return {
        "name": name,
        "label": compare.ARM_LABELS[name],
        "score": score,
        "n": 10,
        "mean_prompt_tokens": tokens,
        "mean_latency_s": latency,
        "train_seconds": train,
        "techniques": [],
        "examples": [],
    }


def _result(*arms, forgetting=None):
    return {
        "task": {"name": "support_triage", "title": "Support triage", "metric": "accuracy", "n": 10},
        "arms": list(arms),
        "techniques": ["role", "few-shot"],
        "forgetting": forgetting,
        "run": {"steps": 40, "dataset": "support_triage", "trainable_parameters": 1000, "total_parameters": 100000},
    }


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("techniques", ("role", "magic"), "Unknown technique 'magic'"),
        ("limit", -1, r"0 \(all\) or more"),
        ("metric", "bleu", "Unknown metric 'bleu'"),
        ("task", " ", "Name a task"),
        ("batch_size", 0, "between 1 and 64"),
    ],
)
def test_settings_refuse_bad_values_with_readable_messages(field, value, words):
    with pytest.raises(FtvpeError, match=words):
        compare.CompareSettings(**{"task": "support_triage", field: value})


def test_recommendation_follows_the_numbers():
    base, prompt = _arm("base", 0.05, 40, 0.3), _arm("prompt", 0.40, 240, 0.6)
    text = compare.recommend(
        _result(base, prompt, _arm("tuned", 0.90, 40, 0.3, 45.0), _arm("tuned+prompt", 0.95, 240, 0.6, 45.0))
    )
    assert "**Fine-tune.**" in text and "50 points above" in text and "after about 150 calls" in text
    assert "**Combine them**" in text and "reaches 95 %, 5 points above either alone" in text
    text = compare.recommend(
        _result(base, prompt, _arm("tuned", 0.90, 40, 0.3, 45.0), _arm("tuned+prompt", 0.5, 240, 0.6, 45.0))
    )
    assert "**Do not stack them here**" in text and "below the fine-tuned model alone (90 %)" in text
    text = compare.recommend(_result(base, prompt, _arm("tuned", 0.42, 40, 0.3, 45.0)))
    assert "**Either works; start with the prompt.**" in text
    text = compare.recommend(_result(base, prompt, _arm("tuned", 0.10, 40, 0.3, 45.0)))
    assert "**Prompt.**" in text
    text = compare.recommend(_result(base, prompt))
    assert "from 5 % to 40 % (+35 points)" in text and "Pick a fine-tuning run" in text


def test_measured_table_fills_the_six_rows_with_numbers():
    rows = compare.measured_table(
        _result(_arm("base", 0.05, 40, 0.3), _arm("prompt", 0.40, 240, 0.6), _arm("tuned", 0.90, 40, 0.3, 45.0))
    )
    assert [r["Feature"] for r in rows] == ["Purpose", "Method", "Difficulty", "Cost", "Speed", "Use case"]
    cost = rows[3]
    assert cost["Fine-tuning"] == "45 s of training, then 40 prompt tokens a call"
    assert cost["Prompt engineering"] == "0 s of training, then 240 prompt tokens a call"
    assert "1,000 of 100,000 weights (1.00%)" in rows[1]["Fine-tuning"]
    assert "150 calls" in rows[5]["Fine-tuning"]


def test_a_comparison_on_the_tiny_model_scores_all_four_arms(tiny_model_dir, tuned_run):
    settings = compare.CompareSettings(
        task="support_triage", run_id=tuned_run, limit=6, techniques=("role", "few-shot")
    )
    seen = []
    result = compare.run_comparison(settings, on_progress=lambda f, m: seen.append((f, m)))
    assert [a["name"] for a in result["arms"]] == ["base", "prompt", "tuned", "tuned+prompt"]
    for arm in result["arms"]:
        assert arm["n"] == 6 and len(arm["examples"]) == 6 and 0.0 <= arm["score"] <= 1.0
        assert arm["mean_prompt_tokens"] > 0 and arm["mean_latency_s"] > 0
    by = {a["name"]: a for a in result["arms"]}
    assert by["prompt"]["mean_prompt_tokens"] > by["base"]["mean_prompt_tokens"]
    assert by["tuned"]["train_seconds"] > 0 and by["base"]["train_seconds"] == 0
    assert len(result["forgetting"]) == 10 and len(result["table"]) == 6 and result["recommendation"]
    assert seen[0][0] == 0.0 and seen[-1][0] == 1.0 and all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    json.dumps(result)  # JSON-ready


def test_a_queued_comparison_runs_in_a_job_process_and_stores_its_result(tiny_model_dir):
    store = RunStore()
    settings = compare.CompareSettings(task="support_triage", model=str(tiny_model_dir), limit=4, forgetting=False)
    run_id = compare.submit(settings, store, "cpu")
    assert worker.serve(store, "cpu", log=lambda m: None) == 1
    run = store.get(run_id)
    assert run.status == "complete" and run.kind == "compare" and run.progress["fraction"] == 1.0
    result = compare.load_result(store, run_id)
    assert [a["name"] for a in result["arms"]] == ["base", "prompt"] and result["run_id"] is None
    assert set(run.summary["arms"]) == {"base", "prompt"}


def test_submit_refuses_a_run_that_is_not_complete(tiny_model_dir):
    store = RunStore()
    queued = tuning.submit("support_triage", finetune.TrainSettings(), str(tiny_model_dir), "cpu", store)
    with pytest.raises(FtvpeError, match="is queued; only a complete run"):
        compare.submit(compare.CompareSettings(task="support_triage", run_id=queued), store)


def test_efficiency_study_scores_k_shots_and_three_loras(tiny_model_dir):
    settings = compare.CompareSettings(
        task="support_triage", model=str(tiny_model_dir), limit=3, forgetting=False, efficiency=True, efficiency_steps=1
    )
    eff = compare.run_comparison(settings)["efficiency"]
    assert [p["k"] for p in eff["kshot"]] == [0, 1, 2, 4, 8]
    assert [p["n"] for p in eff["lora"]] == [10, 50, 159]  # all: the training split minus 8 held back
    assert eff["kshot"][4]["mean_prompt_tokens"] > eff["kshot"][0]["mean_prompt_tokens"]


def test_cli_compare_json_html_and_ablate(capsys, tmp_path, tiny_model_dir, tuned_run):
    html = tmp_path / "report.html"
    code = cli.main(
        ["compare", "--task", "support-triage", "--run", tuned_run, "--limit", "4", "--json", "--html", str(html)]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    arms = json.loads(out)["arms"]
    assert [a["name"] for a in arms] == ["base", "prompt", "tuned", "tuned+prompt"]
    for arm in arms:
        assert {"name", "score", "n", "mean_prompt_tokens", "mean_latency_s", "train_seconds"} <= set(arm)
    assert html.is_file() and "Fine-tuned + prompt" in html.read_text()
    # The tiny model's context (256 tokens) holds few-shot + chain-of-thought prompts only for short examples.
    short = tmp_path / "short.jsonl"
    words = ["good day", "train trip", "hello world", "the night", "a time", "this line"]
    short.write_text(
        "".join(
            json.dumps({"prompt": f"{w} {i}", "response": ["yes", "no"][i % 2]}) + "\n" for i, w in enumerate(words * 2)
        )
    )
    code = cli.main(["ablate", "--task", str(short), "--limit", "2", "--model", str(tiny_model_dir), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    combos = json.loads(out)["combinations"]
    assert len(combos) == 16 and {tuple(c["techniques"]) for c in combos} >= {
        (),
        ("role", "few-shot", "cot", "context"),
    }
    code = cli.main(["compare", "--task", "nope"])
    out, err = capsys.readouterr()
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_best_techniques_engineer_the_prompt_with_the_ablations_winner(tmp_path, tiny_model_dir):
    short = tmp_path / "short.jsonl"
    words = ["good day", "train trip", "hello world", "the night", "a time", "this line"]
    short.write_text(
        "".join(
            json.dumps({"prompt": f"{w} {i}", "response": ["yes", "no"][i % 2]}) + "\n" for i, w in enumerate(words * 2)
        )
    )
    settings = compare.CompareSettings(task=str(short), model=str(tiny_model_dir), limit=2, best_techniques=True)
    result = compare.run_comparison(settings)
    assert len(result["ablation"]) == 16 and result["gains"] is not None
    assert result["techniques"] == compare.best_combination(result["ablation"])
    assert result["arms"][1]["techniques"] == result["techniques"]


def test_best_combination_prefers_the_score_then_fewer_tokens():
    combos = [
        {"techniques": [], "score": 0.5, "mean_prompt_tokens": 40},
        {"techniques": ["role"], "score": 0.7, "mean_prompt_tokens": 60},
        {"techniques": ["role", "cot"], "score": 0.7, "mean_prompt_tokens": 90},
    ]
    assert compare.best_combination(combos) == ["role"]
