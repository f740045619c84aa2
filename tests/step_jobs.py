"""A Snakemake job as far as modmask.steps.run reads one, to run an experiment's steps without Snakemake."""
from __future__ import annotations

import json
from types import SimpleNamespace

from modmask import steps


class Named(dict):
    """Snakemake's named lists (input, output, params, wildcards): ``.items()`` and attribute access."""

    def __getattr__(self, name):
        return self[name]


def snakemake_job(experiment=None, wildcards=None, input=None, output=None, log=None, settings=None,
                  arch=None, provenance=None, config=None, **params):
    """``settings`` and ``arch`` as dicts (written as JSON, as the rules do); further ``params`` as given."""
    params = dict(params)
    if experiment is not None:
        params["experiment"] = experiment
    for name, value in (("settings", settings), ("arch", arch)):
        if value is not None:
            params[name] = json.dumps(value, sort_keys=True)
    params["provenance"] = provenance if provenance is not None else {"seed": int((wildcards or {}).get("seed", 0))}
    return SimpleNamespace(params=Named(params), wildcards=Named(wildcards or {"seed": "0"}),
                           input=Named({k: str(v) if not isinstance(v, list) else [str(p) for p in v]
                                        for k, v in (input or {}).items()}),
                           output=Named({k: str(v) for k, v in (output or {}).items()}),
                           log=[str(log)] if log else [], threads=1,
                           config={"device": "cpu", "checkpoint_every": 0, **(config or {})})


def run_step(stage: str, **job) -> None:
    steps.run(snakemake_job(**job), stage)
