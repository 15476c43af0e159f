"""Tenebra: compute on data you never show.

Keys, encryption and decryption run locally (in Rust, with the GIL released); the server
only ever sees ciphertexts and evaluation keys.

    import tenebra

    @tenebra.circuit(xs=tenebra.enc_u8[3])
    def stats3(xs):
        wide = [x.cast(tenebra.u16) for x in xs]
        return {"s": tenebra.sum(wide), "m": tenebra.max(xs)}

    keys = tenebra.Keys.generate("keys")
    client = tenebra.Client("http://127.0.0.1:8080", api_key)
    client.upload_key_set(keys)
    client.deploy(stats3)
    task = client.submit(keys.encrypt(stats3, {"xs": [200, 255, 7]}))
    client.wait(task["id"])
    keys.decrypt(stats3, client.result(task["id"]))   # {"m": 255, "s": 462}
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable, Dict, Optional, Sequence, Union

from . import _native
from ._native import ApiError, Circuit, Tracer

__all__ = [
    "ApiError", "AsyncClient", "Circuit", "Client", "Keys", "Tracer", "Type", "argmax",
    "builtin_circuit", "circuit", "dot", "max", "min", "simulate", "sum", "where",
    "enc_bool", "enc_u8", "enc_u16", "enc_u32", "enc_u64", "enc_i8", "enc_i16", "enc_i32",
    "enc_i64", "bool_", "u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64",
]


class Type(str):
    """An encrypted scalar type (its name, e.g. ``"u16"``); index it for a vector input:
    ``enc_u16[100]``. A name that is no type (``Type("u7x")``) raises ``ValueError``."""

    def __new__(cls, name: str) -> "Type":
        if not isinstance(name, str):
            raise TypeError(f"a type name is a str, not {name!r}")
        _native.check_type(name)
        return super().__new__(cls, name)

    def __getitem__(self, length: int) -> "VecType":  # type: ignore[override]
        if not isinstance(length, int) or length < 1:
            raise TypeError(f"a vector of {self} needs a positive int length, not {length!r}")
        return VecType(self, length)


class VecType:
    """An encrypted vector input type: ``enc_u16[100]``."""

    def __init__(self, elem: Type, length: int):
        self.elem = elem
        self.length = length

    def __repr__(self) -> str:
        return f"{self.elem}[{self.length}]"


bool_ = enc_bool = Type("bool")
u8 = enc_u8 = Type("u8")
u16 = enc_u16 = Type("u16")
u32 = enc_u32 = Type("u32")
u64 = enc_u64 = Type("u64")
i8 = enc_i8 = Type("i8")
i16 = enc_i16 = Type("i16")
i32 = enc_i32 = Type("i32")
i64 = enc_i64 = Type("i64")

Value = Union[Tracer, int]


def circuit(_fn: Optional[Callable[..., Any]] = None, *, name: Optional[str] = None,
            **inputs: Union[Type, VecType]) -> Any:
    """Traces a Python function into a circuit.

    Declare each input's encrypted type as a keyword (``xs=tenebra.enc_u8[3]``, in the order
    the inputs should have); the function runs once on tracers and returns a dict of outputs
    (a tracer, or a list of tracers for a vector output). Python loops unroll; use
    ``tenebra.where`` for encrypted conditions. The result is a ``Circuit`` with the same
    canonical JSON and id the Rust builder makes for the same computation.
    """

    def trace(fn: Callable[..., Any]) -> Circuit:
        b = _native.Builder(name or fn.__name__)
        args: Dict[str, Any] = {}
        for arg, ty in inputs.items():
            if isinstance(ty, VecType):
                args[arg] = b.input_vec(arg, ty.elem, ty.length)
            elif isinstance(ty, Type):
                args[arg] = b.input(arg, ty)
            else:
                raise TypeError(f"input `{arg}`: expected an encrypted type such as "
                                f"tenebra.enc_u8 or tenebra.enc_u8[10], got {ty!r}")
        out = fn(**args)
        if not isinstance(out, dict) or not out:
            raise TypeError("a traced function returns a non-empty dict {output name: value}")
        for key, v in out.items():
            if isinstance(v, (list, tuple)):
                b.output_vec(key, list(v))
            elif isinstance(v, Tracer):
                b.output(key, v)
            else:
                raise TypeError(f"output `{key}` is a {type(v).__name__}, not an encrypted "
                                "value (outputs must depend on the inputs)")
        return b.build()

    if _fn is not None:
        return trace(_fn)
    return trace


def sum(values: Sequence[Tracer]) -> Tracer:  # noqa: A001 - mirrors the Rust builder
    """The sum of encrypted values, in their type (wrapping); one node."""
    return _native.sum(list(values))


def min(a: Union[Tracer, Sequence[Tracer]], b: Optional[Value] = None) -> Tracer:  # noqa: A001
    """``min(a, b)`` of two values, or ``min(values)`` of a list."""
    if b is None:
        return _native.min_of(list(a))  # type: ignore[arg-type]
    return a.min(b)  # type: ignore[union-attr]


def max(a: Union[Tracer, Sequence[Tracer]], b: Optional[Value] = None) -> Tracer:  # noqa: A001
    """``max(a, b)`` of two values, or ``max(values)`` of a list."""
    if b is None:
        return _native.max_of(list(a))  # type: ignore[arg-type]
    return a.max(b)  # type: ignore[union-attr]


def where(cond: Tracer, a: Value, b: Value) -> Tracer:
    """``a`` where the encrypted bool ``cond`` is true, else ``b`` (both are computed)."""
    return cond.select(a, b)


def argmax(values: Sequence[Tracer], ty: Type) -> Tracer:
    """Index (as type ``ty``) of the first largest value."""
    return _native.argmax(list(values), ty)


def dot(values: Sequence[Tracer], weights: Sequence[int]) -> Tracer:
    """Dot product of encrypted values with plain integer weights."""
    return _native.dot(list(values), [int(w) for w in weights])


def _plain(obj: Any) -> Any:
    """NumPy arrays and scalars, tuples and dicts as plain Python lists, ints and dicts."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def simulate(function: Union[str, Circuit], inputs: Dict[str, Any]) -> Dict[str, Any]:
    """The plaintext result of a built-in (by name) or a circuit: what the encrypted run
    decrypts to."""
    if isinstance(function, Circuit):
        return function.simulate(_plain(inputs))
    return _native.simulate_builtin(function, _plain(inputs))


