"""Free-form generation with a causal LM, in one place (used by `adaptlab generate`, prompting, RAG, RLHF).

``Generator`` loads the model once; ``generate`` returns the completion, ``stream`` yields text pieces as the
model produces them (``model.generate`` runs with transformers' text streamer on a thread of its own, or on
the thread a ``launch`` function chooses: the server keeps all model work on its one compute thread). Either
can be held to a JSON schema (``json_schema``: constrained decoding through ``adaptlab.structured``).
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import torch

from adaptlab.errors import AdaptlabError
from adaptlab.models.causal import load_causal_lm
from adaptlab.models.loading import max_positions
from adaptlab.sampling import SamplingOptions  # noqa: F401  (also importable from here, next to Generator)

#: how a streamed generation is started: given the work, run it somewhere and return its future (the server
#: passes its one compute thread's ``executor.submit``; by default a thread of its own)
Launcher = Callable[[Callable[[], None]], Future]


class Generator:
    #: a view on a PEFT model that several served names share (``adaptlab.serve.generators``) selects its
    #: ``adapter`` before generating, or switches every adapter off when it is None (the base)
    shared: bool = False
    adapter: str | None = None

    def __init__(self, model: str = "smollm2-135m", device: str | None = None) -> None:
        self.model, self.tokenizer, self.ref = load_causal_lm(model, device)

    def view(self, adapter: str | None, tokenizer=None) -> "Generator":
        """The same weights generating through ``adapter`` (None: none), with its own tokenizer if given."""
        view = copy.copy(self)
        view.shared, view.adapter, view.tokenizer = True, adapter, tokenizer or self.tokenizer
        return view

    def selected(self):
        """Select this generator's adapter for the next forward passes (a no-op for a plain model). Callers run
        it and the generation in one piece of work on the compute thread, so no other request interleaves."""
        if not self.shared:
            return contextlib.nullcontext()
        if self.adapter is None:
            return self.model.disable_adapter()
        self.model.set_adapter(self.adapter)
        return contextlib.nullcontext()

    @classmethod
    def from_loaded(cls, model, tokenizer, ref) -> "Generator":
        """Wrap a model another component already holds (e.g. the ICL strategy's), without reloading it."""
        generator = cls.__new__(cls)
        generator.model, generator.tokenizer, generator.ref = model, tokenizer, ref
        return generator

    def render_chat(self, user: str, system: str | None = None, examples: list[tuple[str, str]] = ()) -> str:
        """The prompt as the model was trained to see it: its chat template if it has one, else plain text.

        ``examples`` are few-shot (input, output) pairs, given as earlier user/assistant turns.
        """
        if not self.tokenizer.chat_template:
            shots = [f"Input: {i}\nOutput: {o}" for i, o in examples]
            return "\n\n".join(([system] if system else []) + shots + [f"Input: {user}\nOutput:" if examples else user])
        messages = [{"role": "system", "content": system}] if system else []
        for given, answer in examples:
            messages += [{"role": "user", "content": given}, {"role": "assistant", "content": answer}]
        messages.append({"role": "user", "content": user})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _inputs(self, prompt: str) -> dict:
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        if inputs["input_ids"].shape[1] == 0:  # model.generate would fail deep inside on an empty sequence
            raise AdaptlabError("the prompt is empty (it has no tokens); give the text to generate from")
        limit = max_positions(self.model)
        if limit is not None and inputs["input_ids"].shape[1] >= limit:
            raise AdaptlabError(f"the prompt has {inputs['input_ids'].shape[1]} tokens; model '{self.ref.name}' reads at most {limit}")
        return {k: v.to(self.model.device) for k, v in inputs.items()}

    def generate(self, prompt: str, options: SamplingOptions | None = None, json_schema: dict | None = None) -> str:
        """The completion of ``prompt`` (special tokens removed), without streaming; with ``json_schema``, a JSON
        document valid under it (constrained decoding, ``adaptlab.structured``) unless the token limit cuts it."""
        options = options or SamplingOptions()
        options.check()
        constrained = self._constrained(json_schema)
        inputs = self._inputs(prompt)
        torch.manual_seed(options.seed)
        with self.selected(), torch.inference_mode():
            output = self.model.generate(**inputs, **options.generate_kwargs(), **constrained(inputs),
                                         pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    def stream(self, prompt: str, options: SamplingOptions | None = None, launch: Launcher | None = None,
               json_schema: dict | None = None) -> Iterator[str]:
        """Pieces of the completion as they are generated. Bad options, an invalid ``json_schema`` or an over-long
        prompt raise here, before the first piece; closing the iterator early (a client that went away) stops the
        generation."""
        options = options or SamplingOptions()
        options.check()
        constrained = self._constrained(json_schema)
        inputs = self._inputs(prompt)
        return self._pieces(inputs, options, launch or _own_thread, constrained(inputs))

    def _constrained(self, json_schema: dict | None) -> Callable[[dict], dict]:
        """``generate`` keyword arguments for ``inputs`` that hold the reply to ``json_schema`` (none without)."""
        if json_schema is None:
            return lambda inputs: {}
        from transformers import LogitsProcessorList

        from adaptlab.structured import GrammarLogitsProcessor, Grammars

        head = self.model.get_output_embeddings()
        grammars = Grammars.of(self.tokenizer, int(head.weight.shape[0]) if head is not None else None)
        compiled = grammars.json_schema(json_schema)  # AdaptlabError, before any generation, if it is not valid
        return lambda inputs: {"logits_processor": LogitsProcessorList([GrammarLogitsProcessor(
            [grammars.constraint(compiled)], inputs["input_ids"].shape[1])]), "eos_token_id": self.tokenizer.eos_token_id}

    def _pieces(self, inputs: dict, options: SamplingOptions, launch: Launcher, extra: dict | None = None) -> Iterator[str]:
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        stop = threading.Event()
        halt = lambda input_ids, scores, **_: torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool,
                                                         device=input_ids.device)
        torch.manual_seed(options.seed)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with self.selected(), torch.inference_mode():
                    self.model.generate(**inputs, **options.generate_kwargs(), **(extra or {}), streamer=streamer,
                                        stopping_criteria=StoppingCriteriaList([halt]),
                                        pad_token_id=self.tokenizer.pad_token_id)
            except BaseException as exc:  # surfaced in the caller's thread below
                errors.append(exc)
                streamer.end()

        finished = launch(run)
        try:
            yield from streamer
        finally:
            stop.set()
            finished.result()
        if errors:
            raise errors[0]


def _own_thread(work: Callable[[], None]) -> Future:
    """Run ``work`` on a new daemon thread; the future completes when it returns."""
    future: Future = Future()

    def target() -> None:
        work()
        future.set_result(None)

    threading.Thread(target=target, daemon=True).start()
    return future
