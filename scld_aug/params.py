"""The parameters of SCLD, each declared once.

Every parameter of :class:`~scld_aug.SCLDSampler` has one entry here: default, constraint
(scikit-learn's declarative validation), documentation, command-line help and its *kind*:

* ``"training"``: determines the trained generator, so it is part of the ``memory=`` cache
  key and of :class:`TrainingConfig` (some training constants are not sampler parameters:
  ``public=False``);
* ``"sampling"``: only changes how cells are drawn from a trained generator, so changing it
  never retrains (:class:`SamplingParams`, and what :func:`~scld_aug.tuning.tune_guidance`
  may search);
* ``"fit"``: how fitting runs (seed, device, cache, progress), neither.

Everything else is derived from this table: the sampler's ``_parameter_constraints`` and
the Parameters section of its docstring, :class:`TrainingConfig` and
:class:`SamplingParams`, the options of ``scld-aug augment`` and ``scld-aug train``, the
names and default search space of the tuning module. scikit-learn needs the sampler's
``__init__`` to spell its signature out; a test checks that it matches this table exactly.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass, field, make_dataclass
from numbers import Integral, Real
from typing import Any

from imblearn.over_sampling.base import BaseOverSampler
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

__all__ = ["PARAMS", "Param", "SamplingParams", "TrainingConfig"]


class Number(Interval):
    """A scikit-learn ``Interval`` that refuses booleans: ``True`` is an ``int`` to Python,
    but ``guidance_scale=True`` or ``latent_dim=True`` is a mistake, not 1."""

    def is_satisfied_by(self, val: Any) -> bool:
        return not isinstance(val, bool) and super().is_satisfied_by(val)


POSITIVE_INT = Number(Integral, 1, None, closed="left")
NON_NEGATIVE = Number(Real, 0, None, closed="left")
UNIT = Number(Real, 0, 1, closed="both")
# Longest diffusion process: the schedule is allocated from it (saved files are checked
# against it before anything is allocated).
MAX_TRAIN_TIMESTEPS = 100_000


@dataclass(frozen=True)
class Param:
    """One parameter.

    Attributes
    ----------
    name, default : the parameter and its default value.
    kind : {"training", "sampling", "fit"}
    constraints : list
        scikit-learn parameter constraints (``_parameter_constraints`` values).
    type_doc : str
        The numpydoc type, e.g. ``"float in [0, 1]"`` (the default is appended).
    doc : str
        The numpydoc description.
    help : str or None
        One line for the command line; None when it is not a command-line option.
    commands : tuple of str
        The ``scld-aug`` subcommands that take it as ``--name-with-dashes``.
    aliases : tuple of str
        Other option names kept for compatibility (e.g. ``--amp``).
    public : bool
        False for training constants that are not sampler parameters.
    search : tuple, list or None
        Default search range of ``tune_guidance``: ``(low, high)`` or a list of choices.
    py_type : str
        Type annotation of the field in :class:`TrainingConfig` / :class:`SamplingParams`.
    choices : tuple
        Values offered on the command line when the constraint alone is too broad.
    """

    name: str
    default: Any
    kind: str
    constraints: list
    type_doc: str
    doc: str
    help: str | None = None
    commands: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    public: bool = True
    search: Any = None
    py_type: str = "Any"
    choices: tuple = ()

    @property
    def option(self) -> str:
        """The command-line option: the name with dashes (``--output-kind`` for ``output``,
        whose plain name is the commands' output file)."""
        return "--output-kind" if self.name == "output" else "--" + self.name.replace("_", "-")


BOTH = ("augment", "train")
AUGMENT = ("augment",)

PARAMS: tuple[Param, ...] = (
    Param(
        "sampling_strategy",
        "auto",
        "sampling",
        BaseOverSampler._parameter_constraints["sampling_strategy"],
        "float, str, dict or callable",
        "Which classes to over-sample and to how many cells, with imbalanced-learn's "
        'semantics ("auto", "minority", "not minority", "not majority", "all", a float '
        "ratio, a dict ``{class: n_cells_after}``, or a callable ``y -> dict``).",
    ),
    Param(
        "random_state",
        None,
        "fit",
        ["random_state"],
        "int, RandomState instance or None",
        "Seed for training and sampling; global random state is never used nor touched. "
        "With an int, repeating a fit gives identical cells with the same device, CPU model "
        "or GPU, versions of torch and numpy, and ``n_jobs`` (whatever ``OMP_NUM_THREADS`` "
        "or ``torch.set_num_threads`` say outside), also while other fits run in threads "
        "of the same process. Another ``n_jobs``, CPU model or GPU orders "
        "floating-point sums differently and gives different, equally valid cells. Only "
        "int seeds are cached by ``memory``.",
    ),
    Param(
        "likelihood",
        "auto",
        "training",
        [StrOptions({"auto", "nb", "gaussian"})],
        '{"auto", "nb", "gaussian"}',
        'Decoder likelihood. ``"auto"`` uses a negative binomial for non-negative integer '
        "data (raw counts) and a Gaussian otherwise (e.g. log-normalized values).",
        help="decoder likelihood; 'gaussian' models non-count (normalized) data as it is",
        commands=BOTH,
        py_type="str",
    ),
    Param(
        "n_top_genes",
        2000,
        "training",
        [POSITIVE_INT, None],
        "int or None",
        "Number of highly variable genes modelled by the networks; the remaining genes are "
        "generated from class-level statistics (see :mod:`scld_aug.genes`). ``None`` models "
        "all genes.",
        help="genes modelled by the networks ('none': all)",
        commands=BOTH,
        py_type="int | None",
    ),
    Param(
        "latent_dim",
        32,
        "training",
        [POSITIVE_INT],
        "int",
        "Size of the latent space.",
        help="size of the latent space",
        commands=BOTH,
        py_type="int",
    ),
    Param(
        "hidden_dim",
        256,
        "training",
        [POSITIVE_INT],
        "int",
        "Width of the hidden layers of all networks.",
        help="width of the hidden layers",
        commands=BOTH,
        py_type="int",
    ),
    Param(
        "n_blocks",
        3,
        "training",
        [POSITIVE_INT],
        "int",
        "Residual blocks of the denoiser.",
        help="residual blocks of the denoiser",
        commands=("train",),
        public=False,
        py_type="int",
    ),
    Param(
        "class_balance",
        1.0,
        "training",
        [UNIT],
        "float in [0, 1]",
        "Minibatches draw cells with probability proportional to ``class_size ** "
        "-class_balance``: 1 gives every class the same share, 0 is uniform over cells. "
        "Without it, a type of ~10 cells among thousands is barely learned.",
        help="minibatch class balancing: 1 = every class equally often, 0 = uniform over cells",
        commands=BOTH,
        py_type="float",
    ),
    Param(
        "autoencoder_class_balance",
        0.0,
        "training",
        [UNIT, None],
        "float in [0, 1] or None",
        "``class_balance`` of the autoencoder's minibatches alone (``None``: the same as "
        "``class_balance``). The autoencoder shapes the latent space every type shares; "
        "the diffusion model and the latent classifier learn each type's distribution in it "
        "with ``class_balance``. The default 0 trains the autoencoder on all cells "
        "uniformly: with 10 cells per rare type it raised rare-type F1 on both benchmark "
        "datasets over balancing the autoencoder too.",
        help="class balancing of the autoencoder alone (None: the same as --class-balance)",
        commands=BOTH,
        py_type="float | None",
    ),
    Param(
        "kl_weight",
        0.0,
        "training",
        [NON_NEGATIVE],
        "float",
        "Weight of the KL term of a variational encoder. 0 trains a deterministic "
        "autoencoder. Above 0, each cell is encoded as a Gaussian posterior (pulled toward "
        "N(0, I) with this weight; 1 is a standard VAE) and the diffusion model learns "
        "codes drawn from the posteriors, so the latent space around the few cells of a "
        "rare type holds codes that decode to new cells rather than near-copies, at some "
        "cost in how recognisable they are as their type.",
        help="KL weight of a variational encoder (0: deterministic autoencoder)",
        commands=BOTH,
        py_type="float",
    ),
    Param(
        "label_dropout",
        0.15,
        "training",
        [Number(Real, 0, 1, closed="neither")],
        "float in (0, 1)",
        "Probability of replacing the label by the null class while training the "
        "denoiser; needed for classifier-free guidance.",
        help="probability of training the denoiser without the label (for guidance)",
        commands=BOTH,
        py_type="float",
    ),
    Param(
        "autoencoder_steps",
        1500,
        "training",
        [POSITIVE_INT],
        "int",
        "Optimizer steps of the autoencoder.",
        help="autoencoder training steps",
        commands=BOTH,
        py_type="int",
    ),
    Param(
        "diffusion_steps",
        4000,
        "training",
        [POSITIVE_INT],
        "int",
        "Optimizer steps of the latent diffusion model.",
        help="diffusion training steps",
        commands=BOTH,
        py_type="int",
    ),
    Param(
        "classifier_steps",
        1000,
        "training",
        [POSITIVE_INT],
        "int",
        "Optimizer steps of the latent classifier.",
        help="latent classifier training steps",
        commands=BOTH,
        py_type="int",
    ),
    Param(
        "batch_size",
        128,
        "training",
        [POSITIVE_INT],
        "int",
        "Minibatch size for all networks (per process under ``torchrun``).",
        help="minibatch size (per process under torchrun)",
        commands=BOTH,
        py_type="int",
    ),
    Param(
        "learning_rate",
        1e-3,
        "training",
        [Number(Real, 0, None, closed="neither")],
        "float",
        "Peak learning rate (one-cycle schedule, AdamW).",
        help="peak learning rate",
        commands=BOTH,
        py_type="float",
    ),
    Param(
        "num_train_timesteps",
        1000,
        "training",
        [Number(Integral, 1, MAX_TRAIN_TIMESTEPS, closed="both")],
        "int",
        "Length of the diffusion process.",
        help="length of the diffusion process",
        commands=("train",),
        public=False,
        py_type="int",
    ),
    Param(
        "beta_schedule",
        "cosine",
        "training",
        [StrOptions({"cosine", "linear"})],
        '{"cosine", "linear"}',
        "Noise schedule of the diffusion process.",
        help="noise schedule of the diffusion process",
        commands=("train",),
        public=False,
        py_type="str",
    ),
    Param(
        "mixed_precision",
        False,
        "training",
        ["boolean"],
        "bool",
        "Run the training forward passes in bfloat16 autocast (losses stay float32; no "
        "loss scaling is needed). Meant for GPUs with bfloat16 support; the networks are "
        "small, so measure before relying on a speed-up (``python -m "
        "evaluation.gpu_check``).",
        help="bfloat16 autocast for the training forward passes (GPUs)",
        commands=BOTH,
        aliases=("--amp",),
        py_type="bool",
    ),
    Param(
        "torch_compile",
        False,
        "fit",
        ["boolean"],
        "bool",
        "Train through ``torch.compile``: the first steps pay the compilation (tens of "
        "seconds), later steps run fused kernels. Does not change what is learned beyond "
        "float rounding, so it is not part of the ``memory`` cache key.",
        help="train through torch.compile",
        commands=BOTH,
        aliases=("--compile",),
        py_type="bool",
    ),
    Param(
        "guidance_scale",
        2.0,
        "sampling",
        [NON_NEGATIVE],
        "float",
        "Pre-guidance strength ``w`` in ``eps_u + w (eps_c - eps_u)``: 0 ignores the class, "
        "1 is plain conditional sampling, larger values sharpen class identity at some "
        "cost in diversity.",
        help="classifier-free guidance strength w",
        commands=AUGMENT,
        search=(0.0, 6.0),
        py_type="float",
    ),
    Param(
        "guidance_reference",
        "unconditional",
        "sampling",
        [StrOptions({"unconditional", "confusable"})],
        '{"unconditional", "confusable"}',
        'What pre-guidance beyond ``w = 1`` pushes away from. ``"unconditional"`` is '
        "classifier-free guidance: ``eps_c + (w - 1) (eps_c - eps_u)``. "
        '``"confusable"`` uses, for each sample and step, the prediction for the class '
        "the latent classifier finds most probable besides the target: "
        "``eps_c + (w - 1) (eps_c - eps_other)``, which sharpens the difference to a "
        "look-alike type (e.g. two T-cell subsets) rather than to cells in general. "
        "Below ``w = 1`` both are the same.",
        help="what guidance pushes away from: 'unconditional' or the 'confusable' type",
        commands=AUGMENT,
        search=["unconditional", "confusable"],
        py_type="str",
    ),
    Param(
        "post_guidance_scale",
        0.0,
        "sampling",
        [NON_NEGATIVE],
        "float",
        "Strength of the latent classifier's gradient during sampling (0 disables it).",
        help="strength of the latent classifier's gradient (0: off)",
        commands=AUGMENT,
        search=(0.0, 4.0),
        py_type="float",
    ),
    Param(
        "anchor_strength",
        1.0,
        "sampling",
        [UNIT],
        "float in [0, 1]",
        "Where sampling starts. 1 generates from pure noise (plain SCLD). Below 1, each "
        "synthetic cell starts from the latent code of a random real cell of its class, "
        "noised to this fraction of the diffusion trajectory and denoised back with "
        "guidance: lower values stay closer to the real cells (0 decodes their codes "
        "unchanged, a likelihood resampling of real cells), higher values invent more. With "
        "a variational encoder (``kl_weight > 0``) the start is a draw of the real cell's "
        "posterior, so 0 decodes posterior samples around real cells, as scVI samples.",
        help="1: start from noise; below 1: from noised codes of real cells of the type",
        commands=AUGMENT,
        py_type="float",
    ),
    Param(
        "n_sampling_steps",
        20,
        "sampling",
        [Number(Integral, 1, 1000, closed="both")],
        "int",
        "Denoising steps per sample (each runs the denoiser on the conditional and the "
        "reference branch of guidance).",
        help="denoising steps per synthetic cell",
        commands=AUGMENT,
        aliases=("--sampling-steps",),
        py_type="int",
    ),
    Param(
        "solver",
        "dpm++",
        "sampling",
        [StrOptions({"dpm++", "ddim"})],
        '{"dpm++", "ddim"}',
        '``"dpm++"``: DPM-Solver++(2M) (Lu et al. 2022), a second-order multistep solver: '
        "20 steps give cells as close to real ones (MMD per type) as 50 DDIM steps. "
        '``"ddim"``: deterministic DDIM steps (first order; the sampler of the SCLD paper), '
        "which need more steps for the same cells.",
        help="'dpm++' (second order, the default) or 'ddim'",
        commands=AUGMENT,
        py_type="str",
    ),
    Param(
        "filter_threshold",
        None,
        "sampling",
        [UNIT, None],
        "float in [0, 1] or None",
        "When set, synthetic cells whose latent-classifier probability of their intended "
        "class is below the threshold are rejected and re-drawn (up to "
        "``max_filter_rounds`` rounds; a warning says when the quota could not be met).",
        help="reject cells the latent classifier gives less than this for their type",
        commands=AUGMENT,
        search=[None, 0.5, 0.8],
        py_type="float | None",
    ),
    Param(
        "max_filter_rounds",
        10,
        "sampling",
        [POSITIVE_INT],
        "int",
        "Rounds of re-sampling allowed by the filter.",
        help="rounds of re-sampling allowed by the filter",
        commands=AUGMENT,
        py_type="int",
    ),
    Param(
        "output",
        "sample",
        "sampling",
        [StrOptions({"sample", "counts", "mean"})],
        '{"sample", "counts", "mean"}',
        '``"sample"`` draws cells from the decoder\'s likelihood (integer counts for count '
        'data); ``"counts"`` is the same but insists on count data; ``"mean"`` returns '
        "expected expression.",
        help="'sample' (draws; counts for count data) or 'mean' (expected expression)",
        commands=AUGMENT,
        py_type="str",
    ),
    Param(
        "min_class_size",
        3,
        "fit",
        [POSITIVE_INT],
        "int",
        "A class must have at least this many cells to be over-sampled.",
        help="fewest cells a type needs to be generated",
        commands=AUGMENT,
        py_type="int",
    ),
    Param(
        "device",
        "auto",
        "fit",
        [str],
        "str",
        'Torch device; ``"auto"`` picks cuda, then mps, then cpu.',
        help="auto: a GPU when there is one, else the CPU",
        commands=BOTH,
        choices=("auto", "cpu", "cuda", "mps"),
    ),
    Param(
        "n_jobs",
        None,
        "fit",
        [Number(Integral, None, -1, closed="right"), POSITIVE_INT, None],
        "int or None",
        "CPU threads for training and sampling, with scikit-learn's convention: None means "
        "1, -1 all CPUs of the process, -2 all but one. Applied only while SCLD works "
        "(``torch.set_num_threads``, restored afterwards). The networks are small, so one "
        "thread is fast and never collapses when other processes share the cores (a search "
        "with ``n_jobs`` around the sampler runs its fits side by side); more threads speed "
        "up a fit alone on an idle machine. On a GPU the networks run there and ``n_jobs`` "
        "only concerns torch work left on the CPU.",
        help="CPU threads; -1 for all CPUs (None: one thread)",
        commands=BOTH,
        py_type="int | None",
    ),
    Param(
        "memory",
        None,
        "fit",
        [None, str, os.PathLike, HasMethods(["cache"])],
        "str, path-like, joblib.Memory or None",
        "Directory where trained generators are cached (keyed by data, labels with their "
        "types, training parameters and ``random_state``) so clones, CV folds, searches and "
        "other processes reuse them instead of retraining. Only fits with an int "
        "``random_state`` are cached: an unseeded or ``RandomState`` fit is meant to differ "
        "from the last one, so it is neither read from nor written to the cache (a warning "
        "says so). An unreadable entry (e.g. truncated by a crash) is reported, retrained "
        "and replaced.",
    ),
    Param(
        "generator",
        None,
        "fit",
        [None, str, os.PathLike, HasMethods(["sample", "state"])],
        "str, path-like, SCLDGenerator or None",
        "A pretrained generator (a file from ``scld-aug train`` or "
        ":meth:`SCLDGenerator.save`, or the object itself). ``fit`` then trains nothing: it "
        "checks that the data has the generator's genes (by name when both know them) and "
        "kind (counts or not) and that every class to over-sample is one the generator "
        "knows, and samples from it. Training parameters and ``memory`` are ignored.",
        help="a pretrained generator (.pt from scld-aug train): nothing is trained",
        commands=AUGMENT,
    ),
    Param(
        "verbose",
        False,
        "fit",
        ["verbose"],
        "bool",
        "Show progress bars for training and sampling.",
    ),
)

BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}


