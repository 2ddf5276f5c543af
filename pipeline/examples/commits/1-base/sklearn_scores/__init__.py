"""Example leaderboard domain: registries and loaders in Brain-Score's style.

Plugins register lazily: `model_registry['id'] = lambda: ...`. `load_model('id')`
imports only the plugin folder that registers that id.
"""

import importlib
from pathlib import Path

model_registry = {}
benchmark_registry = {}
data_registry = {}
metric_registry = {}

_HERE = Path(__file__).parent


def _load(plugin_type, registry, identifier):
    if identifier not in registry:
        for init in sorted((_HERE / plugin_type).glob("*/__init__.py")):
            text = init.read_text()
            if f"'{identifier}'" in text or f'"{identifier}"' in text:
                importlib.import_module(f"{__name__}.{plugin_type}.{init.parent.name}")
                if identifier in registry:
                    break
    if identifier not in registry:
        raise KeyError(f"no {plugin_type} plugin registers {identifier!r}")
    return registry[identifier]()


def load_model(identifier):
    return _load("models", model_registry, identifier)


def load_benchmark(identifier):
    return _load("benchmarks", benchmark_registry, identifier)


def load_dataset(identifier):
    return _load("data", data_registry, identifier)


def load_metric(identifier):
    return _load("metrics", metric_registry, identifier)


def score(model_identifier, benchmark_identifier):
    model = load_model(model_identifier)
    benchmark = load_benchmark(benchmark_identifier)
    return benchmark(model)
