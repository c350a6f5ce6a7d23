"""HTTP JSON API for a trained run (FastAPI), with a small web page at ``/``.

    rnnkit serve runs/surnames            # http://127.0.0.1:8000, docs at /docs

``POST /predict`` takes ``{"texts": [...], "top_k": 3}``; ``POST /explain`` takes
``{"texts": [...], "method": "ig"}`` and returns a score per token. Texts from requests
that arrive together are run through the model as one batch
(:class:`MicroBatcher`): under load that is several times fewer forward passes
than one per request, and a lone request waits at most ``max_wait_ms``.
"""


import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from typing import Optional

import torch

from . import __version__
from .errors import RnnkitError
from .explain import METHODS
from .predict import Run, check_abstain, predict_proba


@dataclass
class Limits:
    """What one request may ask for; beyond it the server answers 413 and keeps serving."""

    max_texts: int = 256
    max_chars: int = 2000
    max_batch: int = 1024
    """Texts per model call when requests are batched together."""
    max_wait_ms: float = 2.0
    """How long the first request of a batch waits for company."""
    max_explain_tokens: int = 1000
    """Tokens (as the run's tokenizer splits the texts) one /explain request may ask about: an
    explanation costs dozens of forward and backward passes per text, a prediction one."""

    @property
    def max_body_bytes(self) -> int:
        # Room for max_texts texts of max_chars characters, each JSON-escaped at its longest
        # (an emoji as two \uXXXX escapes: 12 bytes), plus slack.
        return self.max_texts * (self.max_chars * 12 + 16) + 65536


@dataclass
class _Job:
    texts: list
    top_k: int
    future: asyncio.Future
    abstain_below: Optional[float] = None
    ids: Optional[torch.Tensor] = None
    lengths: Optional[torch.Tensor] = None


class MicroBatcher:
    """Run the texts of concurrent requests through the model in one forward pass.

    Tokenizing and the forward pass happen on one worker thread, so the event
    loop stays free to accept requests meanwhile; torch uses its own threads
    inside the forward pass.
    """

    def __init__(self, run: Run, limits: Limits):
        self.run, self.limits = run, limits
        self.queue: Optional[asyncio.Queue] = None
        self.executor: Optional[ThreadPoolExecutor] = None
        self.aside: Optional[ThreadPoolExecutor] = None
        self._task: Optional[asyncio.Task] = None
        self.batches = 0
        self.texts = 0

    async def start(self) -> None:
        """Start the worker (again, after :meth:`stop`); called by the app's lifespan."""
        if self._task is not None and not self._task.done():
            return
        self.queue = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnnkit-model")
        self.aside = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnnkit-explain")
        self._task = asyncio.create_task(self._worker())

    async def stop(self) -> None:
        """Stop the worker; requests still waiting get an error instead of hanging."""
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        while not self.queue.empty():
            job = self.queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(RnnkitError("the server is shutting down"))
        self.executor.shutdown(wait=False)
        self.aside.shutdown(wait=False)
        self._task = None

    async def predict(self, texts: list, top_k: int, abstain_below: Optional[float] = None) -> list:
        await self.start()  # no-op when running; lets the app work without its lifespan too
        job = _Job(texts, top_k, asyncio.get_running_loop().create_future(), abstain_below)
        await self.queue.put(job)
        return await job.future

    async def call(self, fn, *args):
        """Run ``fn(*args)`` on the model's worker thread, between batches."""
        await self.start()
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def call_aside(self, fn, *args):
        """Run ``fn(*args)`` on a second thread, one call at a time, so that a slow explanation does not
        hold up the predictions queued behind it. Both threads only read the model (eval mode; grad
        mode is per thread), which torch allows."""
        await self.start()
        return await asyncio.get_running_loop().run_in_executor(self.aside, fn, *args)

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            size = len(jobs[0].texts)
            deadline = loop.time() + self.limits.max_wait_ms / 1000
            while size < self.limits.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                jobs.append(job)
                size += len(job.texts)
            try:
                results = await loop.run_in_executor(self.executor, self._forward, jobs)
            except asyncio.CancelledError:
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(RnnkitError("the server is shutting down"))
                raise
            except Exception as exc:  # a broken batch fails its requests, never the server
                results = [exc] * len(jobs)
            for job, result in zip(jobs, results):
                if job.future.done():
                    continue
                if isinstance(result, Exception):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    def _forward(self, jobs: list) -> list:
        vectorizer, results = self.run.vectorizer, [None] * len(jobs)
        ok = []
        for i, job in enumerate(jobs):
            try:
                job.ids, job.lengths = vectorizer.encode_texts(job.texts)
                ok.append((i, job))
            except Exception as exc:  # a text the tokenizer rejects fails only its own request
                results[i] = exc if isinstance(exc, RnnkitError) else RnnkitError(
                    f"could not tokenize the texts ({type(exc).__name__}: {exc})")
        if ok:
            width = max(j.ids.shape[1] for _, j in ok)
            ids = torch.cat([torch.nn.functional.pad(j.ids, (0, width - j.ids.shape[1])) for _, j in ok])
            lengths = torch.cat([j.lengths for _, j in ok])
            probs = predict_proba(self.run.model, ids, lengths, self.limits.max_batch, self.run.device, self.run.amp)
            probs = self.run._mixed(probs, [t for _, j in ok for t in j.texts])  # a --hybrid run's mix
            self.batches += 1
            self.texts += len(lengths)
            start = 0
            for i, job in ok:
                part = probs[start: start + len(job.texts)]
                start += len(job.texts)
                results[i] = [p.to_dict() for p in self.run.predictions(part, job.top_k, job.abstain_below)]
        return results