def names(kind: str | None = None, public: bool | None = True) -> tuple[str, ...]:
    """Parameter names of ``kind`` (all kinds for None), public ones only by default.

    Examples
    --------
    >>> names("sampling")[:3]
    ('sampling_strategy', 'guidance_scale', 'guidance_reference')
    """
    return tuple(
        p.name
        for p in PARAMS
        if (kind is None or p.kind == kind) and (public is None or p.public == public)
    )


#: Parameters of the sampler, in the order of its signature.
SAMPLER_PARAMS = names()
#: Sampler parameters that determine the trained generator.
TRAINING_PARAMS = names("training")
#: Parameters that only change sampling: a change never retrains.
SAMPLING_PARAMS = names("sampling")


#: The parameters most users set, listed first in the sampler's docstring.
FIRST = ("sampling_strategy", "random_state", "guidance_scale", "device", "n_jobs", "memory")
#: Groups of the sampler's docstring, in order: the parameters most users set, then how cells
#: are drawn (never retrains), how the generator is trained, and how fitting runs.
DOC_GROUPS = {
    "set first": FIRST,
    "sampling": tuple(n for n in SAMPLING_PARAMS if n not in FIRST),
    "training": tuple(n for n in TRAINING_PARAMS if n not in FIRST),
    "fitting": tuple(n for n in names("fit") if n not in FIRST),
}


