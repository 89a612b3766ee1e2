"""The reflection model GEPA calls: one of the app's LLM clients, counted, and refusing replies that hold no prompt.

GEPA asks it to read a minibatch of answers with their feedback and to write a better instruction "within ```
blocks". The client's request discipline (retries on 429 / 5xx / time-outs, keys never in a message) is the one
Documents -> Q/A and the judge use; a reply with no usable prompt in it is asked again, and after
``GARBAGE_TRIES`` such replies in a row the optimisation fails saying so (its candidates are kept; Resume goes on).

GEPA catches a failed reflection and goes on to the next iteration, which would spend the whole budget asking a
dead endpoint. So the first failure that retries did not cure (the endpoint down, a key refused, a quota spent, or
garbage) is kept in ``failure``: every later call raises it at once, GEPA's stopper (``failed``) ends the search
after the iteration, and the run fails with it as its reason.

``total_cost``, ``total_tokens_in`` and ``total_tokens_out`` are what GEPA's cost stopper reads; they count what
earlier starts of the same run spent too (``spent``).
"""

from __future__ import annotations

from gepa.strategies.instruction_proposal import InstructionProposalSignature

from garage.errors import GarageError
from garage.llm import make_client
from garage.llm.prices import dollars
from garage.secrecy import scrub_secrets

GARBAGE_TRIES = 3
MAX_PROMPT_CHARS = 8000  # a "prompt" longer than this is the model rambling, not an instruction


class ReflectionModel:
    def __init__(self, backend: str, model: str, *, base_url: str = "", spent: dict | None = None, client=None,
                 log=print):
        self.backend, self.model, self.log = backend, model, log
        self.client = client or make_client(backend, model, base_url=base_url, max_retries=4, timeout=120.0,
                                            max_retry_wait=60.0, max_output_tokens=4096)
        spent = spent or {}
        self._before = {k: int(spent.get(k) or 0) for k in ("calls", "input_tokens", "output_tokens")}
        self.failure: GarageError | None = None

    def __call__(self, prompt) -> str:
        if self.failure is not None:
            raise self.failure
        try:
            return self._ask(prompt if isinstance(prompt, str)
                             else "\n\n".join(str(m.get("content", "")) for m in prompt))
        except GarageError as exc:  # the client's own errors (BackendError) are GarageErrors, worded for people
            self.failure = exc
            raise
        except Exception as exc:  # noqa: BLE001 - a library's error the client did not classify: kept, said
            self.failure = GarageError(f"The reflection model failed: {type(exc).__name__}: "
                                       f"{self.client.scrub(scrub_secrets(str(exc)))[:300]}")
            raise self.failure from None

    def failed(self, state=None) -> bool:
        """GEPA's stopper: the reflection model failed for good."""
        return self.failure is not None

    def _ask(self, text: str) -> str:
        reply = ""
        for _ in range(GARBAGE_TRIES):
            reply = self.client.generate_text(text, temperature=1.0)
            proposed = proposed_prompt(reply)
            if proposed:
                return f"```\n{proposed}\n```"  # GEPA reads back exactly this prompt
            self.log(f"The reflection model's reply held no prompt; asking again. It began: {reply[:120]!r}")
        raise GarageError(f"The reflection model ({self.backend} {self.model}) answered {GARBAGE_TRIES} times in a row "
                          f"without a new prompt in ``` blocks (the last began {reply[:80]!r}). Check "
                          "reflection_model (a chat model that follows instructions).")

    # --- what it cost -------------------------------------------------------------
    def spent(self) -> dict:
        stats = self.client.stats
        out = {"calls": self._before["calls"] + stats.requests,
               "input_tokens": self._before["input_tokens"] + stats.input_tokens,
               "output_tokens": self._before["output_tokens"] + stats.output_tokens}
        out["dollars"] = dollars(self.backend, self.model, out["input_tokens"], out["output_tokens"])
        return out

    @property
    def total_cost(self) -> float:
        return self.spent()["dollars"] or 0.0

    @property
    def total_tokens_in(self) -> int:
        return self.spent()["input_tokens"]

    @property
    def total_tokens_out(self) -> int:
        return self.spent()["output_tokens"]

    def close(self) -> None:
        self.client.close()


def proposed_prompt(reply: str | None) -> str | None:
    """The new prompt in a reflection reply, read as GEPA reads it (its own extractor: the text inside ```
    blocks; of several blocks, the first), or None when there is none: no block, an empty one, or one too long to
    be an instruction."""
    if "```" not in (reply or ""):
        return None
    text = InstructionProposalSignature.output_extractor(reply)["new_instruction"]
    text = text.split("```", 1)[0].strip()  # several blocks: GEPA would take all between the first and last fence
    return text if text and len(text) <= MAX_PROMPT_CHARS else None
