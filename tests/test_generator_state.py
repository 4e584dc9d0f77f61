"""A stored generator state is checked before it is trusted: crafted metadata or tensors
are refused with a ValueError that says what is wrong, by ``SCLDGenerator.from_state`` and
by ``SCLDGenerator.load`` of a saved file; a valid state loads and generates the same cells.

(Sizes that would make loading allocate what the metadata claims are checked in
``tests/test_files.py``.)
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from scld_aug import SCLDGenerator, SCLDSampler
from scld_aug.params import SamplingParams
from scld_aug.preprocessing import log_normalize
from tests.conftest import TINY, make_counts

QUICK = dict(TINY, autoencoder_steps=20, diffusion_steps=20, classifier_steps=10)


@pytest.fixture(scope="module")
def data():
    return make_counts(sizes=(80, 40, 10), n_genes=60)


@pytest.fixture(scope="module")
def generator(data):
    return SCLDSampler(random_state=0, **QUICK).fit(*data).generator_


def _cells(generator: SCLDGenerator, label) -> np.ndarray:
    blocks = generator.sample(label, 20, SamplingParams(n_sampling_steps=5), seed=3)
    return np.vstack([b.toarray() if hasattr(b, "toarray") else b for b in blocks])


def _meta(**changes):
    def edit(meta: dict, state: dict) -> None:
        meta.update(changes)

    return edit


def _config(**changes):
    def edit(meta: dict, state: dict) -> None:
        meta["config"].update(changes)

    return edit


def _tensor(part: str, key, change):
    def edit(meta: dict, state: dict) -> None:
        holder = state[part]
        holder[key] = change(holder[key])

    return edit


def _nan_first(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0] = float("nan")
    return t


def _first_weight(part: str):
    def edit(meta: dict, state: dict) -> None:
        key = next(iter(state[part]))
        state[part][key] = _nan_first(state[part][key].float())

    return edit


def _edited(state: dict, edit) -> dict:
    meta = json.loads(state["meta"])
    edit(meta, state)
    state["meta"] = json.dumps(meta)
    return state


CRAFTED = {
    # Classes: the reported cases first.
    "bool dtype of numbers": (_meta(classes=[0, 1, 2], classes_dtype="|b1"), "type bool"),
    "bool dtype collapsing": (_meta(classes=[1, 2, 3], classes_dtype="|b1"), "type bool"),
    "duplicate classes": (_meta(classes=["type0", "type1", "type0"]), "not distinct"),
    "duplicate int classes": (_meta(classes=[1, 1, 2], classes_dtype="<i8"), "not distinct"),
    "truncated strings": (_meta(classes_dtype="<U2"), "change when stored"),
    "float classes": (_meta(classes=[0.5, 1.0, 2.0], classes_dtype="<f8"), "whole numbers"),
    "nan class": (_meta(classes=[float("nan"), 1.0, 2.0], classes_dtype="<f8"), "whole"),
    "mixed object classes": (_meta(classes=["a", 1, "b"], classes_dtype="object"), "object"),
    "nested object classes": (_meta(classes=[["a"], "b", "c"], classes_dtype="object"), "object"),
    "complex dtype": (_meta(classes=[0, 1, 2], classes_dtype="<c16"), "not supported"),
    "unknown dtype": (_meta(classes_dtype="not-a-dtype"), "not a data type"),
    "dtype not a string": (_meta(classes_dtype=None), "not a data type"),
    "huge string dtype": (_meta(classes_dtype="<U500000000"), "wider than its labels"),
    "overflowing ints": (_meta(classes=[0, 1, 300], classes_dtype="|i1"), "fit dtype"),
    "no classes": (_meta(classes=[]), "non-empty"),
    "classes not a list": (_meta(classes="type0"), "non-empty list"),
    # Genes.
    "too few gene names": (_meta(gene_names=["g0", "g1"]), "2 gene names are stored for 60"),
    "gene names not strings": (_meta(gene_names=list(range(60))), "list of strings"),
    "negative n_genes": (_meta(n_genes=-60), "positive integer"),
    "float n_genes": (_meta(n_genes=60.0), "positive integer"),
    "repeated gene in the panel": (
        _tensor("panel", "genes", lambda g: torch.cat([g[:1], g[:-1]])),
        "gene panel",
    ),
    "nan in the panel": (_tensor("panel", "center", _nan_first), "center"),
    "zero scale": (_tensor("panel", "scale", torch.zeros_like), "scale"),
    "negative composition": (_tensor("panel", "rest_profile", lambda p: -p), "composition"),
    "unknown likelihood": (_meta(likelihood="poisson"), "likelihood must be one of"),
    # Configuration.
    "float latent_dim": (_config(latent_dim=8.5), "latent_dim=8.5 is not an integer"),
    "string hidden_dim": (_config(hidden_dim="32"), "is not an integer"),
    "negative n_blocks": (_config(n_blocks=-1), "n_blocks"),
    "nan latent bound": (_config(latent_bound=float("nan")), "latent_bound"),
    "negative latent bound": (_config(latent_bound=-1.0), "latent_bound"),
    "kl_weight text": (_config(kl_weight="auto"), "kl_weight"),
    "other likelihood": (_config(likelihood="gaussian"), "config likelihood"),
    "history not losses": (_meta(history={"autoencoder": "low"}), "history"),
    "metadata not an object": (lambda m, s: (m.clear(), m.update(config=[])), "config"),
    # Tensors.
    "nan weights": (_first_weight("denoiser"), "denoiser weights hold values that are not"),
    "nan latent mean": (
        lambda m, s: s.update(latent_mean=_nan_first(s["latent_mean"])),
        "latent means",
    ),
    "zero latent std": (
        lambda m, s: s.update(latent_std=torch.zeros_like(s["latent_std"])),
        "standard deviations",
    ),
    "negative library sizes": (
        _tensor("libraries", 0, lambda lib: -lib),
        "library sizes hold values that are not finite and >= 0",
    ),
    "empty library sizes": (_tensor("libraries", 0, lambda lib: lib[:0]), "no stored library"),
    "empty anchors": (_tensor("anchors", 1, lambda a: a[:0]), "a class has no stored anchors"),
    "nan anchors": (_tensor("anchors", 0, _nan_first), "anchors hold values"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_states_are_refused_by_from_state_and_load(generator, tmp_path, case):
    edit, message = CRAFTED[case]
    # A copy: the state's tensors share memory with the generator's arrays and weights.
    with pytest.raises(ValueError, match=message):
        SCLDGenerator.from_state(_edited(copy.deepcopy(generator.state()), edit))
    saved, crafted = tmp_path / "saved.pt", tmp_path / "crafted.pt"
    generator.save(saved)
    content = torch.load(saved, weights_only=True)
    content["generator"] = _edited(content["generator"], edit)
    torch.save(content, crafted)
    with pytest.raises(ValueError, match=message) as caught:
        SCLDGenerator.load(crafted)
    assert str(crafted) in str(caught.value)


def test_a_valid_state_loads_and_generates_the_same_cells(generator, tmp_path):
    loaded = SCLDGenerator.from_state(copy.deepcopy(generator.state()))
    path = tmp_path / "fresh.pt"
    generator.save(path)
    from_file = SCLDGenerator.load(path)
    expected = _cells(generator, "type2")
    for other in (loaded, from_file):
        assert other.classes.tolist() == generator.classes.tolist()
        assert other.classes.dtype == generator.classes.dtype
        np.testing.assert_array_equal(_cells(other, "type2"), expected)


@pytest.mark.parametrize("kind", ["bool", "int8", "float", "object", "gaussian"])
def test_every_kind_of_label_the_sampler_takes_survives_save_and_load(data, tmp_path, kind):
    """Boolean, integer, whole-number float and object labels are what ``fit`` accepts, so
    their generators must load (only labels inconsistent with their dtype are refused);
    ``gaussian`` covers the panel of normalized data."""
    X, y = data
    codes = np.unique(y, return_inverse=True)[1]
    labels = {
        "bool": codes == 2,
        "int8": codes.astype(np.int8),
        "float": codes.astype(np.float64),
        "object": y.astype(object),
        "gaussian": y,
    }[kind]
    values = log_normalize(X) if kind == "gaussian" else X
    trained = SCLDSampler(random_state=0, **QUICK).fit(values, labels).generator_
    path = tmp_path / f"{kind}.pt"
    trained.save(path)
    loaded = SCLDGenerator.load(path)
    assert loaded.classes.dtype == trained.classes.dtype
    assert loaded.classes.tolist() == trained.classes.tolist()
    label = trained.classes[-1]
    np.testing.assert_array_equal(_cells(loaded, label), _cells(trained, label))
