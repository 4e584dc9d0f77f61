"""Integrity as a property: over every input kind users have, the caller's data is never
modified or shared, and the original rows come back exactly as given.

Each input kind runs ``EXAMPLES`` random datasets (hypothesis; shapes, values, labels,
explicit zeros, duplicate entries, unsorted indices and read-only arrays all drawn) through
``fit_resample`` and ``generate``; AnnData kinds through ``fit_resample_anndata``; ``.h5ad``
files through ``scld-aug augment``. Every example checks:

* the caller's objects (every array of a matrix, ``y``, ``obs``, ``var``, ``uns``, layers,
  the file on disk) are unchanged, also after the output is overwritten in place;
* the output shares no memory with the input;
* the output has the input's container and format, and its first rows equal the input's
  values (duplicates summed as scipy defines them); its dtype is the input's, except that
  counts of a dtype narrower than 32 bits come back widened to 32 bits (``WIDENED``), so
  that synthetic counts never wrap around.

Narrow integer counts are also checked directly: the synthetic cells of ``uint8`` input
equal those of the same values given as ``int64``. Cell-type names that are awkward as
HDF5 keys (``/``, ``.``, ``..``, empty, non-ASCII) go through ``.h5ad`` round trips.
"""

from __future__ import annotations

import copy
import hashlib
import warnings

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from scld_aug import SCLDSampler

# A few optimizer steps of tiny networks: the properties are about data handling, so a
# fit only has to run every code path (tens of milliseconds).
MICRO = dict(
    autoencoder_steps=2,
    diffusion_steps=2,
    classifier_steps=2,
    n_sampling_steps=2,
    hidden_dim=8,
    latent_dim=4,
    batch_size=8,
    n_top_genes=4,
    kl_weight=0.0,
)
# Examples per input kind: 12 in CI (the "ci" profile of conftest), more with
# HYPOTHESIS_PROFILE=explore.
EXAMPLES = settings.default.max_examples
INT_DTYPES = ("int32", "int64", "int8", "uint8", "int16", "uint16")
# Counts of these dtypes come back as the 32-bit dtype of the same kind (float16: when
# modelled as counts; normalized values keep their dtype).
WIDENED = {"int8": "int32", "uint8": "uint32", "int16": "int32", "uint16": "uint32"}
FLOAT_DTYPES = ("float32", "float64")
SPARSE_KINDS = [
    f"{fmt}-{dtype}" for fmt in ("csr", "csc", "coo") for dtype in INT_DTYPES + FLOAT_DTYPES
] + ["csr_array-float64", "coo_array-int64", "csc_array-float32"]
DENSE_KINDS = [
    f"dense-{dtype}"
    for dtype in ("int32", "int64", "int8", "uint8", "int16", "uint16", *FLOAT_DTYPES, "float16")
]
KINDS = DENSE_KINDS + SPARSE_KINDS + ["dataframe-int64", "dataframe-float64", "list-int64"]


# --------------------------------------------------------------------------- data


@st.composite
def expression(draw, dtype: str):
    """(dense values, labels) with two classes; counts, or log-normalized floats."""
    n_major = draw(st.integers(5, 14))
    n_minor = draw(st.integers(3, 6))
    n_genes = draw(st.integers(1, 9))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = n_major + n_minor
    values = rng.poisson(draw(st.floats(0.2, 6.0)), size=(n, n_genes)).astype(np.float64)
    # Never all zero, never constant (else training refuses the data, rightly).
    empty, full = rng.choice(n, size=2, replace=False)
    values[empty] = 0
    values[full, rng.integers(n_genes)] += 1
    if dtype.startswith("float") and draw(st.booleans()):
        library = np.maximum(values.sum(1, keepdims=True), 1.0)
        values = np.log1p(values / library * 1e4)  # log-normalized: non-integer floats
    label_kind = draw(st.sampled_from(["str", "int", "categorical-str", "categorical-int"]))
    names = ["beta", "mast"] if "str" in label_kind else [2, 11]
    labels = np.array([names[0]] * n_major + [names[1]] * n_minor, dtype=object)
    order = rng.permutation(n)
    values, labels = values[order], labels[order]
    if label_kind == "int":
        labels = labels.astype(np.int64)
    return values.astype(dtype), labels, label_kind, rng


