"""What the model boundary costs: a vision-shaped `look_at` returning a 3,200 x 4,096 float32 NeuroidAssembly
(52 MB, a MultiIndex on each dimension, as model-tools builds it) called in the benchmark's own process, and the
same call through pipeline/job/boundary.py to a model in its own process, in one run, alternating.

`look_at` computes its features (a fixed 256 -> 4,096 projection of 3,200 stimuli) and builds the assembly each
call, as a model does; the benchmark reads the values back (a mean). The boundary's cost is the StimulusSet going
over (16 files copied into the hand-off folder once), the assembly's encoding (values in a sealed memfd, coords
inline), and its re-creation as a NeuroidAssembly on the benchmark side. Without bubblewrap: the sandbox's cost
is one start per pair, not per call. ratio = boundary seconds / in-process seconds (target <= 1.2).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from _common import ROOT, last_line

CORE = "brainscore-core==2.5.0"

MODEL = '''
import numpy as np
from brainscore_core.supported_data_standards.brainio.assemblies import NeuroidAssembly
from bench_dom import model_registry


class FeatureModel:
    identifier = 'features-4096'

    def __init__(self):
        self.weights = np.random.RandomState(0).standard_normal((256, 4096)).astype(np.float32)

    def look_at(self, stimuli, number_of_trials=1):
        ids = list(stimuli['stimulus_id'])
        pixels = np.stack([np.random.RandomState(i).standard_normal(256).astype(np.float32) for i in range(len(ids))])
        features = pixels @ self.weights
        return NeuroidAssembly(features, coords={
            'stimulus_id': ('presentation', ids), 'object_name': ('presentation', list(stimuli['object_name'])),
            'neuroid_id': ('neuroid', [f'IT.{i}' for i in range(features.shape[1])]),
            'neuroid_num': ('neuroid', np.arange(features.shape[1])), 'layer': ('neuroid', ['IT'] * features.shape[1])},
            dims=['presentation', 'neuroid'])


    def look_at_mean(self, stimuli, number_of_trials=1):
        """The same work, only a number back: what the call costs apart from the assembly's way back."""
        import time
        start = time.perf_counter()
        mean = float(self.look_at(stimuli, number_of_trials).values.mean())
        return [mean, time.perf_counter() - start]


model_registry['features-4096'] = FeatureModel
'''

DRIVER = r'''
import json, os, socket, subprocess, sys, time
from pathlib import Path
import numpy as np
from brainscore_core.supported_data_standards.brainio.stimuli import StimulusSet

here = Path(sys.argv[1]); reps = int(sys.argv[2]); boundary_py = sys.argv[3]
sys.path.insert(0, str(Path(boundary_py).parent.parent)); sys.path.insert(0, str(here / 'code'))
from job import boundary
import bench_dom.models.features as plugin

stimuli = StimulusSet({'stimulus_id': [f's{i}' for i in range(3200)], 'object_name': [f'o{i % 8}' for i in range(3200)]})
stimuli.identifier = 'bench'
(here / 'files').mkdir(exist_ok=True)
for i in range(16):
    (here / 'files' / f'{i}.png').write_bytes(b'x' * 1000)
stimuli.stimulus_paths = {f's{i}': here / 'files' / f'{i % 16}.png' for i in range(3200)}

local = plugin.FeatureModel()
bench_end, model_end = socket.socketpair()
proc = subprocess.Popen([sys.executable, boundary_py, 'serve-model', '--manifest', str(here / 'manifest.json'),
                         '--pair', 'p', '--channel-fd', str(model_end.fileno())], pass_fds=(model_end.fileno(),),
                        env={'PYTHONPATH': str(here / 'code'), 'PATH': '/usr/bin:/bin', 'OMP_NUM_THREADS': '1',
                             # the site's OpenBLAS settings, as the worker passes them: another kernel would
                             # compute other last digits, and the two assemblies are compared for identity
                             **{k: v for k, v in os.environ.items() if k.startswith('OPENBLAS_')},
                             'OPENBLAS_NUM_THREADS': '1'})
