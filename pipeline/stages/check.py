"""`check` stage: params.yaml against the model registry, before anything else runs.

The first stage of dvc.yaml (DVC runs it first when params change): an unknown model in
``train.models`` or a hyper-parameter a model does not take stops ``dvc repro`` at start-up
naming ``hparams.<model>.<key>``, not minutes later when that model's turn comes. It
writes nothing; no other stage depends on it, so a new model in the registry never reruns
the data stages.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.core.config import Params, load_params
from pipeline.core.runtime import ParamsOpt, run_stage
from pipeline.modeling import registry

log = logging.getLogger(__name__)


def run(params: Params) -> dict:
    registry.check(params)
    log.info("check: params.yaml OK: %d models, hyper-parameters known to each", len(params.train.models))
    return {"models": len(params.train.models)}


def main(params: ParamsOpt = Path("params.yaml")) -> None:
    """Check train.models and hparams against the model registry."""
    run_stage(lambda: run(load_params(params)))
