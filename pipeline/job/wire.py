"""The wire format across the model boundary (pipeline/job/boundary.py): what may cross and how. A message is a
JSON header plus raw buffers, never pickle; `Encoder` writes one, `Decoder` re-creates its objects on the other
side, only from modules that side has already imported. Standard library only."""

from __future__ import annotations

import fcntl
import math
import mmap
import os
import struct
import sys
from pathlib import Path, PurePath
from typing import Any

from .defaults import DEFAULT_CAP


PREFIX = struct.Struct("<4sIQI")  # magic, header bytes, inline payload bytes, number of memfds
MAGIC = b"SPB1"
HEADER_CAP = 256 << 20
MEMFD_FROM = 1 << 20  # buffers at least this large travel as a sealed memfd, smaller ones inline
MAX_FDS = 512
MAX_DEPTH = 64
MAX_HANDLES = 100_000  # copies of the model one pair may ask for
ALIGN = 64
DTYPE_KINDS = "biufcmMSU"  # bool, integers, floats, complex, timedelta, datetime, bytes/str arrays
SEALS = ("F_SEAL_SEAL", "F_SEAL_SHRINK", "F_SEAL_GROW", "F_SEAL_WRITE")
PLAIN_ITEMS = {str, int, bool, type(None)}  # an object array of only these is sent as one JSON list
ALLOWED = ("None, bool, int, float, str, path, list, tuple, dict with str keys, numpy arrays of plain dtypes, "
           "pandas DataFrames and xarray DataArrays")
# exceptions a model may raise that the benchmark sees as the same type (hasattr() needs AttributeError)
EXCEPTIONS = {e.__name__: e for e in (AttributeError, KeyError, IndexError, ValueError, TypeError,
                                      NotImplementedError, RuntimeError, LookupError, ArithmeticError,
                                      ZeroDivisionError, AssertionError, MemoryError)}
# pandas dtypes a column is restored to by name (pandas 3's str columns, categories, nullable numbers)
EXTENSION_DTYPES = ("str", "string", "category", "boolean", "object", "Int8", "Int16", "Int32", "Int64", "UInt8",
                    "UInt16", "UInt32", "UInt64", "Float32", "Float64")
STIMULUS_PATH_ATTRS = ("stimulus_paths", "image_paths")  # brainio's StimulusSet (and its older name)


class BoundaryError(Exception):
    """Something that may not cross (or a broken channel): the pair fails with this reason."""


# ---------------------------------------------------------------- encoding


def _np():  # noqa: ANN202 - numpy when the plugin side has imported it, else None
    return sys.modules.get("numpy")


def _describe(obj: object) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def _class_path(cls: type) -> list[list[str]]:
    """The class and its bases as (module, qualname): the receiver picks the first one it knows."""
    return [[c.__module__, c.__qualname__] for c in cls.__mro__ if c is not object][:16]