def _entries(values: np.ndarray, rng: np.random.Generator):
    """(row, col, value) triples: non-zeros, some split into duplicates, plus explicit
    zeros, in random order."""
    rows, cols = np.nonzero(values)
    triples = []
    for r, c in zip(rows, cols, strict=True):
        v = values[r, c]
        if rng.random() < 0.3:
            # Exact halves: v/2 + v/2 == v for floats; integer halves for counts.
            first = v // 2 if np.issubdtype(values.dtype, np.integer) else v / 2
            triples += [(r, c, first), (r, c, v - first)]
        else:
            triples.append((r, c, v))
    for _ in range(rng.integers(0, 4)):
        triples.append((rng.integers(values.shape[0]), rng.integers(values.shape[1]), 0))
    order = rng.permutation(len(triples))
    return [triples[i] for i in order]


def messy_sparse(values: np.ndarray, fmt: str, rng: np.random.Generator):
    """A sparse matrix equal to ``values`` (as scipy sums it) with explicit zeros, duplicate
    entries and unsorted indices."""
    triples = _entries(values, rng)
    r = np.array([t[0] for t in triples], dtype=np.int32)
    c = np.array([t[1] for t in triples], dtype=np.int32)
    v = np.array([t[2] for t in triples], dtype=values.dtype)
    base, array = fmt.split("_")[0], fmt.endswith("_array")
    if base == "coo":
        cls = sp.coo_array if array else sp.coo_matrix
        return cls((v, (r, c)), shape=values.shape)
    major, minor = (r, c) if base == "csr" else (c, r)
    n_major = values.shape[0] if base == "csr" else values.shape[1]
    order = np.argsort(major, kind="stable")  # grouped by row (column), unsorted within
    indptr = np.concatenate([[0], np.cumsum(np.bincount(major, minlength=n_major))])
    cls = getattr(sp, f"{base}_{'array' if array else 'matrix'}")
    return cls((v[order], minor[order], indptr.astype(np.int32)), shape=values.shape)


def make_input(kind: str, values: np.ndarray, rng: np.random.Generator, read_only: bool):
    container, dtype = kind.split("-")
    if container == "dense":
        X = values.copy()
    elif container == "dataframe":
        X = pd.DataFrame(values, columns=[f"g{j}" for j in range(values.shape[1])])
    elif container == "list":
        return values.tolist()
    else:
        X = messy_sparse(values, container, rng)
    if read_only and container != "dataframe":
        for array in _arrays(X):
            array.flags.writeable = False
    return X


def make_labels(labels: np.ndarray, label_kind: str, container: str):
    if label_kind.startswith("categorical"):
        return pd.Series(pd.Categorical(labels), name="cell_type")
    return {"list": labels.tolist(), "series": pd.Series(labels, name="cell_type")}.get(
        container, labels
    )


# --------------------------------------------------------------------------- checks


def _arrays(obj) -> list[np.ndarray]:
    """Every numpy array a container holds."""
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, pd.DataFrame):
        return [np.asarray(obj[c].array) for c in obj.columns]
    if isinstance(obj, pd.Series):
        return [np.asarray(obj.array)]
    if sp.issparse(obj):
        names = ("data", "indices", "indptr", "row", "col", "coords")
        found = []
        for name in names:
            value = getattr(obj, name, None)
            found += [a for a in (value if isinstance(value, tuple) else [value]) if a is not None]
        return [a for a in found if isinstance(a, np.ndarray)]
    return []


def snapshot(obj):
    """Everything of ``obj`` that must not change, deep-copied."""
    if isinstance(obj, anndata.AnnData):
        return {
            "X": snapshot(obj.X),
            "layers": {k: snapshot(v) for k, v in obj.layers.items()},
            "obs": obj.obs.copy(deep=True),
            "var": obj.var.copy(deep=True),
            "uns": copy.deepcopy(dict(obj.uns)),
            "obsm": {k: snapshot(v) for k, v in obj.obsm.items()},
        }
    if isinstance(obj, (pd.DataFrame, pd.Series)):
        return obj.copy(deep=True)
    if sp.issparse(obj):
        return (type(obj), obj.format, obj.shape, obj.dtype, [a.copy() for a in _arrays(obj)])
    if isinstance(obj, np.ndarray):
        return obj.copy()
    return copy.deepcopy(obj)


