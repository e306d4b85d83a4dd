"""unseen: machine learning on data you are not allowed to see.

The typed Python API behind the ``unseen`` command::

    import unseen
    spec = unseen.load_spec("examples/heart_disease.toml", overrides=["federated.rounds=20"])
    result = unseen.run(spec)
    print(result.accuracy, result.run_dir)
    dataset = unseen.data.load("mnist")
"""

from __future__ import annotations

__version__ = "0.1.0"

from unseen import data, federated, models, privacy  # noqa: E402
from unseen.errors import DataError, SpecError, UnseenError  # noqa: E402
from unseen.experiment import (  # noqa: E402
    ExperimentSpec,
    Hooks,
    RunResult,
    load_spec,
    parse_spec,
    resume,
    run,
)
from unseen.privacy import PrivacyGuarantee  # noqa: E402

__all__ = [
    "DataError", "ExperimentSpec", "Hooks", "PrivacyGuarantee", "RunResult", "SpecError", "UnseenError",
    "__version__", "data", "federated", "load_spec", "models", "parse_spec", "privacy", "resume", "run",
]