class Encoder:
    """One message being written: the JSON tree, the inline payload and the memfds of large buffers."""

    def __init__(self, cap: int, handoff: Path | None = None, copies: dict | None = None):
        self.cap = cap
        self.size = 0
        self.inline = bytearray()
        self.fds: list[int] = []
        self.buffers: list[list] = []  # ["i", offset, length] | ["f", fd index, length]
        self.handoff = handoff  # where the benchmark side copies stimulus files the model may read
        self.copies = copies if copies is not None else {}

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def _grow(self, n: int) -> None:
        self.size += n
        if self.size > self.cap:
            raise BoundaryError(f"a message across the model boundary is over its cap of {self.cap} bytes")

    def buffer(self, data: memoryview) -> int:
        n = data.nbytes
        self._grow(n)
        if n >= MEMFD_FROM:
            fd = os.memfd_create("score-boundary", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            self.fds.append(fd)
            view = data.cast("B")
            done = 0
            while done < n:
                done += os.write(fd, view[done:done + (1 << 30)])
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, sum(getattr(fcntl, s) for s in SEALS))
            self.buffers.append(["f", len(self.fds) - 1, n])
        else:
            pad = -len(self.inline) % ALIGN
            self.inline.extend(b"\0" * pad)
            self.buffers.append(["i", len(self.inline), n])
            self.inline.extend(data.cast("B"))
        return len(self.buffers) - 1

    def encode(self, obj: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise BoundaryError(f"a value nested deeper than {MAX_DEPTH} levels cannot cross the model boundary")
        np = _np()
        if obj is None or isinstance(obj, bool):
            return obj
        if np is not None and isinstance(obj, np.generic):
            return {"$": "scalar", "v": self.array(np.asarray(obj), depth)}
        if isinstance(obj, str):
            self._grow(len(obj))
            return str(obj)
        if isinstance(obj, PurePath):
            return {"$": "path", "v": str(obj)}
        if isinstance(obj, int):
            return int(obj)
        if isinstance(obj, float):
            return float(obj) if math.isfinite(obj) else {"$": "float", "v": repr(float(obj))}
        if isinstance(obj, list):
            self._grow(8 * len(obj))
            return [self.encode(x, depth + 1) for x in obj]
        if isinstance(obj, tuple):
            self._grow(8 * len(obj))
            return {"$": "tuple", "v": [self.encode(x, depth + 1) for x in obj]}
        if isinstance(obj, dict):
            bad = [k for k in obj if not isinstance(k, str)]
            if bad:
                raise BoundaryError(f"a dict with a {_describe(bad[0])} key cannot cross the model boundary "
                                    "(keys are str)")
            self._grow(8 * len(obj))
            return {"$": "dict", "v": {str(k): self.encode(v, depth + 1) for k, v in obj.items()}}
        if np is not None and isinstance(obj, np.ndarray):
            return self.array(obj, depth)
        xr, pd = sys.modules.get("xarray"), sys.modules.get("pandas")
        if xr is not None and isinstance(obj, xr.DataArray):
            return self.dataarray(obj, depth)
        if pd is not None and isinstance(obj, pd.DataFrame):
            return self.frame(obj, depth)
        raise BoundaryError(f"{_describe(obj)} cannot cross the model boundary (allowed: {ALLOWED})")

    def array(self, arr: Any, depth: int) -> dict:
        np = _np()
        if arr.dtype == object:
            flat = arr.reshape(-1).tolist()
            self._grow(8 * len(flat))
            if set(map(type, flat)) <= PLAIN_ITEMS:  # the usual coordinate: strings (and ints), sent as they are
                self._grow(sum(len(x) for x in flat if type(x) is str))
                return {"$": "objarray", "shape": list(arr.shape), "v": flat}
            items = [self.encode(x, depth + 1) for x in flat]
            if any(isinstance(x, (list, dict)) for x in items):
                raise BoundaryError("an object array holding containers cannot cross the model boundary")
            return {"$": "objarray", "shape": list(arr.shape), "v": items}
        if arr.dtype.kind not in DTYPE_KINDS or arr.dtype.fields is not None:
            raise BoundaryError(f"a numpy array of dtype {arr.dtype} cannot cross the model boundary")
        data = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
        return {"$": "nd", "dtype": arr.dtype.str, "shape": list(arr.shape), "b": self.buffer(memoryview(data))}

    def index(self, index: Any, depth: int) -> dict:
        pd = sys.modules["pandas"]
        if isinstance(index, pd.RangeIndex):
            return {"range": [index.start, index.stop, index.step], "name": self.encode(index.name, depth + 1)}
        if isinstance(index, pd.MultiIndex):
            return {"levels": [self.encode(n, depth + 1) for n in index.names],
                    "arrays": [self.array(index.get_level_values(i).to_numpy(), depth + 1)
                               for i in range(index.nlevels)]}
        return {"values": self.array(index.to_numpy(), depth + 1), "name": self.encode(index.name, depth + 1)}

    def frame(self, df: Any, depth: int) -> dict:
        meta = {}
        for name in getattr(type(df), "_metadata", ()) or ():
            value = df.__dict__.get(name)
            if name not in df.__dict__ or callable(value):
                continue
            if name in STIMULUS_PATH_ATTRS and isinstance(value, dict):
                value = self.stimulus_paths(value)
            meta[name] = self.encode(value, depth + 1)
        return {"$": "frame", "cls": _class_path(type(df)),
                "columns": [self.encode(c, depth + 1) for c in df.columns],
                "data": [self.array(df.iloc[:, i].to_numpy(), depth + 1) for i in range(df.shape[1])],
                "dtypes": [str(t) for t in df.dtypes], "columns_dtype": str(df.columns.dtype),
                "index": self.index(df.index, depth), "attrs": self.encode(dict(df.attrs), depth + 1), "meta": meta}

    def stimulus_paths(self, paths: dict) -> dict:
        """On the benchmark side: each stimulus file copied once into the hand-off folder the model reads;
        the model sees these copies and nothing else of the benchmark's files."""
        if self.handoff is None:
            return paths
        out: dict = {}
        for key, value in paths.items():
            source = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
            if source is None:
                out[key] = value
                continue
            copy = self.copies.get(source)
            if copy is None:
                if not os.path.isfile(source):
                    raise BoundaryError(f"stimulus file {source[:200]!r} does not exist")
                folder = self.handoff / "stimuli" / str(len(self.copies))
                folder.mkdir(parents=True, exist_ok=True)
                copy = str(folder / os.path.basename(source))
                import shutil  # here, not at the top: it imports bz2, lzma and zlib, in every pair process

                shutil.copyfile(source, copy)
                os.chmod(copy, 0o444)
                self.copies[source] = copy
            out[key] = Path(copy) if isinstance(value, PurePath) else copy
        return out

    def dataarray(self, da: Any, depth: int) -> dict:
        pd = sys.modules.get("pandas")
        multi: dict[str, list[str]] = {}
        for dim in da.dims:
            index = da.indexes.get(dim) if dim in da.indexes else None
            if pd is not None and isinstance(index, pd.MultiIndex):
                multi[dim] = [str(n) for n in index.names]
        coords = []
        for dim, levels in multi.items():
            index = da.indexes[dim]
            for i, level in enumerate(levels):
                coords.append({"name": level, "dims": [dim],
                               "v": self.array(index.get_level_values(i).to_numpy(), depth + 1)})
        skip = set(multi) | {level for levels in multi.values() for level in levels}
        for name, coord in da.coords.items():
            if name not in skip:
                coords.append({"name": self.encode(name, depth + 1), "dims": [str(d) for d in coord.dims],
                               "v": self.array(coord.values, depth + 1)})
        return {"$": "xr", "cls": _class_path(type(da)), "dims": [str(d) for d in da.dims],
                "v": self.array(da.values, depth + 1), "coords": coords, "multi": multi,
                "name": self.encode(da.name, depth + 1), "attrs": self.encode(dict(da.attrs), depth + 1)}


# ---------------------------------------------------------------- decoding


def _find_class(path: object, base: type, may_import: bool) -> type:
    """The first class of the sender's list that this side knows and that derives from `base`. The benchmark
    side looks only in modules it has already imported; the model side may import (it is the model's own)."""
    if not isinstance(path, list):
        raise BoundaryError("a class path that is not a list")
    for item in path:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(p, str) for p in item)):
            raise BoundaryError("a malformed class path")
        module_name, qualname = item
        module = sys.modules.get(module_name)
        if module is None and may_import:
            try:
                import importlib

                module = importlib.import_module(module_name)
            except Exception:  # noqa: BLE001 - a class we cannot find falls back to its base
                module = None
        if module is None:
            continue
        found: object = module
        for part in qualname.split("."):
            found = getattr(found, part, None) if not part.startswith("<") else None
        if isinstance(found, type) and issubclass(found, base):
            return found
    return base