def create_app(run: Run | str, limits: Optional[Limits] = None, abstain_below: Optional[float] = None):
    """The FastAPI application serving ``run`` (a loaded :class:`Run` or a run folder).

    ``abstain_below``: the default for requests that do not set their own: a text whose top
    probability is below it is labelled ``uncertain``.
    """
    try:
        from contextlib import asynccontextmanager

        from fastapi import FastAPI, HTTPException, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import HTMLResponse, JSONResponse
        from pydantic import BaseModel, ConfigDict, Field, StrictInt
    except ImportError:
        raise RnnkitError("serving needs FastAPI and uvicorn: pip install 'rnnkit[serve]'") from None

    server_abstain = abstain_below  # PredictRequest's own field of that name hides it in the class body
    if not isinstance(run, Run):
        run = Run.load(run)
    check_abstain(abstain_below, run.labels, run.multilabel)
    limits = limits or Limits()
    batcher = MicroBatcher(run, limits)
    started = time.time()

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")  # a misspelled option ("topk") is an error, not a default

        texts: list[str] = Field(..., description=f"1 to {limits.max_texts} texts, each at most "
                                                  f"{limits.max_chars} characters.",
                                 examples=[["Nakamura", "Schmidt"]])
        top_k: StrictInt = Field(1, ge=1, le=1000, description="How many labels to return per text, best first.")
        abstain_below: Optional[float] = Field(
            None, gt=0, le=1, description="Label a text 'uncertain' when its top probability is below this "
                                          f"(default: the server's, {server_abstain})."
        )

    class ExplainRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        texts: list[str] = Field(..., description=f"1 to {limits.max_texts} texts, each at most "
                                                  f"{limits.max_chars} characters.", examples=[["Nakamura"]])
        method: str = Field("ig", description="ig (Integrated Gradients) or occlusion.",
                            pattern="^(" + "|".join(METHODS) + ")$")
        target: Optional[str] = Field(None, description="Explain this label instead of the predicted one.")

    class Label(BaseModel):
        label: str
        probability: float

    class PredictionOut(BaseModel):
        label: str
        probability: float
        top: list[Label]
        labels: Optional[list[Label]] = Field(None, description="Multi-label models only: every label at or above "
                                                                "its tuned threshold, best first.")

    class PredictResponse(BaseModel):
        predictions: list[PredictionOut]

    class TokenScore(BaseModel):
        token: str
        score: float

    class ExplanationOut(BaseModel):
        text: str
        label: str
        probability: float
        tokens: list[TokenScore] = Field(..., description="One score per token the model read: positive pushed "
                                                          "toward `target`, negative away from it.")
        target: str
        target_probability: float
        method: str
        truncated: int = 0
        delta: Optional[float] = None
        steps: Optional[int] = None

    class ExplainResponse(BaseModel):
        explanations: list[ExplanationOut]

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="rnnkit", version=__version__, lifespan=lifespan,
                  description=f"Predictions from the rnnkit run `{run.path.name}` "
                              f"({run.config.cell}, {len(run.labels)} classes).")

    class LimitBody:
        """Refuse a body past ``limits.max_body_bytes`` before the app parses it: by its Content-Length when
        it has one, else (a chunked upload) by counting as it arrives, reading no further than the limit.
        The per-text checks below need the parsed JSON."""

        def __init__(self, app):
            self.app = app

        @staticmethod
        async def refuse(scope, receive, send, size: str) -> None:
            await JSONResponse(status_code=413, content={
                "detail": f"request body{size} is too large (limit {limits.max_body_bytes:,} bytes); send at most "
                          f"{limits.max_texts} texts of at most {limits.max_chars} characters"})(scope, receive, send)

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.app(scope, receive, send)
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None:
                if length.isdigit() and int(length) > limits.max_body_bytes:
                    return await self.refuse(scope, receive, send, f" of {int(length):,} bytes")
                return await self.app(scope, receive, send)
            chunks, received = [], 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                chunks.append(message.get("body", b""))
                received += len(chunks[-1])
                if received > limits.max_body_bytes:
                    return await self.refuse(scope, receive, send, "")
                if not message.get("more_body"):
                    break
            body = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

            async def replay():
                return body.pop() if body else await receive()

            await self.app(scope, replay, send)

    app.add_middleware(LimitBody)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        example = '{"texts": ["..."], "method": "ig"}' if request.url.path == "/explain" \
            else '{"texts": ["..."], "top_k": 3}'
        kind = request.headers.get("content-type") or "none"
        if "json" not in kind:  # curl -d without -H sends a form, which reads as "not a valid dictionary"
            return JSONResponse(status_code=422, content={
                "detail": f"invalid request: the body must be JSON with the header 'content-type: application/json' "
                          f"(got {kind!r}); e.g. curl -H 'content-type: application/json' -d '{example}'"})
        return JSONResponse(status_code=422, content={"detail": f"invalid request: {problems}. Send JSON like {example}"})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return resources.files("rnnkit").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/health")
    async def health():
        """Liveness plus what is being served."""
        test = run.metrics.get("test") or {}
        baseline = (run.metrics.get("baseline") or {}).get("test") or {}
        return {"status": "ok", "run": run.path.name, "dataset": run.config.dataset, "cell": run.config.cell,
                "labels": run.labels, "multilabel": run.multilabel, "test_accuracy": test.get("accuracy"),
                "tokenizer": run.vectorizer.tokenizer.name, "temperature": float(run.model.temperature),
                "abstain_below": abstain_below,
                "baseline_test_accuracy": baseline.get("accuracy"),
                # A hybrid run predicts with the mix (rnnkit.hybrid); its test accuracy, weight None without one.
                "hybrid": ({"weight": run.hybrid.weight,
                            "test_accuracy": (run.metrics.get("hybrid") or {}).get("test", {}).get("accuracy")}
                           if run.hybrid is not None else None),
                "limits": {"max_texts": limits.max_texts, "max_chars": limits.max_chars},
                "uptime_seconds": round(time.time() - started, 1),
                "batches": batcher.batches, "texts": batcher.texts}

    @app.post("/predict", response_model=PredictResponse,
              responses={413: {"description": "Too many texts or a text too long"},
                         422: {"description": "Malformed request or empty text"}})
    async def predict(body: PredictRequest):
        """Labels and probabilities for each text, best first."""
        check_texts(body.texts)
        threshold = abstain_below if body.abstain_below is None else body.abstain_below
        try:
            check_abstain(threshold, run.labels, run.multilabel)
            predictions = await batcher.predict(body.texts, body.top_k, threshold)
        except RnnkitError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"predictions": predictions}

    @app.post("/explain", response_model=ExplainResponse,
              responses={413: {"description": "Too many texts or a text too long"},
                         422: {"description": "Malformed request, empty text or unknown target label"}})
    async def explain(body: ExplainRequest):
        """A score per token of each text (Integrated Gradients or occlusion) for the predicted label."""
        check_texts(body.texts)
        def within_budget():
            # Counted on the explanation thread, so tokenizing a large request never holds up predictions.
            tokens = int(run.vectorizer.encode_texts(body.texts)[1].sum())
            if tokens > limits.max_explain_tokens:
                return tokens, None
            return tokens, run.explain(body.texts, body.method, body.target)

        try:
            tokens, explanations = await batcher.call_aside(within_budget)
        except RnnkitError as exc:
            raise HTTPException(422, str(exc)) from None
        if explanations is None:
            raise HTTPException(413, f"the texts hold {tokens:,} tokens; /explain takes at most "
                                     f"{limits.max_explain_tokens:,} per request: send fewer or shorter texts")
        return {"explanations": [e.to_dict() for e in explanations]}

    def check_texts(texts: list) -> None:
        if not texts:
            raise HTTPException(422, "texts is empty; send at least one text")
        if len(texts) > limits.max_texts:
            raise HTTPException(413, f"{len(texts)} texts in one request; the limit is {limits.max_texts}, "
                                     "split them into several requests")
        for i, text in enumerate(texts):
            if len(text) > limits.max_chars:
                raise HTTPException(413, f"text #{i + 1} has {len(text)} characters; the limit is "
                                         f"{limits.max_chars}")
            if not text.strip():
                raise HTTPException(422, f"text #{i + 1} is empty; send non-empty text")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise HTTPException(422, f"text #{i + 1} is not valid Unicode (a lone surrogate such as "
                                         "\\ud800); send UTF-8 text") from None

    app.state.run, app.state.batcher, app.state.limits = run, batcher, limits
    return app


def serve(run_dir: str, host: str = "127.0.0.1", port: int = 8000, limits: Optional[Limits] = None,
          log_level: str = "info", abstain_below: Optional[float] = None, precision: Optional[str] = None) -> None:
    """Load ``run_dir`` (in ``precision``, see :meth:`rnnkit.Run.load`) and serve it with uvicorn until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise RnnkitError("serving needs FastAPI and uvicorn: pip install 'rnnkit[serve]'") from None
    app = create_app(Run.load(run_dir, precision=precision), limits, abstain_below)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
