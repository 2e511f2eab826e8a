"""The one place where tokens are generated: a continuous-batching scheduler for each loaded model.

Callers (the Prompt Lab, the chat, the lens, evaluation, the CLI) submit a :class:`Request` (a prompt's token
ids and generation settings) from any thread and read its new tokens as they come. One scheduler thread per
model runs turns; in each turn it

1. drops cancelled requests (a slot is free again within one step),
2. admits waiting requests while the batch has room (``EngineSettings.max_batch``) and the key/value memory
   allows (``kv_cache_mb``), the owners with the fewest requests running first, then the oldest,
3. prefills newcomers' prompts, at most ``prefill_chunk`` prompt tokens a turn (a long prompt is prefilled over
   several turns, so it never stalls the others' streams for more than one chunk),
4. advances every decoding request by one token in one batched forward pass, and retires those that ended.

Each turn runs on the process's compute thread (``models.compute``), so the engines of several models (the base
and a fine-tuned one in the chat) and other torch work take turns step by step, on one OpenMP team.

Llama-family models (``fastpath.supports``) decode as one batch over a slot cache (``fastpath.decode_step``);
other architectures are scheduled the same way but step row by row through their own forward pass. A prompt
whose exact tokens were prefilled recently reuses those keys and values (twenty learners pressing Run on the
same preset pay for one prefill); a request may also ask to reuse a shared leading part (evaluation: the chat
template, role and few-shot examples that every prompt of a task shares).

Its rule is batch invariance: a request (prompt ids, settings, ``prefix_tokens``) gets the same tokens whatever
else runs, alone or beside any other requests, adapters or owners, and whatever the engine prefilled before. So a
prompt is prefilled on its own, in pieces that depend only on itself (its split at ``prefix_tokens``, then
``prefill_chunk`` tokens at a time); what a turn's budget does is wait, never split a piece otherwise. A reused
prefix is one computed exactly so for another request (the same ids, the same split); decoding steps give a row
the same numbers in any batch (``fastpath``); and greedy picks need nothing else. With sampling, each request
draws from its own seeded generator.

The engine knows nothing about chat templates, prompt techniques or pages: token ids in, token ids out.

Over 600 lines because it is one scheduler whose parts (requests, batch slots, the prefix cache, the step loop and
its batch-invariance rules) share one state and one lock; split, every part would reach into the others.
"""

from __future__ import annotations

import itertools
import threading
import time
import types
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ftvpe_core import FtvpeError
from ftvpe_core.model import fastpath, models
from ftvpe_core.settings import GenerationSettings

IDLE_EXIT_S = 30.0
"""A scheduler thread with nothing to do for this long ends (and frees its cache); the next request starts one."""
MIN_SHARED_PREFIX = 8
"""Callers share a prefix (``prefix_tokens``) of at least this many tokens; a shorter one saves less than it costs."""
PREFIX_CACHE_ENTRIES = 8
"""Recent prompts whose keys and values are kept for reuse."""
PREFIX_MAX_TOKENS = 1024
"""Longer prompts are not kept (memory)."""
TURNS_S = 0.05
"""Longest run of turns before other work on the compute thread gets its go."""
_LENGTH_STEP = 64
"""The slot cache grows in steps of this many positions (a class's prompts plus answers of 128 tokens fit in 192
to 256 positions; steps of 256 could make the cache nearly twice what it holds)."""