class Decoder:
    """One message being read: its buffers (inline payload and mmapped sealed memfds)."""

    def __init__(self, buffers: list, inline: bytearray, fds: list[int], may_import: bool):
        self.buffers, self.inline, self.fds, self.may_import = buffers, inline, fds, may_import
        self.maps: dict[int, mmap.mmap] = {}

    def finish(self) -> None:
        """Close the message's descriptors; arrays already decoded keep their (private) mappings."""
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []

    def buffer(self, index: object) -> memoryview:
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(self.buffers):
            raise BoundaryError("a reference to a buffer that is not in the message")
        entry = self.buffers[index]
        if not (isinstance(entry, list) and len(entry) == 3 and entry[0] in ("i", "f")
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in entry[1:])):
            raise BoundaryError("a malformed buffer entry")
        kind, where, length = entry
        if kind == "i":
            if where + length > len(self.inline):
                raise BoundaryError("a buffer beyond the message's payload")
            return memoryview(self.inline)[where:where + length]
        if where >= len(self.fds):
            raise BoundaryError("a buffer whose memfd was not sent")
        if where not in self.maps:
            fd = self.fds[where]
            try:
                seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            except OSError:
                raise BoundaryError("a buffer descriptor that is not a memfd") from None
            wanted = sum(getattr(fcntl, s) for s in SEALS[1:])
            if seals & wanted != wanted or os.fstat(fd).st_size != length:
                raise BoundaryError("a buffer memfd that is not sealed against writes, or of the wrong size")
            # a private copy-on-write mapping: the receiver may change its array, the sender cannot
            self.maps[where] = mmap.mmap(fd, length, flags=mmap.MAP_PRIVATE,
                                         prot=mmap.PROT_READ | mmap.PROT_WRITE) if length else None  # type: ignore
        mapped = self.maps[where]
        return memoryview(mapped) if mapped is not None else memoryview(bytearray())

    def decode(self, node: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH + 4:
            raise BoundaryError("a value nested too deeply")
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.decode(x, depth + 1) for x in node]
        if not isinstance(node, dict):
            raise BoundaryError("a malformed value")
        tag = node.get("$")
        if tag == "tuple":
            return tuple(self.decode(x, depth + 1) for x in self._list(node.get("v")))
        if tag == "dict":
            items = node.get("v")
            if not isinstance(items, dict):
                raise BoundaryError("a malformed dict")
            return {k: self.decode(v, depth + 1) for k, v in items.items()}
        if tag == "path":
            if not isinstance(node.get("v"), str):
                raise BoundaryError("a malformed path")
            return Path(node["v"])
        if tag == "float":
            if node.get("v") not in ("nan", "inf", "-inf"):
                raise BoundaryError("a malformed float")
            return float(node["v"])
        if tag in ("nd", "objarray"):
            return self.array(node, depth)
        if tag == "scalar":
            return self.array(node.get("v"), depth)[()]
        if tag == "frame":
            return self.frame(node, depth)
        if tag == "xr":
            return self.dataarray(node, depth)
        raise BoundaryError(f"a value of unknown kind {str(tag)[:40]!r}")

    @staticmethod
    def _list(value: object) -> list:
        if not isinstance(value, list):
            raise BoundaryError("a malformed list")
        return value

    def array(self, node: object, depth: int) -> Any:
        import numpy as np

        if not isinstance(node, dict) or node.get("$") not in ("nd", "objarray"):
            raise BoundaryError("an array that is not an array")
        shape = self._list(node.get("shape"))
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape) or len(shape) > 32:
            raise BoundaryError("a malformed array shape")
        count = math.prod(shape)
        if node["$"] == "objarray":
            items = self._list(node.get("v"))
            if len(items) != count:
                raise BoundaryError("a malformed object array")
            if not set(map(type, items)) <= PLAIN_ITEMS:
                items = [self.decode(x, depth + 1) for x in items]
                if any(isinstance(x, (list, dict, tuple)) for x in items):
                    raise BoundaryError("a malformed object array")
            out = np.empty(count, dtype=object)
            out[:] = items
            return out.reshape(shape)
        try:
            dtype = np.dtype(str(node.get("dtype")))
        except (TypeError, ValueError):
            raise BoundaryError(f"an array of unknown dtype {str(node.get('dtype'))[:40]!r}") from None
        if dtype.hasobject or dtype.kind not in DTYPE_KINDS or dtype.fields is not None:
            raise BoundaryError(f"an array of dtype {dtype} may not cross the model boundary")
        data = self.buffer(node.get("b"))
        if data.nbytes != count * dtype.itemsize:
            raise BoundaryError("an array whose buffer does not match its shape and dtype")
        return np.frombuffer(data, dtype=dtype, count=count).reshape(shape)

    def index(self, node: object, depth: int) -> Any:
        import pandas as pd

        if not isinstance(node, dict):
            raise BoundaryError("a malformed index")
        if "range" in node:
            start, stop, step = self._list(node["range"])
            if not all(isinstance(x, int) for x in (start, stop, step)) or step == 0:
                raise BoundaryError("a malformed range index")
            return pd.RangeIndex(start, stop, step, name=self.decode(node.get("name"), depth + 1))
        if "levels" in node:
            names = [self.decode(n, depth + 1) for n in self._list(node["levels"])]
            return pd.MultiIndex.from_arrays([self.array(a, depth + 1) for a in self._list(node.get("arrays"))],
                                             names=names)
        return pd.Index(self.array(node.get("values"), depth + 1), name=self.decode(node.get("name"), depth + 1))

    def frame(self, node: dict, depth: int) -> Any:
        import pandas as pd

        cls = _find_class(node.get("cls"), pd.DataFrame, self.may_import)
        columns = [self.decode(c, depth + 1) for c in self._list(node.get("columns"))]
        data = [self.array(a, depth + 1) for a in self._list(node.get("data"))]
        if len(columns) != len(data):
            raise BoundaryError("a frame whose columns and data differ in number")
        index = self.index(node.get("index"), depth + 1)
        frame = pd.DataFrame({i: column for i, column in enumerate(data)}, index=index)
        dtypes = node.get("dtypes") if isinstance(node.get("dtypes"), list) else []
        for i, name in enumerate(dtypes[:len(data)]):
            if str(frame.dtypes.iloc[i]) != name and name in EXTENSION_DTYPES:
                frame[i] = frame[i].astype(name)
        if columns:
            kind = node.get("columns_dtype")
            frame.columns = pd.Index(columns, dtype=kind if kind in EXTENSION_DTYPES else None)
        out = cls(frame) if cls is not pd.DataFrame else frame
        attrs = self.decode(node.get("attrs"), depth + 1)
        if isinstance(attrs, dict):
            out.attrs.update(attrs)
        meta = node.get("meta")
        allowed = set(getattr(cls, "_metadata", ()) or ())
        for name, value in (meta.items() if isinstance(meta, dict) else ()):
            if name in allowed and not callable(getattr(cls, name, None)):  # data, never a method's name
                object.__setattr__(out, name, self.decode(value, depth + 1))
        return out

    def dataarray(self, node: dict, depth: int) -> Any:
        import xarray as xr

        cls = _find_class(node.get("cls"), xr.DataArray, self.may_import)
        dims = [str(d) for d in self._list(node.get("dims"))]
        values = self.array(node.get("v"), depth + 1)
        coords: dict = {}
        for coord in self._list(node.get("coords")):
            if not isinstance(coord, dict) or not isinstance(coord.get("name"), str):
                raise BoundaryError("a malformed coordinate")
            coords[coord["name"]] = ([str(d) for d in self._list(coord.get("dims"))],
                                     self.array(coord.get("v"), depth + 1))
        multi = node.get("multi") or {}
        if not isinstance(multi, dict):
            raise BoundaryError("a malformed multi-index")
        attrs = self.decode(node.get("attrs"), depth + 1)
        name = self.decode(node.get("name"), depth + 1)
        try:
            import pandas as pd

            # a multi-index is rebuilt as one (also with a single level, as brainio's gather_indexes makes them)
            indexes = {}
            for dim, levels in multi.items():
                if not isinstance(levels, list) or not all(isinstance(v, str) and v in coords for v in levels):
                    raise BoundaryError("a malformed multi-index")
                indexes[dim] = pd.MultiIndex.from_arrays([coords.pop(level)[1] for level in levels], names=levels)
            new_style = hasattr(getattr(xr, "Coordinates", None), "from_pandas_multiindex")
            if not new_style:
                coords.update(indexes)
            plain = xr.DataArray(values, coords=coords, dims=dims, name=name,
                                 attrs=attrs if isinstance(attrs, dict) else None)
            for dim, index in indexes.items() if new_style else ():
                plain = plain.assign_coords(xr.Coordinates.from_pandas_multiindex(index, dim))
            if cls is xr.DataArray:
                return plain
            try:  # xarray's own way to re-type an array (DataArray._replace): no second gathering of indexes
                return cls(plain.variable, coords=plain._coords, name=plain.name, indexes=plain._indexes,
                           fastpath=True)
            except (AttributeError, TypeError, AssertionError):
                return cls(plain)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise BoundaryError(f"an assembly that cannot be rebuilt: {str(exc)[:200]}") from None


# ---------------------------------------------------------------- the channel