def builtin_circuit(function: str, size: int) -> Circuit:
    """A built-in's circuit at an input size."""
    return _native.builtin_circuit(function, size)


class Keys:
    """A key set in a directory. The client key never leaves it; ``Client.upload_key_set``
    sends the evaluation and public keys only."""

    def __init__(self, native: "_native.Keys"):
        self._native = native

    @staticmethod
    def generate(dir: Union[str, "os.PathLike[str]"]) -> "Keys":
        """Generates a new key set into ``dir`` (a few seconds; TFHE, 128-bit security)."""
        return Keys(_native.Keys.generate(os.fspath(dir)))

    @staticmethod
    def load(dir: Union[str, "os.PathLike[str]"]) -> "Keys":
        """Loads the key set in ``dir``."""
        return Keys(_native.Keys.load(os.fspath(dir)))

    @property
    def id(self) -> str:
        """The key set's id (fingerprint), as the server knows it."""
        return self._native.id

    @property
    def dir(self) -> str:
        return os.fspath(self._native.dir)

    def encrypt(self, function: Union[str, Circuit], inputs: Dict[str, Any]) -> bytes:
        """Encrypts ``inputs`` (ints, lists, NumPy arrays) for a built-in (by name) or a
        circuit; raises ValueError for a value out of its type's range or a wrong shape."""
        return self._native.encrypt(function, _plain(inputs))

    def decrypt(self, function: Union[str, Circuit], result: bytes) -> Dict[str, Any]:
        """Decrypts a result of a built-in (by name) or a circuit."""
        return self._native.decrypt(function, bytes(result))

    def __repr__(self) -> str:
        return repr(self._native)


class Client:
    """A blocking client for one server and one API key. Errors from the server raise
    ``ApiError(status, code, message)``; network calls release the GIL."""

    def __init__(self, url: str, api_key: str):
        self._native = _native.Client(url, api_key)

    def upload_key_set(self, keys: Keys, ttl_secs: Optional[int] = None,
                       progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, Any]:
        """Uploads the evaluation and public keys; ``progress(sent, total)`` as bytes go."""
        return self._native.upload_key_set(keys._native, ttl_secs, progress)

    def key_sets(self) -> list:
        return self._native.key_sets()

    def deploy(self, circuit: Circuit) -> Dict[str, Any]:
        """Deploys a circuit as the next version of its name (the same circuit again is the
        same version)."""
        return self._native.deploy(circuit)

    def functions(self) -> list:
        return self._native.functions()

    def function_circuit(self, name: str) -> Circuit:
        """The latest deployed version of ``name``, to encrypt for."""
        return self._native.function_circuit(name)

    def submit(self, encrypted_input: bytes, idempotency_key: Optional[str] = None) -> Dict[str, Any]:
        return self._native.submit(bytes(encrypted_input), idempotency_key)

    def task(self, task_id: str) -> Dict[str, Any]:
        return self._native.task(task_id)

    def wait(self, task_id: str) -> Dict[str, Any]:
        """Blocks until the task is final; returns it."""
        return self._native.wait(task_id)

    def result(self, task_id: str) -> bytes:
        return self._native.result(task_id)

    def cancel(self, task_id: str) -> Dict[str, Any]:
        return self._native.cancel(task_id)

    def tasks(self, status: Optional[str] = None, limit: int = 50,
              after: Optional[str] = None) -> Dict[str, Any]:
        return self._native.tasks(status, limit, after)

    def usage(self, **filters: Any) -> Dict[str, Any]:
        """Usage records and totals: from, to (Unix ms), function, api_key_id, limit, after."""
        return self._native.usage(**filters)

    def quote(self, function: str, size: int = 0) -> Dict[str, Any]:
        return self._native.quote(function, size)

    def limits(self) -> Dict[str, Any]:
        return self._native.limits()

    def run(self, keys: Keys, function: Union[str, Circuit], inputs: Dict[str, Any]) -> Dict[str, Any]:
        """Runs ``function`` on ``inputs`` encrypted under ``keys``: encrypts, uploads the
        key set if the server lacks it, submits, waits, downloads and decrypts (the Rust
        SDK's ``Client::run``, so every kind of function works: a built-in of either scheme,
        a model split ``model:<owner>/<name>/<version>/<layers>`` with ``{"x": [...]}``, or a
        deployed function, by name or as the ``Circuit`` deployed under its name, whose
        latest version runs). A task that fails raises ``ApiError`` with status 409 and the
        task's error code."""
        name = function.name if isinstance(function, Circuit) else function
        return self._native.run_function(keys._native, name, _plain(inputs))


class AsyncClient:
    """``Client`` for asyncio: each call runs in a worker thread (the GIL is released while
    it waits on the network)."""

    def __init__(self, url: str, api_key: str):
        self._sync = Client(url, api_key)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._sync, name)
        if not callable(method):
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(method, *args, **kwargs)

        return call