@dataclass
class EngineSettings:
    """Limits of one model's engine."""

    max_batch: int = 24
    """Requests decoding together in one forward pass; more wait in the queue, and the page says where."""
    kv_cache_mb: int = 1024
    """Memory for the keys and values of all running requests together (a request that does not fit waits)."""
    prefill_chunk: int = 512
    """Prompt tokens prefilled per turn, between two decoding steps of the running batch."""

    def __post_init__(self) -> None:
        for name in ("max_batch", "kv_cache_mb", "prefill_chunk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FtvpeError(f"Engine setting {name} must be a whole number of at least 1, got {value!r}.")
        if self.prefill_chunk < 16:
            raise FtvpeError(f"Engine setting prefill_chunk must be at least 16 tokens, got {self.prefill_chunk}.")

    @classmethod
    def for_device(cls, device: str) -> EngineSettings:
        """Defaults: on a CPU, 24 rows (enough for a class of twenty at once; 2 cores give about 5x one stream's
        tokens/s at 20) and 1 GiB of keys and values; on a GPU, wider batches and longer chunks."""
        if device.startswith("cuda"):
            return cls(max_batch=64, kv_cache_mb=8192, prefill_chunk=2048)
        return cls()


def stop_ids(loaded: Any) -> set[int]:
    """Token ids that end an answer: the generation config's end tokens and the tokenizer's."""
    ids: set[int] = set()
    eos = getattr(getattr(loaded.model, "generation_config", None), "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if loaded.tokenizer.eos_token_id is not None:
        ids.add(loaded.tokenizer.eos_token_id)
    return ids


class Request:
    """One answer being generated. Read ``tokens`` through ``read`` (blocking) or ``wait``; ``cancel`` frees its
    place. Figures: ``ttft_s`` (submit to first token, queueing and prefill included), ``tokens_per_s``
    (decoding speed after the first token, as this request saw it), ``total_s``."""

    def __init__(
        self,
        prompt_ids: list[int],
        settings: GenerationSettings,
        owner: str | None,
        first_top: int,
        prefix_tokens: int,
        stop: set[int],
        sequence: int,
    ):
        self.prompt_ids = list(prompt_ids)
        self.settings = settings
        self.owner = owner
        self.first_top_k = first_top
        self.prefix_tokens = prefix_tokens
        """Prefilled apart: the first ``prefix_tokens`` tokens as a prompt of their own (shared with any request
        of the same first tokens and split), then the rest; 0 prefills the prompt whole."""
        self.stop = stop
        self.sequence = sequence
        self.state = "queued"
        """'queued', 'prefill', 'decoding', then 'done', 'cancelled' or 'failed'."""
        self.tokens: list[int] = []
        """New tokens so far (the end token excluded)."""
        self.end_token: int | None = None
        """The end token that finished the answer, if the model ended it."""
        self.stop_reason = ""
        """'end' (the model finished), 'length' (max new tokens), 'cancelled' or 'failed'."""
        self.first_top: list[tuple[float, int]] = []
        """With ``first_top`` asked for: the k likeliest first tokens as (probability, id), likeliest first."""
        self.error: BaseException | None = None
        self.submitted = time.perf_counter()
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self.queue_position: int | None = 1
        """1 for the next request to start, 2 behind it, ...; None once started."""
        self._cancelled = False
        self._engine: Any = None
        """A weak reference to the engine that runs it (set by ``Engine.submit``), woken by ``cancel``."""
        self._cv = threading.Condition()
        self._watchers: list[threading.Event] = []
        # Scheduler-side state (only the scheduler thread touches these).
        self._cache: Any = None
        self._prefilled = 0
        self._generator: Any = None
        self._seen: Any = None

    # Reading

    @property
    def finished(self) -> bool:
        return self.state in ("done", "cancelled", "failed")

    def read(self, start: int, timeout: float | None = None) -> list[int]:
        """Tokens from index ``start`` on, waiting until there is one or the request has finished."""
        with self._cv:
            self._cv.wait_for(lambda: len(self.tokens) > start or self.finished, timeout)
            return self.tokens[start:]

    def wait(self, timeout: float | None = None) -> Request:
        """Block until finished; re-raise the engine's error for this request."""
        with self._cv:
            if not self._cv.wait_for(lambda: self.finished, timeout):
                raise FtvpeError("The answer took too long; try again with fewer new tokens.")
        if self.error is not None:
            raise self.error
        return self

    def watch(self, event: threading.Event) -> None:
        """Set ``event`` whenever this request changes (a token, a start, the end)."""
        with self._cv:
            self._watchers.append(event)
        event.set()

    def cancel(self) -> None:
        """Stop generating; the scheduler frees the place before its next step."""
        if not self.finished:
            self._cancelled = True
            engine = self._engine() if self._engine is not None else None
            if engine is not None:
                engine._wake()

    # Figures

    @property
    def ttft_s(self) -> float:
        return (self.first_token_at - self.submitted) if self.first_token_at else 0.0

    @property
    def total_s(self) -> float:
        end = self.finished_at or time.perf_counter()
        return end - self.submitted

    @property
    def tokens_per_s(self) -> float:
        after_first = len(self.tokens) - 1
        if after_first < 1 or not self.first_token_at or not self.finished_at:
            return 0.0
        seconds = self.finished_at - self.first_token_at
        return after_first / seconds if seconds > 0 else 0.0

    # Scheduler side

    def _notify(self) -> None:
        """Call with ``_cv`` held."""
        self._cv.notify_all()
        for event in self._watchers:
            event.set()

    def _emit(self, token: int) -> bool:
        """Record a picked token; True when the request has ended with it."""
        now = time.perf_counter()
        with self._cv:
            if self.first_token_at is None:
                self.first_token_at = now
            if token in self.stop:
                self.end_token, self.stop_reason = token, "end"
            else:
                self.tokens.append(token)
                if len(self.tokens) >= self.settings.max_new_tokens:
                    self.stop_reason = "length"
            if self.stop_reason:
                self.state, self.finished_at = "done", now
            self._notify()
            return bool(self.stop_reason)

    def _finish(self, state: str, error: BaseException | None = None) -> None:
        with self._cv:
            if self.finished:
                return
            self.state, self.stop_reason, self.error = state, state, error
            self.finished_at = time.perf_counter()
            self._notify()
        self._cache = None

    def _set_state(self, state: str, position: int | None = None) -> None:
        with self._cv:
            self.state, self.queue_position = state, position
            self._notify()


class _Slots:
    """Keys and values of the decoding rows: per layer a (rows, kv_heads, length, head_dim) tensor, row i holding
    request i's tokens at positions [0, lens[i]). Rows [0, n) are in use; a leaving row is replaced by the last
    one, so the rows in use stay together and a step reads one contiguous block of rows."""

    def __init__(self) -> None:
        self.keys: list[Any] = []
        self.values: list[Any] = []
        self.lens: list[int] = []
        self.rows = 0
        self.length = 0

    def ensure(self, rows: int, length: int, like: Any, most_rows: int) -> None:
        """Room for ``rows`` rows of ``length`` positions; ``like`` is a DynamicCache giving shapes and dtype. Rows
        grow by doubling (up to ``most_rows``), positions in steps of _LENGTH_STEP, so a class joining one by one
        copies the cache a few times, not at every join."""
        import torch

        if rows <= self.rows and length <= self.length and self.keys:
            return
        new_rows = max(rows, min(2 * self.rows, most_rows), 1)
        new_length = max(length, self.length)
        new_length = -(-new_length // _LENGTH_STEP) * _LENGTH_STEP
        keys, values = [], []
        for index, layer in enumerate(like.layers):
            _, heads, _, dim = layer.keys.shape
            k = torch.zeros((new_rows, heads, new_length, dim), dtype=layer.keys.dtype, device=layer.keys.device)
            v = torch.zeros_like(k)
            if self.keys:
                n, used = len(self.lens), max(self.lens, default=0)
                k[:n, :, :used] = self.keys[index][:n, :, :used]
                v[:n, :, :used] = self.values[index][:n, :, :used]
            keys.append(k)
            values.append(v)
        self.keys, self.values, self.rows, self.length = keys, values, new_rows, new_length

    def add(self, cache: Any) -> int:
        """Copy a prefilled batch-1 DynamicCache into the next free row; returns the row."""
        row = len(self.lens)
        length = cache.get_seq_length()
        for index, layer in enumerate(cache.layers):
            self.keys[index][row, :, :length] = layer.keys[0]
            self.values[index][row, :, :length] = layer.values[0]
        self.lens.append(length)
        return row

    def remove(self, row: int) -> int | None:
        """Free ``row``; the last row moves into it. Returns the row that moved there (its old index), or None."""
        last = len(self.lens) - 1
        moved = None
        if row != last:
            n = self.lens[last]
            for k, v in zip(self.keys, self.values):
                k[row, :, :n] = k[last, :, :n]
                v[row, :, :n] = v[last, :, :n]
            self.lens[row] = n
            moved = last
        self.lens.pop()
        return moved


def _bytes_per_token(config: Any, dtype_bytes: int) -> int:
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_hidden_layers * 2 * heads * head_dim * dtype_bytes


class Engine:
    """The scheduler of one loaded model. Use ``get(loaded)`` for the shared one."""

    def __init__(self, loaded: Any, settings: EngineSettings | None = None):
        # The model is held weakly: an engine must not keep a model alive that its callers have let go.
        self._model = weakref.ref(loaded.model)
        self.device = loaded.device
        self.config = loaded.model.config
        self._stop_view = types.SimpleNamespace(
            model=types.SimpleNamespace(generation_config=getattr(loaded.model, "generation_config", None)),
            tokenizer=loaded.tokenizer,
        )
        self.settings = settings or EngineSettings.for_device(loaded.device)
        self.batched = fastpath.supports(loaded.model)
        self._lock = threading.Condition()
        self._waiting: list[Request] = []
        self._prefilling: list[Request] = []
        self._rows: list[Request] = []
        """Decoding requests; request i owns slot row i (batched models)."""
        self._slots = _Slots()
        self._prefixes: OrderedDict[tuple[int, ...], tuple[list, Any]] = OrderedDict()
        """Recent prompts prefilled whole, and shared prefixes (prefilled as prompts of their own) -> (their keys and
        values per layer, the logits of their next token, None for a prefix). DynamicCache appends by
        concatenation, so these tensors are never written again and need no copy."""
        self._served: dict[str | None, float] = {}
        """When each owner's last request started."""
        self._thread: threading.Thread | None = None
        self._sequence = itertools.count()
        dtype_bytes = 2 if loaded.weight_format in ("bfloat16", "float16") else 4
        self._token_bytes = _bytes_per_token(self.config, dtype_bytes)
        self.steps = 0
        """Batched decoding steps so far (for tests and benches)."""
        self.peak_rows = 0
        """The most requests that decoded together."""

    @property
    def model(self) -> Any:
        model = self._model()
        if model is None:
            raise FtvpeError("The model of this engine was unloaded; load it again.")
        return model

    # Submitting

    def submit(
        self,
        prompt_ids: list[int],
        settings: GenerationSettings | None = None,
        owner: str | None = None,
        first_top: int = 0,
        prefix_tokens: int = 0,
    ) -> Request:
        """Queue a request and return it at once.

        Args:
            prompt_ids: the prompt's token ids (chat template applied).
            settings: how to pick tokens (default ``GenerationSettings()``).
            owner: who asks (a browser session); the queue lets owners with fewer running requests go first.
            first_top: also keep the k likeliest first tokens (``Request.first_top``), from the prompt's pass.
            prefix_tokens: prefill the first this many tokens apart, as a prompt of their own, and keep them for
                other requests with the same first tokens (many prompts with one preamble: the chat template,
                a role, few-shot examples). Part of the request: its tokens are the same alone or batched, but
                may differ in the last bits from the same prompt prefilled whole (0).

        Raises:
            FtvpeError: an empty prompt, a prefix not shorter than the prompt, or a request that needs more
                key/value memory than the engine has.
        """
        settings = settings or GenerationSettings()
        if not prompt_ids:
            raise FtvpeError("The prompt is empty.")
        if isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int) or prefix_tokens < 0:
            raise FtvpeError(f"prefix_tokens must be a whole number of at least 0, got {prefix_tokens!r}.")
        if prefix_tokens >= len(prompt_ids):
            raise FtvpeError(f"The shared prefix ({prefix_tokens} tokens) must be shorter than the prompt.")
        need = self._kv_bytes(1, len(prompt_ids) + settings.max_new_tokens)
        if need > self.settings.kv_cache_mb * 2**20:
            raise FtvpeError(
                f"This request needs {need / 2**20:,.0f} MB of key/value cache, more than the engine's "
                f"{self.settings.kv_cache_mb:,} MB: shorten the prompt or ask for fewer new tokens."
            )
        request = Request(
            prompt_ids,
            settings,
            owner,
            first_top,
            prefix_tokens,
            stop_ids(self._stop_view) if settings.stop_at_end else set(),
            next(self._sequence),
        )
        request._engine = weakref.ref(self)
        with self._lock:
            self._waiting.append(request)
            self._number_queue()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="ftvpe-engine", daemon=True)
                self._thread.start()
            self._lock.notify_all()
        return request

    def generate(self, prompt_ids: list[int], settings: GenerationSettings | None = None, **kwargs) -> Request:
        """Submit and wait for the whole answer. Called from the compute thread itself (inside other torch
        work), it runs the turns there, since waiting for them would wait forever."""
        request = self.submit(prompt_ids, settings, **kwargs)
        try:
            if threading.current_thread().name.startswith(models.COMPUTE_THREAD):
                while not request.finished:
                    self._turns()
            return request.wait()
        finally:
            request.cancel()

    def stats(self) -> dict:
        """What the engine holds now: requests waiting, prefilling and decoding."""
        with self._lock:
            return {
                "waiting": len(self._waiting),
                "prefilling": len(self._prefilling),
                "decoding": len(self._rows),
                "max_batch": self.settings.max_batch,
            }

    def forget_prompts(self) -> None:
        """Drop the remembered prompts, so the next prompts are prefilled in full (benchmarks time prefill so)."""
        with self._lock:
            self._prefixes.clear()

    def _wake(self) -> None:
        with self._lock:
            self._lock.notify_all()

    def _kv_bytes(self, rows: int, length: int) -> int:
        length = -(-length // _LENGTH_STEP) * _LENGTH_STEP
        return rows * length * self._token_bytes

    # Scheduling (scheduler thread)

    def _number_queue(self) -> None:
        """Queue order and positions: owners take turns. First the owners with fewer requests running, then each
        owner's earlier requests before its later ones, then the owner served longest ago, then the oldest.
        Call with ``_lock`` held."""
        running: dict[str | None, int] = {}
        for r in self._prefilling + self._rows:
            running[r.owner] = running.get(r.owner, 0) + 1
        rank: dict[int, int] = {}
        seen: dict[str | None, int] = {}
        for r in sorted(self._waiting, key=lambda r: r.sequence):
            rank[id(r)] = seen.get(r.owner, 0)
            seen[r.owner] = rank[id(r)] + 1
        self._waiting.sort(
            key=lambda r: (
                running.get(r.owner, 0) + rank[id(r)],
                self._served.get(r.owner, -1.0),
                r.sequence,
            )
        )
        for position, r in enumerate(self._waiting, start=1):
            if r.queue_position != position:
                r._set_state("queued", position)

    def _admit(self) -> None:
        """Move waiting requests into prefill while there is room. Call with ``_lock`` held."""
        if not self._waiting:
            return
        self._number_queue()
        budget = self.settings.kv_cache_mb * 2**20
        while self._waiting:
            active = self._prefilling + self._rows
            if len(active) >= self.settings.max_batch:
                break
            candidate = self._waiting[0]
            longest = max(len(r.prompt_ids) + r.settings.max_new_tokens for r in active + [candidate])
            if active and self._kv_bytes(len(active) + 1, longest) > budget:
                break
            self._waiting.pop(0)
            self._served[candidate.owner] = time.monotonic()
            candidate._set_state("prefill")
            self._prefilling.append(candidate)
            self._number_queue()

    def _drop_cancelled(self) -> None:
        """Call with ``_lock`` held."""
        for r in [r for r in self._waiting if r._cancelled]:
            self._waiting.remove(r)
            r._finish("cancelled")
        for r in [r for r in self._prefilling if r._cancelled]:
            self._prefilling.remove(r)
            r._finish("cancelled")
        for r in [r for r in self._rows if r._cancelled]:
            self._retire(r)
            r._finish("cancelled")

    def _retire(self, request: Request) -> None:
        """Take a decoding request out of the batch (its row goes to the last row's request)."""
        row = self._rows.index(request)
        if self.batched:
            moved = self._slots.remove(row)
            if moved is not None:
                self._rows[row] = self._rows[moved]
            self._rows.pop()
        else:
            self._rows.pop(row)
        request._cache = None

    def _loop(self) -> None:
        while True:
            with self._lock:
                idle_since = time.monotonic()
                while not (self._waiting or self._prefilling or self._rows):
                    self._lock.wait(timeout=1.0)
                    if time.monotonic() - idle_since > IDLE_EXIT_S and not self._waiting:
                        self._thread = None
                        self._slots = _Slots()
                        return
            try:
                models.compute(self._turns)
            except Exception as e:  # noqa: BLE001 - every request of the turn learns why, the engine goes on
                error = e if isinstance(e, FtvpeError) else FtvpeError(f"Generation failed: {type(e).__name__}: {e}")
                with self._lock:
                    for r in self._prefilling + self._rows:
                        r._finish("failed", error)
                    self._prefilling, self._rows, self._slots = [], [], _Slots()

    def _turns(self) -> None:
        """Turns on the compute thread for up to TURNS_S seconds, then back to the queue of compute work, so a
        model load or a lens pass waits at most that long; the hand-over between threads at every token would
        cost a tenth of a single stream's speed."""
        until = time.perf_counter() + TURNS_S
        while True:
            with self._lock:
                self._admit()
                if not (self._prefilling or self._rows or self._waiting):
                    return
            self._turn()
            if time.perf_counter() > until:
                return

    def _turn(self) -> None:
        """One turn on the compute thread: free cancelled places, prefill chunks of newcomers, then one step of
        the batch."""
        import torch

        with self._lock:
            self._drop_cancelled()
            prefilling, decoding = list(self._prefilling), bool(self._rows)
        with torch.inference_mode():
            budget = self.settings.prefill_chunk
            for request in prefilling:
                if budget <= 0:
                    break
                budget -= self._prefill(request, budget)
            if decoding:
                self._decode()

    # Prefill (compute thread)

    def _prefill(self, request: Request, budget: int) -> int:
        """Prefill the next chunk of a request's prompt (at most ``budget`` tokens, or a whole chunk when the turn
        has not spent any yet); returns the tokens computed. When the prompt is done, the request gets its first
        token and joins the batch."""
        import torch
        from transformers import DynamicCache

        model, ids = self.model, request.prompt_ids
        logits = None
        if request._prefilled == 0:  # looked up again each turn: a request before it may have just prefilled it
            reuse = self._reuse(request)
            if reuse is not None:
                request._cache, logits, request._prefilled = reuse
            elif request._cache is None:
                request._cache = DynamicCache(config=model.config)
        split = request.prefix_tokens
        used = 0
        if request._prefilled < len(ids):
            end = split if request._prefilled < split else len(ids)
            chunk = min(end - request._prefilled, self.settings.prefill_chunk)
            if chunk > budget and budget < self.settings.prefill_chunk:
                return 0  # wait for a fresh turn: a piece is never cut by the budget (batch invariance)
            piece = ids[request._prefilled : request._prefilled + chunk]
            out = model(
                input_ids=torch.tensor([piece], device=self.device),
                past_key_values=request._cache,
                use_cache=True,
                logits_to_keep=1,
            )
            request._cache = out.past_key_values
            request._prefilled += chunk
            used = chunk
            if request._prefilled == split:
                self._remember(tuple(ids[:split]), request._cache, None)
            if request._prefilled < len(ids):
                return used
            logits = out.logits[0, -1].float().cpu()
            if not split:  # a whole prompt: the next request of the same prompt skips its prefill
                self._remember(tuple(ids), request._cache, logits)
        assert logits is not None
        self._start(request, logits)
        return used

    def _reuse(self, request: Request):
        """(cache, logits or None, tokens covered) of a recent prompt prefilled exactly as this one would be (the
        same prompt whole, or its shared prefix), or None."""
        ids, split = tuple(request.prompt_ids), request.prefix_tokens
        key = ids[:split] if split else ids
        if key not in self._prefixes:
            return None
        cache, logits = self._prefixes[key]
        self._prefixes.move_to_end(key)
        return _copy_cache(self.config, cache, len(key)), logits, len(key)

    def _remember(self, key: tuple[int, ...], cache: Any, logits: Any) -> None:
        if len(key) > PREFIX_MAX_TOKENS:
            return
        self._prefixes[key] = ([(layer.keys, layer.values) for layer in cache.layers], logits)
        self._prefixes.move_to_end(key)
        while len(self._prefixes) > PREFIX_CACHE_ENTRIES:
            self._prefixes.popitem(last=False)

    def _start(self, request: Request, logits: Any) -> None:
        """A prompt is done: pick the first token and move the request into the batch."""
        import torch

        s = request.settings
        request._generator = torch.Generator().manual_seed(s.seed)
        if s.repetition_penalty != 1.0:
            request._seen = torch.zeros(logits.shape[-1], dtype=torch.bool)
            request._seen[torch.tensor(request.prompt_ids)] = True
        if request.first_top_k:
            top = torch.topk(torch.softmax(logits, dim=-1), min(request.first_top_k, logits.shape[-1]))
            request.first_top = [(float(p), int(i)) for p, i in zip(top.values, top.indices)]
        token = self._pick(request, logits)
        with self._lock:
            self._prefilling.remove(request)
            if request._cancelled:
                request._finish("cancelled")
                return
            if request._emit(token):
                request._cache = None
                return
            request._set_state("decoding")
            self._rows.append(request)
            if self.batched:
                active = self._rows
                longest = max(len(r.prompt_ids) + r.settings.max_new_tokens for r in active)
                fits = self.settings.kv_cache_mb * 2**20 // self._kv_bytes(1, longest)
                most = max(len(active), min(self.settings.max_batch, fits))
                self._slots.ensure(len(active), longest, request._cache, most)
                self._slots.add(request._cache)
                request._cache = None
            self.peak_rows = max(self.peak_rows, len(self._rows))

    # Decoding (compute thread)

    def _decode(self) -> None:
        import torch

        rows = list(self._rows)
        last = [r.tokens[-1] for r in rows]
        if self.batched:
            logits = fastpath.decode_step(
                self.model, last, list(self._slots.lens), self._slots.keys, self._slots.values
            )
            for i in range(len(rows)):
                self._slots.lens[i] += 1
            logits = logits.float().cpu()
        else:
            outs = []
            for r, token in zip(rows, last):
                out = self.model(
                    input_ids=torch.tensor([[token]], device=self.device),
                    past_key_values=r._cache,
                    use_cache=True,
                )
                r._cache = out.past_key_values
                outs.append(out.logits[0, -1].float().cpu())
            logits = torch.stack(outs)
        self.steps += 1
        picked = self._pick_rows(rows, logits)
        with self._lock:
            for r, token in zip(rows, picked):
                if r._emit(token):
                    self._retire(r)

    def _pick_rows(self, rows: list[Request], logits: Any) -> list[int]:
        """The next token of every row; greedy rows without a penalty in one argmax."""
        plain = [i for i, r in enumerate(rows) if r.settings.greedy and r.settings.repetition_penalty == 1.0]
        if len(plain) == len(rows):
            return logits.argmax(-1).tolist()
        picked: list[int] = [0] * len(rows)
        if plain:
            for i, token in zip(plain, logits[plain].argmax(-1).tolist()):
                picked[i] = token
        for i, r in enumerate(rows):
            if i not in plain:
                picked[i] = self._pick(r, logits[i])
        return picked

    def _pick(self, request: Request, logits: Any) -> int:
        """The next token of one request (CTRL-style repetition penalty, temperature, top-p)."""
        import torch

        s = request.settings
        if s.repetition_penalty != 1.0:
            seen = request._seen
            penalised = torch.where(logits > 0, logits / s.repetition_penalty, logits * s.repetition_penalty)
            logits = torch.where(seen, penalised, logits)
        if s.greedy:
            token = int(logits.argmax(-1))
        else:
            probs = torch.softmax(logits / s.temperature, dim=-1)
            if s.top_p < 1.0:
                sorted_p, order = probs.sort(descending=True)
                keep = sorted_p.cumsum(-1) - sorted_p < s.top_p  # always keeps the most likely token
                probs = torch.zeros_like(probs).scatter(-1, order, sorted_p * keep)
            token = int(torch.multinomial(probs, 1, generator=request._generator))
        if s.repetition_penalty != 1.0:
            request._seen[token] = True
        return token


def _copy_cache(config: Any, layers: list, length: int) -> Any:
    """A new DynamicCache holding the first ``length`` positions of batch-1 (keys, values) per layer."""
    from transformers import DynamicCache

    copy = DynamicCache(config=config)
    for index, (keys, values) in enumerate(layers):
        copy.update(keys[:, :, :length], values[:, :, :length], index)
    return copy


_engines: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""model -> its engine (the engine holds the model weakly, so an unloaded model takes its engine along)."""
_engines_lock = threading.Lock()


def get(loaded: Any) -> Engine:
    """The engine of a loaded model, shared by every caller in the process (made on first use)."""
    with _engines_lock:
        engine = _engines.get(loaded.model)
        if engine is None:
            engine = _engines[loaded.model] = Engine(loaded)
        return engine


def configure(loaded: Any, settings: EngineSettings) -> Engine:
    """Give a model an engine under other limits (benches, tests, a server's settings). Requests already
    submitted finish on the old one."""
    engine = Engine(loaded, settings)
    with _engines_lock:
        _engines[loaded.model] = engine
    return engine
