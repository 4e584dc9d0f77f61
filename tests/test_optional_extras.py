"""The core library works without its optional wings (Optuna, MLflow, matplotlib), and each
wing says what to install when it is used without its package."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUN = textwrap.dedent(
    """
    import sys
    import importlib.abc

    class Missing(importlib.abc.MetaPathFinder):
        # As if optuna, mlflow and matplotlib were not installed.
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in {"optuna", "mlflow", "matplotlib"}:
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, Missing())
    import numpy as np
    import scld_aug
    from scld_aug import SCLDSampler, datasets, params, store, sampling, anndata_io
    from scld_aug.presets import TINY

    X = np.random.default_rng(0).poisson(2.0, size=(60, 30))
    y = np.array(["a"] * 50 + ["b"] * 10)
    X_res, _ = SCLDSampler(random_state=0, **TINY).fit_resample(X, y)
    print("core ok", X_res.shape)
    for name in ("scld_aug.tuning", "scld_aug.tracking", "scld_aug.plotting"):
        try:
            module = __import__(name, fromlist=["_"])
            if name == "scld_aug.tracking":
                module.tracking_uri()
                from scld_aug.tracking.transport import _require_mlflow
                _require_mlflow()
            if name == "scld_aug.plotting":
                module.pyplot()
            print(name, "imported")
        except ImportError as err:
            print(name, "->", err)
    """
)


def test_core_runs_without_optional_packages_and_wings_say_what_to_install():
    done = subprocess.run(
        [sys.executable, "-c", RUN], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "core ok (100, 30)" in out
    assert "scld_aug.tuning -> Tuning needs Optuna: pip install 'scld-aug[tune]'" in out
    assert (
        "scld_aug.tracking -> MLflow tracking needs mlflow: pip install 'scld-aug[tracking]'" in out
    )
    assert "scld_aug.plotting -> Plots need matplotlib: pip install 'scld-aug[plots]'" in out
