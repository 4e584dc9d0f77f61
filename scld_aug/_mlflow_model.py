"""MLflow "model from code" for a logged SCLD sampler (see :func:`scld_aug.tracking.log_fit`).

MLflow stores this file next to the saved sampler and runs it on ``mlflow.pyfunc.load_model``;
nothing is unpickled. ``predict`` takes a DataFrame with columns ``cell_type`` and
``n_cells`` and returns the generated cells (one column per gene, plus ``cell_type``).
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class SCLDGeneratorModel(PythonModel):
    """Generates cells of the requested types with the logged sampler."""

    def load_context(self, context) -> None:
        from scld_aug.sampler import SCLDSampler

        self.sampler = SCLDSampler.load(context.artifacts["sampler"], device="cpu")

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        missing = {"cell_type", "n_cells"} - set(model_input.columns)
        if missing:
            raise ValueError(
                f"Model input needs columns 'cell_type' and 'n_cells'; missing {sorted(missing)}."
            )
        genes = getattr(self.sampler, "feature_names_in_", None)
        frames = []
        for cell_type, n in zip(model_input["cell_type"], model_input["n_cells"], strict=True):
            cells = self.sampler.generate(int(n), cell_type)
            if hasattr(cells, "toarray"):
                cells = cells.toarray()
            frame = (
                pd.DataFrame(cells, columns=genes) if not isinstance(cells, pd.DataFrame) else cells
            )
            frame.columns = [str(c) for c in frame.columns]
            frame.insert(0, "cell_type", cell_type)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)


mlflow.models.set_model(SCLDGeneratorModel())