def parameter_constraints() -> dict[str, list]:
    """``_parameter_constraints`` of the sampler."""
    return {name: BY_NAME[name].constraints for name in SAMPLER_PARAMS}


def docstring(selection: tuple[str, ...] = SAMPLER_PARAMS, indent: int = 4) -> str:
    """The numpydoc lines of the parameters in ``selection``.

    Examples
    --------
    >>> print(docstring(("latent_dim",), indent=0))
    latent_dim : int, default=32
        Size of the latent space.
    """
    lines = []
    for name in selection:
        p = BY_NAME[name]
        default = f'"{p.default}"' if isinstance(p.default, str) else repr(p.default)
        lines.append(f"{p.name} : {p.type_doc}, default={default}")
        lines += textwrap.wrap(
            p.doc, width=88 - indent - 4, initial_indent="    ", subsequent_indent="    "
        )
    return textwrap.indent("\n".join(lines), " " * indent).lstrip()


def _config_class(name: str, selection: tuple[str, ...], doc: str, frozen: bool) -> type:
    cls = make_dataclass(
        name,
        [(n, BY_NAME[n].py_type, field(default=BY_NAME[n].default)) for n in selection],
        frozen=frozen,
    )
    cls.__module__ = __name__
    cls.__doc__ = doc.format(fields=docstring(selection, indent=4))
    return cls


TrainingConfig = _config_class(
    "TrainingConfig",
    names("training", public=None),
    """Everything that determines a trained generator (besides the data and the seed).

    Defaults match ``SCLDSampler``'s; :func:`~scld_aug.pretrain.pretrain` and
    ``scld-aug train`` take the same names. ``likelihood="auto"`` is resolved from the data
    when training starts.

    Parameters
    ----------
    {fields}

    Examples
    --------
    >>> from scld_aug.params import TrainingConfig
    >>> config = TrainingConfig(diffusion_steps=8000, mixed_precision=True)
    >>> config.batch_size, config.autoencoder_steps
    (128, 1500)
    """,
    frozen=True,
)

SamplingParams = _config_class(
    "SamplingParams",
    tuple(n for n in SAMPLING_PARAMS if n != "sampling_strategy"),
    """How cells are drawn from a trained generator; changing it never retrains.

    The fields are the ``SCLDSampler`` parameters of the same names.

    Parameters
    ----------
    {fields}

    Examples
    --------
    >>> from scld_aug.params import SamplingParams
    >>> SamplingParams(guidance_scale=4.0, n_sampling_steps=20).output
    'sample'
    """,
    frozen=False,
)