def assert_unchanged(obj, before) -> None:
    if isinstance(obj, anndata.AnnData):
        assert_unchanged(obj.X, before["X"])
        assert set(obj.layers.keys()) == set(before["layers"])
        for key, value in before["layers"].items():
            assert_unchanged(obj.layers[key], value)
        pd.testing.assert_frame_equal(obj.obs, before["obs"], check_exact=True)
        pd.testing.assert_frame_equal(obj.var, before["var"], check_exact=True)
        assert _same(dict(obj.uns), before["uns"])
        for key, value in before["obsm"].items():
            assert_unchanged(obj.obsm[key], value)
    elif isinstance(obj, pd.DataFrame):
        pd.testing.assert_frame_equal(obj, before, check_exact=True)
    elif isinstance(obj, pd.Series):
        pd.testing.assert_series_equal(obj, before, check_exact=True)
    elif sp.issparse(obj):
        kind, fmt, shape, dtype, arrays = before
        assert (type(obj), obj.format, obj.shape, obj.dtype) == (kind, fmt, shape, dtype)
        now = _arrays(obj)
        assert len(now) == len(arrays)
        for a, b in zip(now, arrays, strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b)
    elif isinstance(obj, np.ndarray):
        assert obj.dtype == before.dtype and np.array_equal(obj, before)
    else:
        assert obj == before


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (np.ndarray, pd.DataFrame, pd.Series)) or sp.issparse(a):
        try:
            assert_unchanged(a, snapshot(b) if not isinstance(b, tuple) else b)
            return True
        except AssertionError:
            return False
    return a == b


def dense(X) -> np.ndarray:
    if sp.issparse(X):
        return X.toarray()
    if isinstance(X, pd.DataFrame):
        return X.to_numpy()
    return np.asarray(X)


def assert_not_shared(output, inputs) -> None:
    for out_array in _arrays(output):
        for in_array in inputs:
            assert not np.shares_memory(out_array, in_array)


def scribble(obj) -> None:
    """Overwrite every writable array of ``obj`` in place (shared memory would show)."""
    for array in _arrays(obj):
        if array.flags.writeable and array.size and array.dtype.kind in "iuf":
            array[...] = 7


def output_dtype(dtype: np.dtype, counts: bool) -> np.dtype:
    """The dtype the documentation promises for input of ``dtype``."""
    if counts and str(dtype) == "float16":
        return np.dtype("float32")
    return np.dtype(WIDENED.get(str(dtype), dtype))


def assert_originals(X_res, X_in, n: int, counts: bool = True) -> None:
    """Container and format of the input, its dtype (widened where documented); first
    ``n`` rows its values exactly."""
    if isinstance(X_in, list):
        assert isinstance(X_res, list) and X_res[:n] == X_in
        return
    assert type(X_res) is type(X_in)
    if sp.issparse(X_in):
        assert X_res.format == X_in.format
    expected = dense(X_in)
    got = dense(X_res)
    assert got.dtype == output_dtype(expected.dtype, counts)
    np.testing.assert_array_equal(got[:n], expected)
    if isinstance(X_in, pd.DataFrame):
        assert list(X_res.columns) == list(X_in.columns)


# --------------------------------------------------------------------------- properties


@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_fit_resample_and_generate_keep_the_callers_data(kind, data):
    container, dtype = kind.split("-")
    values, labels, label_kind, rng = data.draw(expression(dtype))
    X = make_input(kind, values, rng, read_only=data.draw(st.booleans()))
    y = make_labels(labels, label_kind, data.draw(st.sampled_from(["array", "list", "series"])))
    X_before, y_before = snapshot(X), snapshot(y)
    inputs = _arrays(X) + _arrays(y)
    sampler = SCLDSampler(random_state=0, **MICRO)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # e.g. empty cells
        X_res, y_res = sampler.fit_resample(X, y)
        synthetic = sampler.generate(3, labels[-1])
    n = len(labels)
    assert_unchanged(X, X_before)
    assert_unchanged(y, y_before)
    assert_originals(X_res, X, n, counts=sampler.likelihood_ == "nb")
    if sampler.likelihood_ == "nb":  # counts stay non-negative whole numbers
        assert (dense(X_res) >= 0).all() and (dense(synthetic) >= 0).all()
    assert list(np.asarray(y_res)[:n]) == list(np.asarray(y))
    assert_not_shared(X_res, inputs)
    assert_not_shared(synthetic, inputs)
    assert dense(synthetic).shape == (3, values.shape[1])
    if container not in ("list", "dataframe"):
        assert type(synthetic) is type(X)
        assert not sp.issparse(X) or synthetic.format == X.format
    scribble(X_res)
    scribble(synthetic)
    assert_unchanged(X, X_before)
    assert_unchanged(y, y_before)


