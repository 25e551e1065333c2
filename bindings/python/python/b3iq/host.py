"""LocalNode and Runtime: the embedded host and the in-process model runtime.

Both have a sync API and an async one over the same Rust calls: the ``a``-prefixed methods
(``LocalNode.astart``, ``node.aclaim``, ``async for piece in runtime.agenerate(...)``) run the
blocking Rust call in a worker thread (the Rust side releases the GIL), so they never block the
event loop.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from . import _b3iq

Message = Dict[str, str]


def _native(name: str) -> Any:
    """The native class `name`, or a clear error when the module was built without `host`."""
    try:
        return getattr(_b3iq, name)
    except AttributeError:
        from .errors import B3iqStateError

        raise B3iqStateError(
            f"this b3iq build has no {name}: it was built without the `host` feature "
            "(maturin develop --no-default-features); rebuild with default features"
        ) from None


class LocalNode:
    """An embedded B3IQ host serving the OpenAI-compatible API on ``base_url + "/v1"``.

    >>> with LocalNode.start(home, model=path) as node:   # doctest: +SKIP
    ...     node.claim("owner", "a long password")
    ...     key_id, secret = node.create_key("my-app")
    """

    def __init__(self, native: "_b3iq.LocalNode") -> None:
        self._native = native

    # -- lifecycle ------------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        home: Union[str, "os.PathLike[str]"],
        model: Optional[str] = None,
        listen: str = "127.0.0.1:0",
    ) -> "LocalNode":
        """Starts a host with its home dir at ``home``; ``model`` is a GGUF path or a model
        profile id (``None``: no model); ``listen`` defaults to a free loopback port."""
        return cls(_native("LocalNode").start(os.fspath(home), model, listen))

    @classmethod
    async def astart(
        cls,
        home: Union[str, "os.PathLike[str]"],
        model: Optional[str] = None,
        listen: str = "127.0.0.1:0",
    ) -> "LocalNode":
        """Async :meth:`start`."""
        return await asyncio.to_thread(cls.start, home, model, listen)

    def shutdown(self) -> None:
        """Stops the server after in-flight requests finish. Idempotent."""
        self._native.shutdown()

    async def ashutdown(self) -> None:
        """Async :meth:`shutdown`."""
        await asyncio.to_thread(self._native.shutdown)

    def __enter__(self) -> "LocalNode":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    async def __aenter__(self) -> "LocalNode":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.ashutdown()

    # -- facts ----------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``; the OpenAI-compatible API is under ``/v1``."""
        return self._native.base_url

    @property
    def openai_base_url(self) -> str:
        """``base_url + "/v1"``: pass it to ``openai.OpenAI(base_url=...)``."""
        return self._native.base_url + "/v1"

    @property
    def port(self) -> int:
        return self._native.port

    @property
    def node_id(self) -> str:
        return self._native.node_id

    @property
    def setup_url(self) -> Optional[str]:
        """The one-time setup URL while unclaimed (it contains a secret token)."""
        return self._native.setup_url

    @property
    def running(self) -> bool:
        return self._native.running

    # -- owner actions --------------------------------------------------------------------
    def claim(self, username: str, password: str) -> None:
        """Claims the node with its pending setup token (creates the owner account)."""
        self._native.claim(username, password)

    async def aclaim(self, username: str, password: str) -> None:
        await asyncio.to_thread(self._native.claim, username, password)

    def create_key(self, name: str, scopes: Sequence[str] = ("inference",)) -> Tuple[str, str]:
        """Creates a ``b3iq_local_`` key; returns ``(key_id, secret)``. Shown once."""
        return self._native.create_key(name, list(scopes))

    async def acreate_key(self, name: str, scopes: Sequence[str] = ("inference",)) -> Tuple[str, str]:
        return await asyncio.to_thread(self._native.create_key, name, list(scopes))

    def receipts(self) -> List[Dict[str, Any]]:
        """Every signed usage receipt, oldest first."""
        return self._native.receipts()

    async def areceipts(self) -> List[Dict[str, Any]]:
        return await asyncio.to_thread(self._native.receipts)

    def __repr__(self) -> str:
        return repr(self._native)


_END = object()


def _next_or_end(native: Any) -> Any:
    try:
        return native.__next__()
    except StopIteration:
        return _END


