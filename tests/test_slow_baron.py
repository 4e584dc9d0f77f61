"""Default parameters on the shipped Baron data (about 90 s): run with `make test-slow`."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from scld_aug import SCLDSampler, datasets
from scld_aug.preprocessing import log_normalize


@pytest.mark.slow
def test_defaults_make_recognisable_cells_of_every_type_on_baron():
    adata = datasets.baron_pancreas()
    X, y = adata.X, adata.obs["cell_type"].astype(str).to_numpy()
    sampler = SCLDSampler(random_state=0).fit(X, y)
    reference = LogisticRegression(max_iter=2000).fit(log_normalize(X), y)
    for cell_type in ["beta", "alpha", "ductal", "macrophage", "mast", "schwann"]:
        synthetic = sampler.generate(100, cell_type)
        assert np.all(synthetic.data == np.round(synthetic.data)) and synthetic.data.min() >= 0
        recognised = (reference.predict(log_normalize(synthetic)) == cell_type).mean()
        assert recognised >= 0.9, (cell_type, recognised)
        real_lib = np.median(np.asarray(X[y == cell_type].sum(1)))
        assert 0.7 < np.median(np.asarray(synthetic.sum(1))) / real_lib < 1.4
