"""A run's config on the command line: `--config FILE` (the JSON a run saves: `config.json`,
`iterate.json`) and `--set FIELD=VALUE` overrides on top of it or of the defaults chosen for
the data (`nsjax.loop._auto`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from nsjax.cli._common import UsageError

_SET_HELP = ("override one config field (repeatable); VALUE is JSON (numbers, true/false, null, "
             "lists) or else a string")


def add_config_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    """`--config` and `--set` for a command whose config is a `kind` ("TrainConfig" or
    "IterateConfig")."""
    saved = "config.json" if kind == "TrainConfig" else "iterate.json"
    parser.add_argument("--config", metavar="FILE",
                        help=f"an {kind} as JSON (the {saved} a run saves); its fields replace "
                        "the defaults chosen for the data; default: none")
    extra = ("; TrainConfig fields (e.g. dropout_rate=0.5) apply to every generation, "
             "genN.FIELD=VALUE to generation N only, IterateConfig fields (per_class, "
             "min_confidence, top_k, online, ...) to the loop" if kind == "IterateConfig"
             else "; e.g. --set epochs=30 --set randaugment_magnitude=null")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE",
                        help=_SET_HELP + extra + "; default: none")


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """`["a=1", "b=x"]` -> `{"a": 1, "b": "x"}` (values parsed as JSON, else kept as text)."""
    values = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--set takes FIELD=VALUE, got {pair!r}")
        try:
            values[name] = json.loads(text)
        except ValueError:
            values[name] = text
    return values


def read_json(path: str) -> dict[str, Any]:
    with open(path) as f:
        try:
            data = json.load(f)
        except ValueError as e:
            raise ValueError(f"--config {path}: not JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path} must hold a JSON object, got {type(data).__name__}")
    return data


def train_config(base: dict[str, Any], values: dict[str, Any]):
    """A `TrainConfig` from the fields `base` with `values` over them."""
    from nsjax.train import TrainConfig

    _check_names(values, {f.name for f in dataclasses.fields(TrainConfig)}, "TrainConfig")
    return TrainConfig.from_json(json.dumps({**base, **values}))


def iterate_config(base: dict[str, Any], values: dict[str, Any]):
    """An `IterateConfig` from `base` (its fields, `student` a dict of TrainConfig fields) with
    `values` over them: IterateConfig fields replace the loop's, TrainConfig fields are set in
    the student and removed from every generation's overrides, `genN.FIELD` set in generation
    N's."""
    from nsjax.loop import IterateConfig
    from nsjax.train import TrainConfig

    loop_fields = {f.name for f in dataclasses.fields(IterateConfig)} - {"student"}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    data = {**base, "student": dict(base.get("student", {})),
            "generations": [dict(g) for g in base.get("generations", [{}, {}])]}
    # fields of every generation first, then genN.FIELD, whatever the order on the line
    for name, value in sorted(values.items(), key=lambda item: "." in item[0]):
        gen, dot, field = name.partition(".")
        if dot:
            if not (gen.startswith("gen") and gen[3:].isdigit()):
                raise UsageError(f"--set {name}: expected genN.FIELD, e.g. gen0.epochs")
            g = int(gen[3:])
            if g >= len(data["generations"]):
                raise UsageError(f"--set {name}: the run has generations 0..."
                                 f"{len(data['generations']) - 1}, got {g}")
            _check_names({field: value}, train_fields, "TrainConfig")
            data["generations"][g][field] = value
        elif name in loop_fields:
            data[name] = value
        else:
            _check_names({name: value}, train_fields | loop_fields, "IterateConfig or TrainConfig")
            data["student"][name] = value
            for overrides in data["generations"]:
                overrides.pop(name, None)
    return IterateConfig.from_json(json.dumps(data))


def _check_names(values: dict[str, Any], known: set[str], what: str) -> None:
    unknown = sorted(set(values) - known)
    if unknown:
        raise UsageError(f"--set: unknown {what} field(s) {unknown}; known: {sorted(known)}")


def to_fields(config: Any) -> dict[str, Any]:
    """A config's fields as JSON-able values (what `train_config` / `iterate_config` take)."""
    return json.loads(config.to_json())
