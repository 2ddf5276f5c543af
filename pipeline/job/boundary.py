#!/usr/bin/env python3
"""The boundary between a model and the benchmark that scores it.

Standard library only (numpy, pandas and xarray exist only in the plugins' environment and are imported
lazily), copied into every run bundle with the rest of the job package (the wire format is in wire.py). A
model runs in its own sandboxed process (`serve-model`); the benchmark's process, which alone holds the report pipe, gets a `RemoteModel` that
forwards every attribute read and method call over a Unix socket. Nothing that crosses can run code: a
message is a JSON header plus raw buffers (no pickle in either direction), holding only None, bool, int,
float, str, lists, tuples, str-keyed dicts, numpy arrays of plain dtypes, pandas DataFrames (Brain-Score's
StimulusSet: its stimulus files are copied into a hand-off folder the model may read) and xarray DataArrays
with their subclasses (NeuroidAssembly, BehavioralAssembly). A class is re-created on the receiving side only
from modules that side has already imported. Large buffers travel as sealed memfds passed with SCM_RIGHTS,
not through the socket in pieces. Each message has a size cap; anything else is refused with one clear
reason, and the pair fails with it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # run as a file (`python job/boundary.py serve-model ...` in the model's sandbox):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run the job package's copy
    from importlib import import_module

    sys.exit(import_module(os.path.basename(os.path.dirname(os.path.abspath(__file__))) + ".boundary").main())

from .flags import FlagError, read_flags  # noqa: E402
from .wire import (BoundaryError, DEFAULT_CAP, Decoder, EXCEPTIONS, Encoder, HEADER_CAP, MAGIC,  # noqa: E402
                   MAX_FDS, MAX_HANDLES, PREFIX)


class Channel:
    """Length-prefixed messages over a Unix stream socket; memfds ride as SCM_RIGHTS with the prefix."""

    def __init__(self, fd: int, cap: int = DEFAULT_CAP, handoff: Path | None = None, may_import: bool = False,
                 peer: str = "the other side of the model boundary"):
        self.sock = socket.socket(fileno=fd)
        self.peer = peer  # who is at the other end, for the reasons
        self.cap = cap
        self.handoff = handoff
        self.may_import = may_import
        self.copies: dict[str, str] = {}
        self.violation: str | None = None  # the first thing refused while the benchmark used the model

    def send(self, message: dict, **values: Any) -> None:
        """`message` (plain JSON) with `values` encoded; raises BoundaryError before anything is sent."""
        enc = Encoder(self.cap, self.handoff, self.copies)
        try:
            body = dict(message)
            for key, value in values.items():
                body[key] = enc.encode(value)
            body["bufs"] = enc.buffers
            header = json.dumps(body, separators=(",", ":")).encode("utf-8")
            if len(header) > HEADER_CAP:
                raise BoundaryError(f"a message header of {len(header)} bytes is over its cap of {HEADER_CAP}")
            prefix = PREFIX.pack(MAGIC, len(header), len(enc.inline), len(enc.fds))
            if enc.fds:
                socket.send_fds(self.sock, [prefix], enc.fds)
            else:
                self.sock.sendall(prefix)
            self.sock.sendall(header)
            if enc.inline:
                self.sock.sendall(enc.inline)
        except OSError as exc:
            raise BoundaryError(f"{self.peer} is gone ({exc.strerror or exc})") from None
        finally:
            enc.close()

    def _exact(self, n: int, into: bytearray | None = None) -> bytearray:
        out = into if into is not None else bytearray(n)
        view = memoryview(out)
        got = 0
        while got < n:
            k = self.sock.recv_into(view[got:], n - got)
            if k == 0:
                raise BoundaryError(f"{self.peer} closed the channel")
            got += k
        return out

    def recv(self) -> tuple[dict, Decoder]:
        """The next message's JSON header and a decoder for its values."""
        fds: list[int] = []
        try:
            data, fds, flags, _addr = socket.recv_fds(self.sock, PREFIX.size, MAX_FDS)
            if not data:
                raise BoundaryError(f"{self.peer} closed the channel")
            if flags & getattr(socket, "MSG_CTRUNC", 8):
                raise BoundaryError(f"a message with more than {MAX_FDS} descriptors")
            prefix = bytearray(data)
            if len(prefix) < PREFIX.size:
                prefix += self._exact(PREFIX.size - len(prefix))
            magic, header_len, inline_len, n_fds = PREFIX.unpack(bytes(prefix))
            if magic != MAGIC:
                raise BoundaryError(f"{self.peer} sent something that is not a boundary message")
            if n_fds != len(fds):
                raise BoundaryError("a message whose descriptors do not match its prefix")
            if header_len > HEADER_CAP or inline_len > self.cap:
                raise BoundaryError(f"a message over its cap ({header_len} + {inline_len} bytes)")
            header = self._exact(header_len)
            inline = self._exact(inline_len) if inline_len else bytearray()
            try:
                body = json.loads(header.decode("utf-8"))
            except (ValueError, UnicodeDecodeError, RecursionError):
                raise BoundaryError("a message header that is not JSON") from None
            if not isinstance(body, dict) or not isinstance(body.get("bufs"), list):
                raise BoundaryError("a message header that is not an object with its buffers")
            total = inline_len + sum(os.fstat(fd).st_size for fd in fds)
            if total > self.cap:
                raise BoundaryError(f"a message of {total} bytes is over its cap of {self.cap} bytes")
            decoder = Decoder(body["bufs"], inline, fds, self.may_import)
            return body, decoder
        except (OSError, BoundaryError) as exc:
            for fd in fds:
                os.close(fd)
            if isinstance(exc, BoundaryError):
                raise
            raise BoundaryError(f"the model boundary's channel failed ({exc.strerror or exc})") from None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------- benchmark side: the stand-in