model_end.close()
(here / 'handoff').mkdir(exist_ok=True)
channel = boundary.Channel(bench_end.detach(), handoff=here / 'handoff')
boundary.wait_for_model(channel, 'imported'); boundary.wait_for_model(channel, 'ready')
remote = boundary.RemoteModel(channel, 'features-4096')

def one(model):
    start = time.perf_counter()
    assembly = model.look_at(stimuli, number_of_trials=1)
    mean = float(assembly.values.mean())
    return time.perf_counter() - start, assembly, mean

one(local); one(remote)  # warm: imports, the hand-off copies
times = {'in_process': [], 'boundary': [], 'boundary_number_only': []}
results = {}
for _ in range(reps):
    for name, model in (('in_process', local), ('boundary', remote)):
        seconds, assembly, mean = one(model)
        times[name].append(seconds)
        results[name] = (type(assembly).__name__, assembly.shape, mean, list(assembly.indexes))
    start = time.perf_counter()
    _mean, inside = remote.look_at_mean(stimuli, number_of_trials=1)
    times['boundary_number_only'].append(time.perf_counter() - start)
    times.setdefault('model_process_compute', []).append(inside)
a, b = one(local)[1], one(remote)[1]
import xarray
xarray.testing.assert_identical(a, b)
channel.send({'op': 'bye', 'obj': 0}); proc.wait(10)
print(json.dumps({'times': times, 'results': {k: [str(x) for x in v] for k, v in results.items()},
                  'nbytes': int(a.values.nbytes)}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--python", help="an interpreter with brainscore-core (default: a scratch uv environment)")
    parser.add_argument("--smoke", action="store_true", help="the smallest size: checks the script runs end to end (tests/test_benchmarks.py); its figures mean nothing")
    args = parser.parse_args()
    if args.smoke:
        args.reps = 1
    with tempfile.TemporaryDirectory(prefix="boundary-bench-") as tmp:
        here = Path(tmp)
        python = args.python
        if not python:
            from uv import find_uv_bin

            uv = find_uv_bin()
            subprocess.run([uv, "venv", "--quiet", str(here / "venv")], check=True)
            python = str(here / "venv/bin/python")
            subprocess.run([uv, "pip", "install", "--quiet", "--python", python, CORE, "numpy<2"], check=True)
        dom = here / "code/bench_dom"
        (dom / "models/features").mkdir(parents=True)
        (dom / "__init__.py").write_text("model_registry = {}\n")
        (dom / "models/__init__.py").write_text("")
        (dom / "models/features/__init__.py").write_text(textwrap.dedent(MODEL))
        (here / "manifest.json").write_text(json.dumps({"domain_root": "bench_dom", "tasks": [{"pairs": [
            {"key": "p", "model": "features-4096", "model_plugin": "features"}]}]}))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        out = subprocess.run([python, "-c", DRIVER, str(here), str(args.reps), str(ROOT / "pipeline/job/boundary.py")],
                             capture_output=True, text=True, env=env)
        if out.returncode != 0:
            sys.exit(out.stderr[-3000:])
        data = json.loads(out.stdout.strip().splitlines()[-1])
    best = {k: min(v) for k, v in data["times"].items()}
    median = {k: sorted(v)[len(v) // 2] for k, v in data["times"].items()}
    print(f"look_at of {data['nbytes'] / 1e6:.1f} MB: in process {median['in_process']:.3f} s, through the boundary "
          f"{median['boundary']:.3f} s (medians of {args.reps}); {data['results']}")
    last_line({"ratio": round(median["boundary"] / median["in_process"], 3),
               "best_ratio": round(best["boundary"] / best["in_process"], 3),
               "in_process_seconds": round(median["in_process"], 4), "boundary_seconds": round(median["boundary"], 4),
               "added_seconds": round(median["boundary"] - median["in_process"], 4), "assembly_bytes": data["nbytes"],
               "boundary_number_only_seconds": round(median["boundary_number_only"], 4),
               "model_process_compute_seconds": round(median["model_process_compute"], 4),
               "reps": args.reps, "ratio_definition": "boundary_seconds / in_process_seconds (median; target <= 1.2)"})


if __name__ == "__main__":
    main()