class TokenStream:
    """A running generation: iterate it (``for`` or ``async for``) to get text pieces.

    ``close()``, leaving a ``with`` block, or dropping the stream cancels the generation.
    ``result`` holds ``{"finish_reason", "usage", "timings"}`` after the last piece.
    """

    def __init__(self, native: "_b3iq.TokenStream") -> None:
        self._native = native

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._native)

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        # StopIteration cannot cross a Future (asyncio would never resolve it), so the worker
        # thread turns the end of the stream into a sentinel.
        piece = await asyncio.to_thread(_next_or_end, self._native)
        if piece is _END:
            raise StopAsyncIteration
        return piece

    def close(self) -> None:
        self._native.close()

    @property
    def closed(self) -> bool:
        return self._native.closed

    @property
    def result(self) -> Optional[Dict[str, Any]]:
        return self._native.result()

    def text(self) -> str:
        """Reads the rest of the stream and returns it joined."""
        return "".join(self)

    def __enter__(self) -> "TokenStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "TokenStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()


class Runtime:
    """The in-process llama.cpp runtime: load a GGUF and generate with streaming."""

    def __init__(self, threads: Optional[int] = None) -> None:
        self._native = _native("Runtime")(threads)

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"], model_id: Optional[str] = None, **kwargs: Any) -> "Runtime":
        """A runtime with the GGUF at ``path`` loaded (see :meth:`load_model`)."""
        rt = cls(kwargs.pop("threads", None))
        rt.load_model(path, model_id=model_id, **kwargs)
        return rt

    def load_model(
        self,
        path: Union[str, "os.PathLike[str]"],
        model_id: Optional[str] = None,
        expected_sha256: Optional[str] = None,
        context_length: Optional[int] = None,
    ) -> Dict[str, Any]:
        """Loads a GGUF; returns its description (``id``, ``sha256``, ...)."""
        return self._native.load_model(os.fspath(path), model_id, expected_sha256, context_length)

    def models(self) -> List[Dict[str, Any]]:
        return self._native.models()

    def _request(
        self,
        prompt: Union[str, Sequence[Message]],
        model: Optional[str],
        max_tokens: Optional[int],
        temperature: Optional[float],
        seed: Optional[int],
        stop: Sequence[str],
    ) -> Dict[str, Any]:
        if model is None:
            loaded = self.models()
            if not loaded:
                raise _b3iq_state_error("no model is loaded; call load_model(path) first")
            model = loaded[0]["id"]
        if isinstance(prompt, str):
            body: Dict[str, Any] = {"kind": "text", "value": prompt}
        else:
            body = {"kind": "chat", "value": [dict(m) for m in prompt]}
        sampling: Dict[str, Any] = {}
        if temperature is not None:
            sampling["temperature"] = temperature
        if seed is not None:
            sampling["seed"] = seed
        return {"model": model, "prompt": body, "sampling": sampling, "max_tokens": max_tokens, "stop": list(stop)}

    def generate(
        self,
        prompt: Union[str, Sequence[Message]],
        *,
        model: Optional[str] = None,
        max_tokens: Optional[int] = 256,
        temperature: Optional[float] = None,
        seed: Optional[int] = None,
        stop: Sequence[str] = (),
    ) -> TokenStream:
        """Starts a generation. ``prompt`` is raw text or chat messages
        (``[{"role": "user", "content": "..."}]``). ``temperature=0`` is greedy."""
        return TokenStream(self._native.generate(self._request(prompt, model, max_tokens, temperature, seed, stop)))

    async def agenerate(
        self,
        prompt: Union[str, Sequence[Message]],
        *,
        model: Optional[str] = None,
        max_tokens: Optional[int] = 256,
        temperature: Optional[float] = None,
        seed: Optional[int] = None,
        stop: Sequence[str] = (),
    ) -> TokenStream:
        """Async :meth:`generate`; iterate the result with ``async for``."""
        request = self._request(prompt, model, max_tokens, temperature, seed, stop)
        return TokenStream(await asyncio.to_thread(self._native.generate, request))


def _b3iq_state_error(message: str) -> Exception:
    from .errors import B3iqStateError

    return B3iqStateError(message)