class RemoteModel:
    """The model as the benchmark sees it: every attribute read and method call goes to the model's process.
    A value that may not cross, or a broken channel, raises BoundaryError and is remembered (`violation()`),
    so that a benchmark catching every exception still fails its pair with the reason. `clone(model)` (an
    sklearn-shaped benchmark) and `copy.deepcopy` make the copy in the model's process and return its stand-in."""

    def __init__(self, channel: Channel, label: str, handle: int = 0):
        object.__setattr__(self, "_channel", channel)
        object.__setattr__(self, "_label", label)
        object.__setattr__(self, "_handle", handle)

    def _ask(self, message: dict, **values: Any) -> Any:
        channel: Channel = object.__getattribute__(self, "_channel")
        try:
            channel.send({**message, "obj": object.__getattribute__(self, "_handle")}, **values)
            reply, decoder = channel.recv()
            try:
                return self._answer(reply, decoder)
            finally:
                decoder.finish()
        except BoundaryError as exc:
            if channel.violation is None:
                channel.violation = str(exc)
            raise

    def _answer(self, reply: dict, decoder: "Decoder") -> Any:
        if "refused" in reply:
            raise BoundaryError(f"refused at the model boundary: {str(reply['refused'])[:600]}")
        if "raise" in reply:
            info = reply["raise"] if isinstance(reply["raise"], dict) else {}
            kind = EXCEPTIONS.get(str(info.get("type")), RuntimeError)
            text = str(info.get("message", ""))[:2000]
            raise kind(text if kind.__name__ == info.get("type") else f"{str(info.get('type'))[:80]}: {text}")
        if reply.get("self") is True:
            return self
        if reply.get("callable") is True:
            return RemoteMethod(self, str(reply.get("name", "")))
        handle = reply.get("handle")
        if isinstance(handle, int) and not isinstance(handle, bool) and handle > 0:
            return RemoteModel(object.__getattribute__(self, "_channel"), object.__getattribute__(self, "_label"),
                               handle)
        if "value" in reply:
            try:
                return decoder.decode(reply["value"])
            except BoundaryError:
                raise
            except Exception as exc:  # noqa: BLE001 - numpy, pandas or xarray refusing what the model sent
                raise BoundaryError(f"a value the model sent cannot be rebuilt ({type(exc).__name__}: "
                                    f"{str(exc)[:300]})") from None
        raise BoundaryError("the model's process sent a reply of no known kind")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._ask({"op": "get", "name": name})

    def __setattr__(self, name: str, value: Any) -> None:
        self._ask({"op": "set", "name": name}, value=value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._ask({"op": "call", "name": "__call__"}, args=list(args), kwargs=kwargs)

    def __sklearn_clone__(self) -> "RemoteModel":
        return self._ask({"op": "copy", "how": "clone"})

    def __deepcopy__(self, memo: dict) -> "RemoteModel":
        return self._ask({"op": "copy", "how": "deepcopy"})

    def __copy__(self) -> "RemoteModel":
        return self._ask({"op": "copy", "how": "copy"})

    def __repr__(self) -> str:
        return f"<model {object.__getattribute__(self, '_label')} in its own process>"


def violation(model: RemoteModel) -> str | None:
    """The first thing refused at the boundary while the benchmark used `model` (or its copies), if any."""
    return object.__getattribute__(model, "_channel").violation


class RemoteMethod:
    """A bound method of the remote model: calling it sends the arguments and waits for the result."""

    def __init__(self, model: RemoteModel, name: str):
        self.model, self.name = model, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.model._ask({"op": "call", "name": self.name}, args=list(args), kwargs=kwargs)

    def __repr__(self) -> str:
        return f"<method {self.name} of {self.model!r}>"


def print_exc() -> None:
    """The plugin's traceback into the pair's log. `traceback` is imported on a failure only (a pair's two
    processes start for every pair); if even that fails (a MemoryError's aftermath), the report still goes out."""
    try:
        import traceback

        traceback.print_exc()
    except Exception:  # noqa: BLE001 - the failure's report matters more than its traceback
        pass


def own_peak() -> int:
    """This process's peak resident memory and its finished children's, in bytes (Linux reports KiB)."""
    import resource

    return 1024 * max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def model_peak(channel: Channel) -> int | None:
    """The model's process's peak memory as it says (a number checked for range, never trusted further), or
    None when it cannot answer (gone, or the channel broken)."""
    try:
        channel.send({"op": "peak"})
        reply, decoder = channel.recv()
        decoder.finish()
    except (BoundaryError, OSError):
        return None
    value = reply.get("peak") if isinstance(reply, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**50 else None


def pair_peak(channel: Channel) -> int:
    """The pair's peak memory: the benchmark's process's own, or the model's process's as it reports it (behind
    its PID namespace nothing else can see it; a model that under-reports only starts its next run too small)."""
    return max(own_peak(), model_peak(channel) or 0)


def wait_for_model(channel: Channel, event: str) -> None:
    """Wait for the model process to report `event` (imported, ready); its failure becomes a StageError-like
    BoundaryError carrying the stage it failed at."""
    reply, decoder = channel.recv()
    decoder.finish()
    if reply.get("event") == event:
        return
    if reply.get("event") == "failed":
        stage = reply.get("stage") if reply.get("stage") in ("import", "score") else "score"
        raise ModelFailed(stage, str(reply.get("reason") or "the model failed without a reason")[:2000])
    raise BoundaryError(f"the model's process sent {str(reply.get('event'))[:40]!r} instead of {event!r}")


class ModelFailed(Exception):
    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage, self.reason = stage, reason


# ---------------------------------------------------------------- model side


def serve_model(args: dict) -> int:
    """The model's process: import its plugin, build it, answer the benchmark's requests until it hangs up."""
    import importlib

    channel = Channel(args["channel_fd"], cap=args["cap"], may_import=True, peer="the benchmark's process")

    def fail(stage: str, exc: BaseException) -> int:
        print_exc()
        try:
            channel.send({"event": "failed", "stage": stage, "reason": f"{type(exc).__name__}: {str(exc)[:500]}"})
        except BoundaryError:
            pass
        return 1

    try:
        with open(args["manifest"], encoding="utf-8") as f:
            manifest = json.load(f)
        pair = next(p for t in manifest["tasks"] for p in t["pairs"] if p["key"] == args["pair"])
        root = manifest["domain_root"]
        domain = importlib.import_module(root)
        importlib.import_module(f"{root}.models.{pair['model_plugin']}")
        factory = getattr(domain, "model_registry")[pair["model"]]
    except BaseException as exc:  # noqa: BLE001 - a plugin may raise anything, SystemExit included
        return fail("import", exc)
    channel.send({"event": "imported"})
    try:
        model = factory()
    except BaseException as exc:  # noqa: BLE001
        return fail("score", exc)
    channel.send({"event": "ready"})
    objects = {0: model}  # the model and the copies the benchmark asked for (sklearn's clone)
    while True:
        try:
            request, decoder = channel.recv()
        except BoundaryError:
            return 0  # the benchmark's side hung up: scoring is over
        try:
            op, name = request.get("op"), str(request.get("name", ""))
            if op == "bye":
                return 0
            if op == "peak":  # the model's process's peak memory, for the pair's attempt record
                channel.send({"peak": own_peak()})
                continue
            target = objects.get(request.get("obj", 0)) if isinstance(request.get("obj", 0), int) else None
            if target is None:
                raise BoundaryError("a request for an object the model's process does not hold")
            try:
                if op == "copy":
                    if len(objects) >= MAX_HANDLES:
                        raise BoundaryError(f"more than {MAX_HANDLES} copies of the model")
                    objects[len(objects)] = _copy(target, str(request.get("how")))
                    channel.send({"handle": len(objects) - 1})
                    continue
                if op == "get":
                    value = getattr(target, name)
                    if callable(value) and not isinstance(value, type):
                        channel.send({"callable": True, "name": name})
                        continue
                elif op == "set":
                    setattr(target, name, decoder.decode(request.get("value")))
                    value = None
                elif op == "call":
                    call_args = decoder.decode(request.get("args"))
                    call_kwargs = decoder.decode(request.get("kwargs"))
                    if not isinstance(call_args, list) or not isinstance(call_kwargs, dict):
                        raise BoundaryError("a call without a list of arguments and a dict of keywords")
                    method = target if name == "__call__" else getattr(target, name)
                    value = method(*call_args, **call_kwargs)
                else:
                    raise BoundaryError(f"an unknown request {str(op)[:40]!r}")
            except BoundaryError:
                raise
            except BaseException as exc:  # noqa: BLE001 - the model's own error goes back to the benchmark
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                channel.send({"raise": {"type": type(exc).__name__, "message": str(exc)[:2000]}})
                continue
            if value is target:
                channel.send({"self": True})
                continue
            try:
                channel.send({}, value=value)
            except BoundaryError as exc:
                print(f"[score-plugins] refused at the model boundary: {exc}", file=sys.stderr, flush=True)
                channel.send({"refused": f"what the model's {name or op} {'returned' if op == 'call' else 'is'}: "
                                         f"{exc}"})
        except BoundaryError as exc:
            print(f"[score-plugins] model boundary: {exc}", file=sys.stderr, flush=True)
            try:
                channel.send({"refused": str(exc)})
            except BoundaryError:
                return 1
        finally:
            decoder.finish()


def _copy(obj: Any, how: str) -> Any:
    """A copy made in the model's own process: sklearn's clone (unfitted, same parameters), or copy/deepcopy."""
    import copy

    if how == "clone":
        from sklearn.base import clone  # only asked for by a benchmark that itself called sklearn's clone

        return clone(obj)
    return copy.deepcopy(obj) if how == "deepcopy" else copy.copy(obj)


def main(argv: list[str] | None = None) -> int:
    """`serve-model --manifest M --pair KEY --channel-fd N [--cap BYTES]`, as the worker writes it (inside the
    model's sandbox: build the model, answer requests)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] != ["serve-model"]:
            raise FlagError("usage: boundary.py serve-model --manifest M --pair KEY --channel-fd N [--cap BYTES]")
        args = read_flags(argv[1:], {"--manifest": str, "--pair": str, "--channel-fd": int, "--cap": int},
                          {"cap": DEFAULT_CAP})
    except FlagError as exc:
        print(f"boundary: {exc}", file=sys.stderr)
        return 2
    return serve_model(args)

if __name__ == "__main__":
    sys.exit(main())