def _anndata(values, labels, label_kind, rng, where: str) -> anndata.AnnData:
    n, n_genes = values.shape
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(labels) if "categorical" in label_kind else labels,
            "qc": rng.random(n) > 0.5,
            "n_counts": np.arange(n),
        },
        index=[f"cell{i}" for i in range(n)],
    )
    var = pd.DataFrame(
        {"symbol": [f"G{j}" for j in range(n_genes)]}, index=[f"g{j}" for j in range(n_genes)]
    )
    uns = {"k": {"a": [1, 2]}, "colors": np.array(["red", "blue"])}
    obsm = {"X_pca": rng.normal(size=(n, 2))}
    matrix = messy_sparse(values, "csr", rng)
    if where == "X":
        return anndata.AnnData(X=matrix, obs=obs, var=var, uns=uns, obsm=obsm)
    log_norm = np.log1p(values / np.maximum(values.sum(1, keepdims=True), 1) * 1e4)
    return anndata.AnnData(
        X=log_norm.astype(np.float32),
        obs=obs,
        var=var,
        uns=uns,
        obsm=obsm,
        layers={"counts": matrix, "dense": values.copy()},
    )


@pytest.mark.parametrize("where", ["X", "layer:counts", "layer:dense", "backed"])
@given(data=st.data())
def test_fit_resample_anndata_keeps_the_callers_anndata(where, data, tmp_path_factory):
    dtype = data.draw(st.sampled_from(("int64", "uint8", "int16", "float32", "float64")))
    values, labels, label_kind, rng = data.draw(expression(dtype))
    adata = _anndata(values, labels, label_kind, rng, "X" if where in ("X", "backed") else "layer")
    layer = where.split(":")[1] if where.startswith("layer") else None
    if where == "backed":
        path = tmp_path_factory.mktemp("backed") / "cells.h5ad"
        adata.write_h5ad(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        adata = anndata.read_h5ad(path, backed="r")
    before = snapshot(adata) if where != "backed" else None
    source = adata.layers[layer] if layer else adata.X
    expected = dense(source[:] if where == "backed" else source)
    inputs = [] if where == "backed" else _arrays(source) + _arrays(adata.obs["cell_type"])
    sampler = SCLDSampler(random_state=0, **MICRO)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = sampler.fit_resample_anndata(adata, labels_key="cell_type", layer=layer)
    n = adata.n_obs
    result = out.layers[layer] if layer else out.X
    np.testing.assert_array_equal(dense(result)[:n], expected)
    assert dense(result).dtype == output_dtype(expected.dtype, sampler.likelihood_ == "nb")
    assert out.obs["is_synthetic"].sum() == out.n_obs - n
    # Same values; columns the synthetic cells have no value in become nullable dtypes.
    pd.testing.assert_frame_equal(
        out.obs.iloc[:n].drop(columns="is_synthetic"), adata.obs, check_dtype=False
    )
    # The result is independent of the input: changing it in place changes nothing there.
    out.var["symbol"] = "x"
    scribble(result)
    if where == "backed":
        adata.file.close()
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    else:
        out.uns["k"]["a"].append(3)
        out.uns["colors"][0] = "green"
        assert_not_shared(result, inputs)
        assert_unchanged(adata, before)


@settings(max_examples=max(2, EXAMPLES // 2))
@given(data=st.data())
def test_augment_command_keeps_the_input_file(data, tmp_path_factory):
    from scld_aug.apps.cli import main

    dtype = data.draw(st.sampled_from(("int64", "uint8", "int16", "float32")))
    values, labels, label_kind, rng = data.draw(expression(dtype))
    adata = _anndata(values, labels, label_kind, rng, data.draw(st.sampled_from(["X", "layer"])))
    layer = None if adata.layers.get("counts") is None else "counts"
    folder = tmp_path_factory.mktemp("augment")
    source, target = folder / "in.h5ad", folder / "out.h5ad"
    adata.write_h5ad(source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    names, sizes = np.unique(labels.astype(str), return_counts=True)
    rare = names[np.argmin(sizes)]
    args = ["augment", str(source), str(target), "--types", rare, "--target", "9"]
    args += ["--quiet", "--device", "cpu", "--seed", "0", "--quick"]
    args += ["--autoencoder-steps", "2", "--diffusion-steps", "2", "--classifier-steps", "2"]
    args += ["--sampling-steps", "2"] + (["--layer", layer] if layer else [])
    if not np.array_equal(values, np.round(values)):
        args += ["--likelihood", "gaussian"]  # log-normalized values, modelled as they are
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert main(args) == 0
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest
    out = anndata.read_h5ad(target)
    original = anndata.read_h5ad(source)
    given_matrix = original.layers[layer] if layer else original.X
    result = out.layers[layer] if layer else out.X
    np.testing.assert_array_equal(dense(result)[: original.n_obs], dense(given_matrix))
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temp files


# --------------------------------------------------------------------------- narrow counts


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16"])
@pytest.mark.parametrize("container", ["dense", "csr", "csc", "coo"])
@settings(max_examples=max(2, EXAMPLES // 4))
@given(data=st.data())
def test_narrow_integer_counts_never_wrap_around(dtype, container, data):
    """Counts near the top of a narrow dtype: the synthetic cells are exactly those of the
    same values given as int64 (nothing wraps around or saturates), in the widened dtype."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    top = np.iinfo(dtype).max
    n_major, n_minor = data.draw(st.integers(8, 14)), data.draw(st.integers(4, 6))
    values = rng.integers(0, top // 4, size=(n_major + n_minor, 6))
    values[:, 0] = rng.integers(top // 2, top + 1, size=len(values))  # a gene near the top
    labels = np.array(["beta"] * n_major + ["mast"] * n_minor)

    def given(v):
        return v if container == "dense" else getattr(sp, f"{container}_matrix")(v)

    results = {}
    for kind in (dtype, "int64"):
        sampler = SCLDSampler(random_state=0, **MICRO)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            X_res, _ = sampler.fit_resample(given(values.astype(kind)), labels)
        results[kind] = X_res
    narrow, wide = dense(results[dtype]), dense(results["int64"])
    assert narrow.dtype == np.dtype(WIDENED[dtype])
    np.testing.assert_array_equal(narrow, wide)
    np.testing.assert_array_equal(narrow[: len(labels)], values)
    assert narrow.min() >= 0


# --------------------------------------------------------------------------- type names

# Names that are paths or special as HDF5 keys, empty, or not ASCII.
AWKWARD_NAMES = ["NK/T", "NK", "", ".", "..", "../x", "a.b", "/", "Zellen β", "细胞 (稀有)"]


@settings(max_examples=max(3, EXAMPLES // 2))
@given(data=st.data())
def test_any_cell_type_name_survives_an_h5ad_round_trip(data, tmp_path_factory):
    from scld_aug.apps.cli import main

    major, minor = data.draw(
        st.lists(st.sampled_from(AWKWARD_NAMES), min_size=2, max_size=2, unique=True)
    )
    values, _, _, rng = data.draw(expression("int64"))
    n_minor = 3 + int(rng.integers(0, 3))
    labels = np.array([major] * (len(values) - n_minor) + [minor] * n_minor, dtype=object)
    categorical = data.draw(st.booleans())
    adata = anndata.AnnData(
        X=sp.csr_matrix(values.astype(np.float32)),
        obs=pd.DataFrame(
            {"cell_type": pd.Categorical(labels) if categorical else labels},
            index=[f"cell{i}" for i in range(len(labels))],
        ),
    )
    folder = tmp_path_factory.mktemp("names")
    source, target = folder / "in.h5ad", folder / "out.h5ad"
    adata.write_h5ad(source)
    args = ["augment", str(source), str(target), "--types", minor, "--target", "9", "--quiet"]
    args += ["--device", "cpu", "--quick", "--autoencoder-steps", "2", "--diffusion-steps", "2"]
    args += ["--classifier-steps", "2", "--sampling-steps", "2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert main(args) == 0
        in_memory = SCLDSampler(random_state=0, **MICRO).fit_resample_anndata(
            adata, labels_key="cell_type"
        )
    in_memory.write_h5ad(folder / "python.h5ad")
    for path, made in ((target, 9 - n_minor), (folder / "python.h5ad", None)):
        out = anndata.read_h5ad(path)
        names = out.obs["cell_type"].astype(str).to_numpy()
        assert list(names[: len(labels)]) == list(labels)
        synthetic = out.obs["is_synthetic"].to_numpy()
        table = out.uns["scld_aug"]["cell_types"]
        assert sorted(table.index) == sorted([major, minor])
        assert table["cells"].to_dict() == {major: len(labels) - n_minor, minor: n_minor}
        assert int(table["n_synthetic"].sum()) == int(synthetic.sum())
        if made is not None:  # the command line made exactly the asked-for cells
            assert table.loc[minor, "n_synthetic"] == made == synthetic.sum()
            assert set(names[synthetic]) == {minor}
        assert out.obs_names.is_unique
