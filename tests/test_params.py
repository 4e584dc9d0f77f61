"""The parameter table is the one source: the sampler's signature, constraints and docstring,
the config objects, the command line and tuning all agree with it."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest

from scld_aug import SCLDSampler, params
from scld_aug.apps.cli import _add_param_options, _given_params, _Parser


def test_sampler_signature_matches_the_table_exactly():
    signature = inspect.signature(SCLDSampler)
    assert tuple(signature.parameters) == params.SAMPLER_PARAMS
    for name, parameter in signature.parameters.items():
        assert parameter.default == params.BY_NAME[name].default, name
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
    assert SCLDSampler._parameter_constraints == params.parameter_constraints()
    # __init__ stores each parameter unchanged, under its own name.
    sampler = SCLDSampler(**{name: f"<{name}>" for name in params.SAMPLER_PARAMS})
    assert sampler.get_params(deep=False) == {n: f"<{n}>" for n in params.SAMPLER_PARAMS}


def test_docstring_documents_every_parameter_once():
    doc = SCLDSampler.__doc__
    for name in params.SAMPLER_PARAMS:
        assert doc.count(f"\n    {name} : ") == 1, name
    for name in params.SAMPLING_PARAMS:
        assert f"``{name}``" in doc.split("Parameters")[0]  # the list of cheap parameters


def test_config_objects_are_the_table_kinds():
    training = {f.name: f.default for f in fields(params.TrainingConfig)}
    assert training == {n: params.BY_NAME[n].default for n in params.names("training", None)}
    assert training["likelihood"] == "auto"
    sampling = {f.name: f.default for f in fields(params.SamplingParams)}
    assert set(sampling) == set(params.SAMPLING_PARAMS) - {"sampling_strategy"}
    assert set(params.TRAINING_PARAMS) <= set(training)


@pytest.mark.parametrize("command", ["augment", "train"])
def test_command_line_options_come_from_the_table(command):
    parser = _Parser(prog="scld-aug")
    _add_param_options(parser, command)
    options = {a.option_strings[0] for a in parser._actions if a.option_strings}
    expected = {p.option for p in params.PARAMS if command in p.commands}
    assert options - {"-h"} == expected
    if command == "train":  # every training field can be set when pretraining
        training = params.names("training", public=None)
        assert {params.BY_NAME[n].option for n in training} <= options
    assert _given_params(parser.parse_args([]), command) == {}
    given = _given_params(parser.parse_args(["--n-top-genes", "none", "--amp"]), command)
    assert given == {"n_top_genes": None, "mixed_precision": True}


def test_tuning_searches_exactly_the_sampling_parameters():
    from scld_aug.tuning import SAMPLING_PARAMS, default_search_space

    assert SAMPLING_PARAMS == params.SAMPLING_PARAMS
    space = default_search_space()
    assert list(space) == [p.name for p in params.PARAMS if p.search is not None]
    assert set(space) <= set(params.SAMPLING_PARAMS)


def test_docstring_lists_the_parameters_most_users_set_first_then_by_kind():
    doc = SCLDSampler.__doc__.split("Parameters\n")[1].split("Attributes")[0]
    listed = [line.split(" : ")[0].strip() for line in doc.splitlines() if " : " in line[:40]]
    assert listed[: len(params.FIRST)] == list(params.FIRST)
    assert sorted(listed) == sorted(params.SAMPLER_PARAMS)
    kinds = [params.BY_NAME[n].kind for n in listed[len(params.FIRST) :]]
    assert kinds == sorted(kinds, key=["sampling", "training", "fit"].index)
