"""The wire format across the model boundary (pipeline/job/boundary.py), in a real plugin environment.

brainscore-core (with numpy, pandas, xarray) is installed from the package index into a scratch environment; a
program there sends Brain-Score's objects through a real socket pair and prints what came out, and then plays a
hostile sender: messages with pickles, object arrays, unsealed or foreign descriptors, lying shapes, a wrong
magic, an oversized header. Every one must be refused with a BoundaryError; nothing may run.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROGRAM = r'''
import json, os, pickle, socket, struct, sys, tempfile, warnings
from pathlib import Path
warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[1])
from job import boundary as b
import numpy as np, pandas as pd, xarray as xr
from brainscore_core.supported_data_standards.brainio.assemblies import NeuroidAssembly, BehavioralAssembly
from brainscore_core.supported_data_standards.brainio.stimuli import StimulusSet
from brainscore_core.metrics import Score

out = {}
tmp = Path(tempfile.mkdtemp())
(tmp / "bench").mkdir(); (tmp / "handoff").mkdir()
for i in range(3):
    (tmp / "bench" / f"img{i}.png").write_bytes(b"image %d" % i)

def pair(cap=b.DEFAULT_CAP):
    x, y = socket.socketpair()
    return b.Channel(x.detach(), cap=cap, handoff=tmp / "handoff"), b.Channel(y.detach(), cap=cap, may_import=True)

sender, receiver = pair()

def roundtrip(value):
    import threading
    thread = threading.Thread(target=sender.send, args=({},), kwargs={"value": value})
    thread.start()  # a real sender is another process: the socket's buffer is smaller than the message
    header, decoder = receiver.recv()
    thread.join()
    try:
        return decoder.decode(header["value"])
    finally:
        decoder.finish()

neuroid = NeuroidAssembly(np.random.RandomState(0).rand(300, 500).astype(np.float32), coords={
    "stimulus_id": ("presentation", [f"s{i}" for i in range(300)]), "repetition": ("presentation", [0] * 300),
    "neuroid_id": ("neuroid", np.arange(500)), "region": ("neuroid", ["IT"] * 500)}, dims=["presentation", "neuroid"])
neuroid.attrs["stimulus_set_identifier"] = "test"
behavior = BehavioralAssembly([[0.25, 0.75]], coords={"stimulus_id": ("presentation", ["s0"]),
    "truth": ("presentation", ["a"]), "choice": ("choice", ["a", "b"])}, dims=["presentation", "choice"])
for name, value in (("neuroid", neuroid), ("behavior", behavior), ("score", Score(0.625))):
    back = roundtrip(value)
    xr.testing.assert_identical(back, value)
    out[name] = [type(back).__name__, {k: type(v).__name__ for k, v in back.indexes.items()},
                 list(back["stimulus_id"].values[:2]) if "presentation" in back.dims else None,
                 back.values.flags.writeable]

stimuli = StimulusSet({"stimulus_id": ["s0", "s1", "s2"], "label": [1, 2, 3]})
stimuli.identifier = "test.stimuli"
stimuli.stimulus_paths = {f"s{i}": tmp / "bench" / f"img{i}.png" for i in range(3)}
back = roundtrip(stimuli)
pd.testing.assert_frame_equal(back, stimuli)
out["stimuli"] = [type(back).__name__, back.identifier, [str(p.parent.parent.parent) for p in back.stimulus_paths.values()],
                  back.get_stimulus("s2").read_bytes().decode()]
out["plain"] = repr(roundtrip([None, True, 3, 2.5, "s", (1, 2), {"k": [np.float32(1.5)]}, float("nan")]))

def refused(action):
    try:
        action()
        return "NOT REFUSED"
    except b.BoundaryError as exc:
        return str(exc)

# what an honest sender refuses to send
class Custom: pass
out["send"] = {
    "custom object": refused(lambda: sender.send({}, value=Custom())),
    "pickled blob": refused(lambda: sender.send({}, value=pickle.dumps([1]))),
    "object array": refused(lambda: sender.send({}, value=np.array([Custom()], dtype=object))),
    "over the cap": refused(lambda: pair(cap=1 << 20)[0].send({}, value=np.zeros(300_000))),
}

# what a hostile sender writes by hand: each must be refused by the receiver
def raw(header, inline=b"", fds=()):
    x, y = socket.socketpair()
    data = json.dumps(header).encode()
    prefix = b.PREFIX.pack(b.MAGIC, len(data), len(inline), len(fds))
    if fds:
        socket.send_fds(x, [prefix], list(fds))
    else:
        x.sendall(prefix)
    x.sendall(data + inline)
    x.close()
    def receive():
        channel = b.Channel(y.detach())
        header, decoder = channel.recv()
        try:
            return decoder.decode(header.get("value"))
        finally:
            decoder.finish()
    return receive

def memfd(data, seal=True):
    fd = os.memfd_create("x", os.MFD_ALLOW_SEALING)
    os.write(fd, data)
    if seal:
        import fcntl
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    return fd

pickled = pickle.dumps(np.array([1.0]))
pipe_r, pipe_w = os.pipe()
out["receive"] = {
    "object dtype": refused(raw({"value": {"$": "nd", "dtype": "|O", "shape": [1], "b": 0}, "bufs": [["i", 0, 8]]},
                                b"\0" * 8)),
    "structured dtype with objects": refused(raw({"value": {"$": "nd", "dtype": "i4,O", "shape": [1], "b": 0},
                                                  "bufs": [["i", 0, 16]]}, b"\0" * 16)),
    "pickle as a buffer": refused(raw({"value": {"$": "nd", "dtype": "|O", "shape": [1], "b": 0},
                                       "bufs": [["i", 0, len(pickled)]]}, pickled)),
    "lying shape": refused(raw({"value": {"$": "nd", "dtype": "<f8", "shape": [1000], "b": 0},
                                "bufs": [["i", 0, 8]]}, b"\0" * 8)),
    "buffer past the payload": refused(raw({"value": {"$": "nd", "dtype": "<f8", "shape": [4], "b": 0},
                                            "bufs": [["i", 0, 32]]}, b"\0" * 8)),
    "unsealed memfd": refused(raw({"value": {"$": "nd", "dtype": "<f8", "shape": [1], "b": 0},
                                   "bufs": [["f", 0, 8]]}, fds=[memfd(b"\0" * 8, seal=False)])),
    "a pipe as a buffer": refused(raw({"value": {"$": "nd", "dtype": "<f8", "shape": [1], "b": 0},
                                       "bufs": [["f", 0, 8]]}, fds=[pipe_r])),
    "unknown kind": refused(raw({"value": {"$": "pickle", "v": pickled.hex()}, "bufs": []})),
    "no buffers list": refused(raw({"value": 1})),
}
x, y = socket.socketpair()
x.sendall(b'{"status": "ok", "score_ceiled": 0.99}\n' + b"\0" * 20)
out["receive"]["forged report"] = refused(lambda: b.Channel(y.detach()).recv())
x, y = socket.socketpair()
x.sendall(b.PREFIX.pack(b.MAGIC, b.HEADER_CAP + 1, 0, 0))
out["receive"]["oversized header"] = refused(lambda: b.Channel(y.detach()).recv())
sealed = memfd(np.arange(4, dtype="<f8").tobytes())
value = raw({"value": {"$": "nd", "dtype": "<f8", "shape": [2, 2], "b": 0}, "bufs": [["f", 0, 32]]}, fds=[sealed])()
value[0, 0] = 42.0  # the receiver may change its copy; the sender's memfd is sealed
out["sealed memfd"] = [value.tolist(), np.frombuffer(os.pread(sealed, 32, 0), "<f8").tolist()]
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def plugin_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    from uv import find_uv_bin

    venv = tmp_path_factory.mktemp("boundary-env") / "venv"
    uv = find_uv_bin()
    subprocess.run([uv, "venv", "--quiet", str(venv)], check=True)
    python = str(venv / "bin/python")
    subprocess.run([uv, "pip", "install", "--quiet", "--python", python, "brainscore-core==2.5.0", "numpy<2"],
                   check=True)
    return python


def test_brainscore_objects_cross_exactly_and_hostile_messages_are_refused(plugin_python):
    proc = subprocess.run([plugin_python, "-c", PROGRAM, str(ROOT / "pipeline")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # assemblies come back identical (values, dims, coords, multi-indexes, attrs), of their own class, writable
    assert out["neuroid"] == ["NeuroidAssembly", {"presentation": "MultiIndex", "neuroid": "MultiIndex"},
                              ["s0", "s1"], True]
    assert out["behavior"][:3] == ["BehavioralAssembly", {"presentation": "MultiIndex", "choice": "Index"}, ["s0"]]
    assert out["score"][0] == "Score"
    # a StimulusSet keeps its identifier; its files are copies in the hand-off folder, readable
    kind, identifier, parents, content = out["stimuli"]
    assert (kind, identifier, content) == ("StimulusSet", "test.stimuli", "image 2")
    assert all(p.endswith("/handoff") for p in parents), parents
    assert out["plain"] == "[None, True, 3, 2.5, 's', (1, 2), {'k': [1.5]}, nan]"
    assert "cannot cross the model boundary" in out["send"]["custom object"]
    assert out["send"]["pickled blob"].startswith("builtins.bytes cannot cross the model boundary")
    assert "cannot cross the model boundary" in out["send"]["object array"]
    assert "over its cap of 1048576 bytes" in out["send"]["over the cap"]
    refused = out["receive"]
    assert all(reason != "NOT REFUSED" for reason in refused.values()), refused
    assert "may not cross" in refused["object dtype"] and "may not cross" in refused["pickle as a buffer"]
    assert "does not match its shape" in refused["lying shape"]
    assert "not sealed" in refused["unsealed memfd"] and "not a memfd" in refused["a pipe as a buffer"]
    assert "not a boundary message" in refused["forged report"]
    assert out["sealed memfd"] == [[[42.0, 1.0], [2.0, 3.0]], [0.0, 1.0, 2.0, 3.0]]
