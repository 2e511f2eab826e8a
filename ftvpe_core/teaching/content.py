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

# The pages in the navigation (app.py), by section, and as cards on Home.
PAGES = [
    {"path": "pages/0_Learn.py", "section": "Learn", "title": "Learn", "icon": "📖",
     "text": "The ideas in six short sections, each with something to switch or press: techniques, a recorded "
             "fine-tune, which weights change, the comparison, using both, and a quick check."},
    {"path": "pages/1_Prompt_Lab.py", "section": "Labs", "title": "Prompt Lab", "icon": "✍️",
     "text": "Switch on role, few-shot, chain-of-thought and context; run next to the plain prompt; see the "
             "next-token probabilities move."},
    {"path": "pages/2_Fine_Tune_Lab.py", "section": "Labs", "title": "Fine-Tune Lab", "icon": "🛠️",
     "text": "Train a small LoRA adapter on a built-in or uploaded dataset, watch the loss curves and sample "
             "answers live (or overfit it on purpose), then chat with the tuned model next to the base one."},
    {"path": "pages/3_Token_Lens.py", "section": "Labs", "title": "Token Lens", "icon": "🔍",
     "text": "One input, three conditions: plain prompt, engineered prompt, fine-tuned adapter. Step through "
             "the answer token by token and see which is sure of what."},
    {"path": "pages/4_Compare.py", "section": "Measure", "title": "Compare", "icon": "⚖️",
     "text": "Base vs engineered prompt vs fine-tuned vs both on the same held-out task: scores, tokens, "
             "latency, training time, break-even, and a recommendation written from the numbers."},
    {"path": "pages/5_Quiz.py", "section": "Learn", "title": "Quiz", "icon": "🎓",
     "text": "Seventeen real situations: prompt, fine-tune or both? Each answer comes with the reason and the "
             "page where you can see it happen."},
    {"path": "pages/6_Runs.py", "section": "Measure", "title": "Runs", "icon": "📈",
     "text": "Every fine-tuning run: status, settings, losses and sample answers; overlay their curves, "
             "download an adapter, delete what you no longer need."},
    {"path": "pages/7_Challenge.py", "section": "Class", "title": "Challenge", "icon": "🏁",
     "text": "Join your class's challenge with its code: beat the hidden test with a prompt or a fine-tune "
             "within the budget, and watch the leaderboard."},
    {"path": "pages/8_Teacher.py", "section": "Class", "title": "Teacher", "icon": "🧑‍🏫",
     "text": "Pose a challenge, show its join code, and put the live leaderboard and the class's answer to "
             "'prompt or fine-tune?' on the projector."},
]  # fmt: skip

FINETUNE_INTRO = (
    "Fine-tuning changes the model itself: it keeps training a general model on a small set of examples "
    "of the job you want, so its weights move towards that job. LoRA freezes every original weight and "
    "trains two thin matrices beside some layers instead, so it is quick and the result is a small file. "
    "Pick data, pick settings, launch, and watch it learn; then talk to the tuned model next to the base one."
)

TRAIN_KNOBS = {
    "rank": "Width of the two small matrices LoRA adds beside each chosen layer. Higher learns more and "
            "trains more weights (and overfits sooner).",
    "alpha": "Scales the adapter's effect by alpha / rank. Usually twice the rank.",
    "dropout": "Randomly silences part of the adapter's input while training, a guard against memorising.",
    "learning_rate": "How big each update is. Too low learns nothing in a short run; too high makes the "
                     "loss jump around or overfit.",
    "max_steps": "How many updates to make. Each step looks at one batch of examples.",
    "epochs": "Instead of steps: how many times to go through the whole training set (0 = use steps).",
    "batch_size": "Examples per step. Bigger is smoother but slower per step.",
    "max_length": "Longest example in tokens; longer ones lose the start of their prompt.",
    "warmup_fraction": "Share of the steps during which the learning rate climbs from 0, so the first "
                       "updates do not wreck the model.",
    "weight_decay": "Pulls the adapter's weights towards zero a little at each step.",
    "eval_every": "Measure the validation loss and answer the three probe prompts every this many steps.",
    "early_stopping_patience": "Stop after this many evaluations without a better validation loss (0 = never).",
    "target_modules": "Which layers get an adapter: the attention projections (q, k, v, o) and the MLP "
                      "(gate, up, down). More layers: more capacity, more weights.",
    "max_train_examples": "Train on only the first this many examples (0 = all); few examples make "
                          "overfitting easy to see.",
    "max_val_examples": "Measure the validation loss on only this many examples (0 = all): faster evaluations.",
    "restore_best": "At the end, keep the adapter from the evaluation with the lowest validation loss.",
    "bf16": "Compute in bfloat16 where the processor supports it: faster, same weights.",
    "seed": "Fixes the random start and batch order, so a run can be repeated exactly.",
}  # fmt: skip

COMPARE_INTRO = (
    "Which technique, when? Score the same held-out examples four ways: the base model with the plain "
    "prompt, the base model with an engineered prompt, a fine-tuned run, and the fine-tuned run with the "
    "prompt too. Quality, prompt tokens, time per answer and training time are measured, so the article's "
    "comparison table fills in with numbers from this machine."
)

CLASSROOM = (
    "Teaching a class? **Classroom mode** (the switch at the top of the sidebar, or `?classroom=1` in any "
    "link) enlarges the type, hides the advanced controls and walks through the demo in six steps. The "
    "address bar always holds the experiment on screen (preset, techniques, dataset), so the link you copy "
    "opens the same experiment for everyone."
)

CHOOSE_MODEL = (
    "The app runs **SmolLM2-135M-Instruct**, which ships inside the app, so it works offline on a laptop. "
    "To use another model, type it in the sidebar (or start the app with `FTVPE_MODEL=...`): a local folder "
    "with safetensors weights, a `.gguf` file, or a Hugging Face id that is already downloaded on this "
    "machine. Nothing is downloaded unless `FTVPE_ALLOW_DOWNLOAD=1` is set. A GPU is used when present."
)

CHALLENGE_INTRO = (
    "Your teacher posed a task. Answer it with a **prompt** (role, examples, context, step by step: the "
    "Prompt Lab's techniques) or a **fine-tune** (a quick LoRA on training examples you choose), within the "
    "budget. Every submission is scored on hidden examples that nobody has seen, and the leaderboard shows "
    "which approach wins."
)

TEACHER_INTRO = (
    "Pose a task, pick which split stays hidden, set the budgets, and show the join code. Half the room "
    "writes prompts, the other half fine-tunes; every submission is scored on the hidden split in the job "
    "queue, and this page shows the live leaderboard and the class's answer to *prompt or fine-tune?*"
)
