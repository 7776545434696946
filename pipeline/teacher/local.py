"""Local backends: a `vllm serve` subprocess, transformers generation (`hf:`), and the
scripted `fake` teacher for tests and the offline demo."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distillery.errors import UserError
from distillery.teacher.config import TeacherConfig
from distillery.teacher.fake import demo_script
from distillery.teacher.types import ChatRequest, RawCompletion

# (request, params) -> answer text; the request names its call (`request.call`)
Script = Callable[[ChatRequest, dict[str, Any]], str]


class FakeReplica:
    """Deterministic, offline, free. Never chosen implicitly: only the spec `fake` selects it.
    The engine hands it the whole request (`answer`): the script answers from the request's
    call (`ChatRequest.call`: definition name and template variables), not its wording."""

    url = "fake://"

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or demo_script

    async def chat(self, request: ChatRequest, params: dict[str, Any]) -> RawCompletion:
        """The scripted answer to the call `request.call` names (its prompt is not read)."""
        messages = request.messages
        text = self.script(request, params)
        words = text.split()
        finish = "stop"
        if len(words) > params["max_tokens"]:
            text, finish = " ".join(words[: params["max_tokens"]]), "length"
        n_in = sum(len(m["content"].split()) for m in messages)
        n_in += len((request.prompt or "").split())
        return RawCompletion(
            text=text,
            finish_reason=finish,
            input_tokens=n_in,
            output_tokens=min(len(words), params["max_tokens"]),
        )

    async def list_models(self) -> list[str] | None:
        return None

    async def aclose(self) -> None:
        return None


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


class VLLMServer:
    """Starts `vllm serve MODEL` and waits until `/health` answers; stops it on close."""

    def __init__(self, config: TeacherConfig) -> None:
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.url = f"http://127.0.0.1:{config.vllm.port}"

    def start(self) -> str:
        """Returns the OpenAI-compatible base URL (`.../v1`)."""
        if _healthy(self.url):
            return self.url + "/v1"  # a server is already running on that port: use it
        exe = shutil.which(self.config.vllm.executable)
        if exe is None:
            raise UserError(
                f"teacher {self.config.spec}: vllm is not installed ({self.config.vllm.executable!r} "
                "not found): run `.venv/bin/pip install -e '.[vllm]'` on a GPU machine, "
                "or set teacher.base_urls to a running OpenAI-compatible server"
            )
        cmd = [
            exe,
            "serve",
            self.config.model,
            "--port",
            str(self.config.vllm.port),
            *self.config.vllm.extra_args,
        ]
        log = tempfile.NamedTemporaryFile(prefix="vllm-", suffix=".log", delete=False)  # noqa: SIM115
        self.log_path = Path(log.name)
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.config.vllm.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:] or [""]
                raise UserError(
                    f"teacher {self.config.spec}: `vllm serve` exited with code "
                    f"{self.process.returncode}: {tail[0][:200]} (log: {self.log_path})"
                )
            if _healthy(self.url, timeout=1.0):
                return self.url + "/v1"
            time.sleep(0.5)
        self.stop()
        raise UserError(
            f"teacher {self.config.spec}: vllm did not become healthy within "
            f"{self.config.vllm.startup_timeout_s:g}s (log: {self.log_path})"
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None


class HFReplica:
    """Local transformers generation. Concurrent requests are gathered into batches of up to
    `hf.batch_size` prompts with identical sampling params, left-padded, generated together.
    A chat request is rendered with the tokenizer's chat template (generation prompt added);
    a raw prompt (`request.prompt`) is generated from as it is. An answer ends at an eos id
    or at the first of the request's `stop` texts (not included)."""

    def __init__(self, config: TeacherConfig) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise UserError(
                f"teacher {config.spec}: needs the train extra: `.venv/bin/pip install -e '.[train]'`"
            ) from None
        self.url = f"hf://{config.model}"
        self.batch_size = config.hf.batch_size
        try:
            self.tokenizer: Any = AutoTokenizer.from_pretrained(config.model)
            dtype = "auto" if config.hf.dtype == "auto" else getattr(torch, config.hf.dtype)
            self.model: Any = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype)
        except OSError as exc:
            raise UserError(
                f"teacher {config.spec}: cannot load model: {str(exc).splitlines()[0]}"
            ) from None
        device = config.hf.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(device)  # type: ignore[arg-type]
        self.model.eval()
        self.device = device
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._queue: asyncio.Queue[
            tuple[list[dict[str, str]] | str, dict[str, Any], asyncio.Future[RawCompletion]]
        ] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._seeded: int | None = None  # the seed torch's generator was last set to

    async def chat(self, request: ChatRequest, params: dict[str, Any]) -> RawCompletion:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run())
        future: asyncio.Future[RawCompletion] = asyncio.get_running_loop().create_future()
        prompt = request.prompt if request.prompt is not None else request.messages
        await self._queue.put((prompt, params, future))
        return await future

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            await asyncio.sleep(0)  # let concurrent callers enqueue
            while len(batch) < self.batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            groups: dict[str, list[Any]] = {}
            for item in batch:
                groups.setdefault(repr(sorted(item[1].items())), []).append(item)
            for items in groups.values():
                try:
                    results = await asyncio.to_thread(
                        self._generate, [i[0] for i in items], items[0][1]
                    )
                    for item, result in zip(items, results, strict=True):
                        item[2].set_result(result)
                except Exception as exc:  # surface to every waiter
                    for item in items:
                        if not item[2].done():
                            item[2].set_exception(exc)

    def _generate(
        self, conversations: list[list[dict[str, str]] | str], params: dict[str, Any]
    ) -> list[RawCompletion]:
        """Each conversation (messages, rendered with the chat template and its generation
        prompt) or raw prompt (a string, as it is), generated in one batch."""
        import torch

        prompts = [
            c
            if isinstance(c, str)
            else self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
            for c in conversations
        ]
        enc = self.tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.device)
        do_sample = params["temperature"] > 0
        seed = params.get("seed")
        if seed is not None and seed != self._seeded:
            # seeded once, then the generator runs on: the same batches give the same
            # answers, and a prompt sampled again (Magpie's draws) gets new ones
            torch.manual_seed(seed)
            self._seeded = seed
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": params["max_tokens"],
            "do_sample": do_sample,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if do_sample:
            gen_kwargs.update(temperature=params["temperature"], top_p=params["top_p"])
        if params.get("stop"):  # halts early; the answer is cut at the stop text below
            gen_kwargs.update(stop_strings=list(params["stop"]), tokenizer=self.tokenizer)
        with torch.inference_mode():
            out = self.model.generate(**enc, **gen_kwargs)
        results = []
        width = enc["input_ids"].shape[1]
        stops = self._stop_ids()
        for row, mask in zip(out, enc["attention_mask"], strict=True):
            new = row[width:]
            hits = [k for k, token in enumerate(new.tolist()) if token in stops]
            ended = bool(hits)
            keep = new[: hits[0]] if ended else new[new != self.tokenizer.pad_token_id]
            cut = self._cut_at_stop(keep.tolist(), params.get("stop") or [])
            if cut is not None:
                text, n_out = cut
                ended, keep = True, keep[: n_out - 1]  # the last token writes the stop text
            else:
                text = self.tokenizer.decode(keep, skip_special_tokens=True)
            results.append(
                RawCompletion(
                    text=text,
                    finish_reason="stop" if ended else "length",
                    input_tokens=int(mask.sum()),
                    output_tokens=len(keep) + (1 if ended else 0),
                )
            )
        return results

    def _cut_at_stop(self, ids: list[int], stops: list[str]) -> tuple[str, int] | None:
        """(the text before the first stop text, the tokens it took to write the stop text)
        when `ids` write one (special tokens count: a template's end-of-turn token is one);
        None when none is written. Containment grows with the prefix: a binary search finds
        the fewest tokens that hold a stop text."""

        def text_of(k: int) -> str:
            return str(self.tokenizer.decode(ids[:k], skip_special_tokens=False))

        if not stops or not any(s in text_of(len(ids)) for s in stops):
            return None
        lo, hi = 1, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if any(s in text_of(mid) for s in stops) else (mid + 1, hi)
        full = text_of(lo)
        head = full[: min(full.find(s) for s in stops if s in full)]
        for special in sorted(self.tokenizer.all_special_tokens, key=len, reverse=True):
            head = head.replace(special, "")  # as `skip_special_tokens=True` decodes
        return head, lo

    def _stop_ids(self) -> set[int]:
        """Where an answer ends: the tokenizer's eos and every eos id of the model's
        generation config (a distillery-trained student lists its end-of-turn token there,
        which `generate` stops on too)."""
        ids = {self.tokenizer.eos_token_id}
        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids.update([eos] if isinstance(eos, int) else list(eos or []))
        return {i for i in ids if i is not None}

    async def list_models(self) -> list[str] | None:
        return None

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
