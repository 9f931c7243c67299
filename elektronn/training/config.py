"""The training configuration: hard-coded defaults, a user default file and a per-run file.

ELEKTRONN 1.0's three levels, each overriding the one before:

1. :class:`MasterConfig`: the distribution's defaults (:func:`master_defaults`; those of the
   options that describe the net come from :func:`elektronn.defaults.architecture_defaults`,
   which :mod:`elektronn.net.netcreation` uses too).
2. :class:`DefaultConfig`: the master defaults updated from the user's file
   ``~/.elektronn.config`` if it exists (:func:`get_default_config` returns the shared one).
3. :class:`Config`: the configuration of one training run, read from a config file.

A config file is a plain Python file; every top-level name it defines is an option, e.g.::

    save_path = "~/CNN_Training/2D/"
    save_name = "MNIST_example_warp"
    save_path += save_name + "/"
    filters = [3, 3]
    SGD_params = dict(LR=0.02, momentum=0.9)

**The file is executed as Python code**, exactly as ELEKTRONN 1.0 did: it is the user's own
file and is as trusted as any script the user runs. Names starting with ``_`` and imported
modules are helpers and are ignored; any other name must be an option. An unknown name is
reported with the closest option name, a value of the wrong type with the type expected.

Unlike ELEKTRONN 1.0 (docs/differences.md, T1) no instance shares state with another: every
configuration
holds deep copies of the defaults, and the shared :class:`DefaultConfig` is never modified.

Examples
--------
>>> config = Config(None, use_existing_dir=True, default_config=DefaultConfig(None),
...                 overrides=dict(mode="vect-scalar", MLP_layers=[300, 300], n_lab=10))
>>> config.batch_size, config.n_layers, config.activation_func
(1, 2, ['relu', 'relu'])
"""

import ast
import copy
import difflib
import logging
import numbers
import os
import re
import types
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from elektronn.atomicio import atomic_write
from elektronn.defaults import NET_OPTIMIZER_DEFAULTS, OPTIMIZERS, TARGETS, architecture_defaults
from elektronn.net.netutils import CNNCalculator

__all__ = [
    "ConfigError",
    "OPTION_NAMES",
    "USER_CONFIG_FILE",
    "EXAMPLE_CONFIG_DIR",
    "example_configs",
    "master_defaults",
    "read_config_file",
    "find_config_file",
    "parse_override",
    "write_config_file",
    "MasterConfig",
    "DefaultConfig",
    "get_default_config",
    "Config",
]

logger = logging.getLogger("elektronn")

USER_CONFIG_FILE = "~/.elektronn.config"
"""The user's default file (level 2), read by :class:`DefaultConfig`."""

EXAMPLE_CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
"""Where a config file that is not found by its path is looked up by name: the example configs
shipped in the package :mod:`elektronn.configs` (``examples/configs`` of a source checkout
links there; ELEKTRONN 1.0 looked in ``elektronn/examples/``)."""

_SAVE_ROOT = "~/CNN_Training/"  # save_path without a save_name (see Config.parseConfig)

# --- the options ---------------------------------------------------------------------------------

# Value kinds: name -> (test, description for messages).
_KINDS = {
    "None": (lambda v: v is None, "None"),
    "bool": (lambda v: isinstance(v, bool | np.bool_), "a bool"),
    "int": (lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool | np.bool_),
            "an int"),
    "real": (lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_),
             "a number"),
    "str": (lambda v: isinstance(v, str), "a str"),
    "path": (lambda v: isinstance(v, str | os.PathLike), "a str (path)"),
    "list": (lambda v: isinstance(v, list | tuple), "a list or tuple"),
    "array": (lambda v: isinstance(v, np.ndarray), "a numpy array"),
    "dict": (lambda v: isinstance(v, Mapping), "a dict"),
    "pair": (lambda v: isinstance(v, list | tuple) and len(v) == 2
             and all(isinstance(x, str | os.PathLike) for x in v), "a (file path, name) pair"),
}

# The defaults of the options that describe the net (elektronn.net.netcreation reads them too).
_NET = architecture_defaults()

# (group, [(name, default, kinds, description), ...]) in the order of ELEKTRONN 1.0's
# MasterConfig; the defaults are those of its code (docs/differences.md, T17: the code wins over
# the docs).
_OPTIONS = (
    ("Toolkit setup", (
        ("save_path", _SAVE_ROOT + "Test/", ("path",),
         "folder of the training run (default: ~/CNN_Training/<save_name>/)"),
        ("plot_on", True, ("bool", "int"), "plot the training progress"),
        ("print_status", True, ("bool", "int"), "log the training status"),
        ("device", False, ("bool", "int", "str", "None"),
         "GPU of ELEKTRONN 1.0 (False: the backend's default); see Config's gpu"),
        ("param_save_h", 1.0, ("real",), "hours between permanent parameter snapshots"),
        ("initial_prev_h", 1.0, ("real",), "hours until the first preview"),
        ("prev_save_h", 3.0, ("real",), "hours between previews"),
    )),
    ("Paths and general", (
        ("save_name", "Test", ("str",), "name of the model (and of its folder)"),
        ("overwrite", True, ("bool", "int"),
         "replace an existing save_path folder (it is moved aside until the first save)"),
        ("param_file", _NET["param_file"], ("path", "None"),
         "parameter file to initialise the net from"),
        ("seed", None, ("int", "None"),
         "seed of the net, the batches and the batch workers (None: fresh entropy)"),
    )),
    ("Network architecture", (
        ("activation_func", _NET["activation_func"], ("str", "list"),
         "one for all layers or one per layer"),
        ("batch_size", _NET["batch_size"], ("int",), "examples per update step"),
        ("dropout_rates", _NET["dropout_rates"], ("list", "real", "None"),
         "drop rate per layer, one for all, or [] (no dropout)"),
        ("n_dim", 2, ("int",), "2 or 3 (ignored for 'vect-scalar')"),
        ("desired_input", 100, ("int", "list", "None"), "input size, (x, y) or (x, y, z)"),
        ("filters", _NET["filters"], ("list",), "filter size per conv layer, (x, y) or (x, y, z)"),
        ("pool", _NET["pool"], ("list",), "pooling factor per conv layer, (x, y) or (x, y, z)"),
        ("nof_filters", _NET["nof_filters"], ("list",), "number of filters per conv layer"),
        ("pooling_mode", _NET["pooling_mode"], ("str", "list"),
         "'max' or 'maxabs', for all or per layer"),
        ("MFP", _NET["MFP"], ("list", "bool", "int", "None"),
         "max-fragment-pooling per conv layer, or for all (True/False)"),
        ("rnn_layer_kwargs", _NET["rnn_layer_kwargs"], ("dict", "None"),
         "keyword arguments of addRecurrentLayer, or None"),
        ("MLP_layers", _NET["MLP_layers"], ("list",), "number of neurons per perceptron layer"),
        ("target", _NET["target"], ("str",), "loss: " + ", ".join(TARGETS)),
    )),
    ("Image data (CNN)", (
        ("data_path", "/", ("path",), "folder of the data files"),
        ("label_path", "/", ("path",), "folder of the label files"),
        ("d_files", [], ("list",), "(h5 file name, dataset name) per data cube"),
        ("l_files", [], ("list",), "(h5 file name, dataset name) per label cube"),
        ("cube_prios", None, ("list", "array", "None"),
         "sampling priority per cube (None: by cube size)"),
        ("valid_cubes", [], ("list",), "indices of the cubes used for validation"),
        ("example_ignore_threshold", 0.0, ("real", "None"),
         "drop patches with a larger fraction of negative (unlabelled) labels"),
        ("grey_augment_channels", [0], ("list",), "channels with grey-value augmentation"),
        ("use_example_weights", _NET["use_example_weights"], ("bool", "int"),
         "weight the examples"),
        ("flip_data", True, ("bool", "int"), "random flips and rotations"),
        ("anisotropic_data", True, ("bool", "int"), "cut 2-D slices only along z"),
        ("lazy_labels", _NET["lazy_labels"], ("bool", "int"), "train with lazy labels"),
        ("warp_on", False, ("bool", "real"), "warping augmentation (a float: fraction)"),
        ("border_mode", "crop", ("str",), "img-scalar: crop, keep, 0-pad, mirror or reject"),
        ("pre_process", None, ("str", "None"), "'standardise' or None"),
        ("zchxy_order", False, ("bool", "int"), "data stored as (z, (ch,) x, y)"),
        ("upright_x", False, ("bool", "int"), "mirror only horizontally"),
        ("downsample_xy", False, ("bool", "int"), "downsample x and y by this factor"),
    )),
    ("Preview", (
        ("preview_data_path", None, ("path", "None"), "h5 file with preview cubes"),
        ("preview_kwargs", {"export_class": 1, "max_z_pred": 5}, ("dict", "None"),
         "keyword arguments of Trainer.previewSlice"),
    )),
    ("Data common", (
        ("mode", "img-img", ("str",), "img-img, img-scalar or vect-scalar"),
        ("n_lab", None, ("int", "None"), "number of classes (None: detect, slow)"),
        ("background_processes", False, ("bool", "int"),
         "batch pre-fetching processes (True: 2)"),
    )),
    ("Alternative data", (
        ("data_class_name", None, ("str", "pair", "None"),
         "a class of elektronn.training.traindata, or (file path, class name)"),
        ("data_load_kwargs", {}, ("dict", "None"), "keyword arguments of the data class"),
        ("data_batch_kwargs", {}, ("dict", "None"), "keyword arguments of its getbatch"),
    )),
    ("Optimisation", (
        ("n_steps", 10**12, ("int",), "number of update steps"),
        ("max_runtime", 24 * 3600, ("real",), "maximal training time in seconds"),
        ("history_freq", [500], ("list", "int"), "[steps between monitoring]"),
        ("monitor_batch_size", 10, ("int",), "examples to monitor the model on"),
        ("weight_decay", _NET["weight_decay"], ("bool", "real"), "L2 weight decay (False: 0)"),
        ("class_weights", _NET["class_weights"], ("list", "array", "None"),
         "weight per class (not normalised)"),
        ("label_prop_thresh", _NET["label_prop_thresh"], ("real", "None"),
         "label propagation threshold"),
        ("optimizer", "SGD", ("str",), "SGD, CG, RPROP, LBFGS or Adam"),
        ("LR_decay", 0.993, ("real",), "learning rate factor per 1000 steps"),
        ("LR_schedule", None, ("list", "None"), "[(step, learning rate), ...]"),
    )),
    ("Optimiser parameters", (
        ("SGD_params", _NET["SGD_params"], ("dict", "None"), "SGD"),
        ("SSGD_params", {"LR": 0.01, "momentum": 0.9, "var_momentum": 0.9, "var_cuttoff": 3.0},
         ("dict", "None"), "unused (kept for old config files)"),
        ("RPROP_params", _NET["RPROP_params"], ("dict", "None"), "RPROP"),
        ("Adam_params", _NET["Adam_params"], ("dict", "None"), "Adam"),
        ("CG_params", _NET["CG_params"], ("dict", "None"), "conjugate gradient"),
        ("LBFGS_params", _NET["LBFGS_params"], ("dict", "None"), "L-BFGS"),
    )),
)

_DEFAULTS = {name: default for _, opts in _OPTIONS for name, default, _, _ in opts}
_TYPES = {name: kinds for _, opts in _OPTIONS for name, _, kinds, _ in opts}
_HELP = {name: text for _, opts in _OPTIONS for name, _, _, text in opts}

OPTION_NAMES = tuple(_DEFAULTS)
"""The names of all options, in the order of ELEKTRONN 1.0's ``MasterConfig``."""

_PATH_OPTIONS = ("save_path", "param_file", "data_path", "label_path", "preview_data_path")
_MODES = ("img-img", "img-scalar", "vect-scalar")
_BORDER_MODES = ("crop", "keep", "0-pad", "mirror", "reject")
_MANDATORY = ("SGD_params", "batch_size", "max_runtime", "monitor_batch_size", "n_steps",
              "n_lab", "save_name", "mode")
_MANDATORY_CNN = ("desired_input", "filters", "n_dim", "nof_filters", "pool")
_MANDATORY_MLP = ("MLP_layers",)
_MANDATORY_DATA = ("d_files", "data_path", "l_files", "label_path")


class ConfigError(ValueError):
    """A configuration has unknown options, values of the wrong type or inconsistent values."""


def master_defaults(names=None):
    """Return a fresh copy of the master defaults (level 1).

    Parameters
    ----------
    names : iterable of str, optional
        The options to return (default: all).

    Returns
    -------
    dict
        ``{name: default}``; deep copies, so changing them changes no other configuration.

    Raises
    ------
    KeyError
        If a name is not an option.
    """
    names = OPTION_NAMES if names is None else tuple(names)
    return {name: copy.deepcopy(_DEFAULTS[name]) for name in names}


# --- reading, checking and writing option values -------------------------------------------------


def read_config_file(path):
    """Execute a config file and return the names it defines.

    The file is executed as Python code in a fresh namespace (it is the user's own file, as in
    ELEKTRONN 1.0). ``__file__`` is set to its path. Names starting with ``_`` and modules
    are left out.

    Config files written for ELEKTRONN 1.0 (Python 2) run unchanged where Python 3 allows it:
    a top-level ``del`` of a name that only a list comprehension defined (Python 2 leaked the
    loop variable, e.g. ``d_files = [... for i in range(3)]`` followed by ``del i``) is
    accepted. Python 2 syntax (a ``print`` statement, ``except E, e``, ...) is reported with
    the file, the line and what to write instead.

    Parameters
    ----------
    path : str or os.PathLike
        The config file.

    Returns
    -------
    dict
        ``{name: value}`` of the names the file defines.

    Raises
    ------
    RuntimeError
        If the file is not valid Python 3 or executing it raises (the original error is
        chained).

    Examples
    --------
    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "old_style.py")
    ...     with open(path, "w") as f:
    ...         _ = f.write("d_files = [('raw_%i.h5' % i, 'raw') for i in range(2)]\\ndel i\\n")
    ...     read_config_file(path)
    {'d_files': [('raw_0.h5', 'raw'), ('raw_1.h5', 'raw')]}
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        source = f.read()  # bytes: compile() honours a coding declaration (Python 2 files)
    try:
        tree = ast.parse(source, path)
    except SyntaxError as e:
        raise RuntimeError(_syntax_message(path, e)) from e
    code = compile(_tolerate_leaked_names(tree), path, "exec")
    namespace = {"__file__": path, "__name__": "__elektronn_config__"}
    try:
        exec(code, namespace)  # noqa: S102 (the user's own file)
    except Exception as e:
        raise RuntimeError(f"the config file {path} could not be executed: "
                           f"{type(e).__name__}: {e}") from e
    return {name: value for name, value in namespace.items()
            if not name.startswith("_") and not isinstance(value, types.ModuleType)}


_PY2_HINTS = (
    (r"^\s*print\b\s*[^\s(=]", "the print statement is Python 2: write print(...) (a function "
                                "call), e.g. print(\"x\") instead of print \"x\""),
    (r"^\s*exec\s+[^\s(=]", "the exec statement is Python 2: write exec(\"...\")"),
    (r"^\s*except\b[^:]*,[^:]*:", "'except E, e:' is Python 2: write 'except E as e:'"),
    (r"^\s*raise\s+\w[\w.]*\s*,", "'raise E, \"message\"' is Python 2: write "
                                   "'raise E(\"message\")'"),
    (r"<>", "the operator <> is Python 2: write !="),
    (r"`", "backquotes are Python 2: write repr(...)"),
    (r"(?<![\w.])0\d+(?![\w.])", "octal literals like 0755 are Python 2: write 0o755"),
    (r"(?<![\w.])\d+[lL]\b", "long literals like 10L are Python 2: write 10"),
    (r"\b(ur|UR|Ur|uR)[\"']", "ur'...' strings are Python 2: write r'...'"),
)


def _syntax_message(path, error):
    """A message for a config file that is not Python 3, with a hint for Python 2 syntax."""
    line = (error.text or "").rstrip("\n")
    hint = next((text for pattern, text in _PY2_HINTS if re.search(pattern, line)), None)
    message = (f"the config file {path} is not valid Python 3: SyntaxError at line "
               f"{error.lineno}: {error.msg}\n    {line.strip()}")
    if hint:
        message += (f"\nConfig files are executed as Python 3 (ELEKTRONN 1.0 used Python 2): "
                    f"{hint}.")
    return message


class _LeakedNameDeletion(ast.NodeTransformer):
    """Rewrite top-level ``del name`` of list-comprehension variables to ``pop(name, None)``.

    Python 2 leaked a list comprehension's loop variable into the enclosing scope, so its
    config files could ``del`` it; in Python 3 the name is usually undefined there.
    """

    def __init__(self, names):
        self.names = names

    def visit_Delete(self, node):
        if not all(isinstance(t, ast.Name) and t.id in self.names for t in node.targets):
            return node
        calls = [ast.Expr(ast.Call(
            func=ast.Attribute(ast.Call(ast.Name("globals", ast.Load()), [], []), "pop",
                               ast.Load()),
            args=[ast.Constant(t.id), ast.Constant(None)], keywords=[]))
            for t in node.targets]
        return [ast.copy_location(c, node) for c in calls]


def _tolerate_leaked_names(tree):
    names = {target.id for comp in ast.walk(tree) if isinstance(comp, ast.ListComp)
             for gen in comp.generators for target in ast.walk(gen.target)
             if isinstance(target, ast.Name)}
    if not names:
        return tree
    transformer = _LeakedNameDeletion(names)
    body = []
    for stmt in tree.body:
        new = transformer.visit_Delete(stmt) if isinstance(stmt, ast.Delete) else stmt
        body += new if isinstance(new, list) else [new]
    tree.body = body
    return ast.fix_missing_locations(tree)


def _closest(name):
    lower = {option.lower(): option for option in OPTION_NAMES}
    if name.lower() in lower:
        return lower[name.lower()]
    return lower[difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=0.0)[0]]


def _check_names(options, source):
    """Raise ConfigError listing every unknown option name with the closest valid name."""
    unknown = [name for name in options if name not in _DEFAULTS]
    if unknown:
        lines = [f"{name!r} is not a valid configuration option. Did you mean "
                 f"{_closest(name)!r}?" for name in unknown]
        raise ConfigError(f"{source}:\n  " + "\n  ".join(lines) +
                          "\n(helper names in a config file must start with '_')")


def _check_types(options, source):
    """Raise ConfigError listing every option whose value has a kind it may not have."""
    problems = []
    for name, value in options.items():
        kinds = _TYPES[name]
        if not any(_KINDS[kind][0](value) for kind in kinds):
            expected = " or ".join(_KINDS[kind][1] for kind in kinds)
            problems.append(f"{name} must be {expected}, got {value!r} "
                            f"({type(value).__name__})")
    for name in ("batch_size", "monitor_batch_size"):
        value = options.get(name)
        if _KINDS["int"][0](value) and value < 1:
            problems.append(f"{name} must be at least 1, got {value}")
    problems += _optimizer_param_problems(options)
    schedule = options.get("LR_schedule")
    if isinstance(schedule, list | tuple):
        for entry in schedule:
            if not (isinstance(entry, list | tuple) and len(entry) == 2
                    and _KINDS["int"][0](entry[0]) and _KINDS["real"][0](entry[1])):
                problems.append(f"LR_schedule entries must be (step, learning rate) pairs of "
                                f"an int and a number, got {entry!r}")
    if problems:
        raise ConfigError(f"{source}:\n  " + "\n  ".join(problems))


def parse_override(name, text):
    """The value of a command-line override ``NAME=TEXT`` (``elektronn-train --set``).

    ``text`` is read as a Python literal; where that fails, or where option ``name`` takes a
    string (or path) and the literal is of a kind the option does not take, the text itself.

    Examples
    --------
    >>> parse_override("save_path", "runs/"), parse_override("save_name", "123")
    ('runs/', '123')
    >>> parse_override("n_steps", "500"), parse_override("param_file", "None")
    (500, None)
    >>> parse_override("SGD_params", "dict(LR=0.01)")  # not a literal: the type check says so
    'dict(LR=0.01)'
    """
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    kinds = _TYPES.get(name, ())
    if {"str", "path"} & set(kinds) and not any(_KINDS[kind][0](value) for kind in kinds):
        return text
    return value


def _optimizer_param_problems(options):
    """Unknown keys and values of the wrong type in the ``<optimiser>_params`` dicts."""
    defaults = {f"{name}_params": NET_OPTIMIZER_DEFAULTS[name] for name in OPTIMIZERS}
    problems = []
    for name, valid in defaults.items():
        params = options.get(name)
        if not isinstance(params, Mapping):
            continue
        for key, value in params.items():
            if key not in valid:
                close = difflib.get_close_matches(str(key), list(valid), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                problems.append(f"{name}: {key!r} is not a parameter of this optimiser (valid: "
                                f"{sorted(valid)}).{hint}")
                continue
            default = valid[key]
            kind = "bool" if isinstance(default, bool) else (
                "int" if isinstance(default, int) else "real")
            if not _KINDS[kind][0](value):
                problems.append(f"{name}[{key!r}] must be {_KINDS[kind][1]}, got {value!r} "
                                f"({type(value).__name__})")
    return problems


def find_config_file(config_file):
    """Return the path of a config file, also looking in :data:`EXAMPLE_CONFIG_DIR`.

    Parameters
    ----------
    config_file : str or os.PathLike
        A path (``~`` is expanded), or the name of an example config, with or without ``.py``.

    Returns
    -------
    str
        The absolute path.

    Raises
    ------
    RuntimeError
        If the file is found nowhere; the message lists the example configs.

    Examples
    --------
    >>> Path(find_config_file("MNIST_MLP_config")).name
    'MNIST_MLP_config.py'
    """
    path = Path(os.path.expanduser(os.fspath(config_file)))
    if path.is_file():
        return str(path.resolve())
    for name in (path.name, path.name + ".py"):
        example = EXAMPLE_CONFIG_DIR / name
        if example.is_file() and name != "__init__.py":
            return str(example)
    names = ", ".join(example_configs())
    raise RuntimeError(f"Config file {config_file} could not be found, neither as a path nor "
                       f"as an example config (those are: {names}).")


def example_configs():
    """The names of the example configs (without ``.py``), for ``elektronn-train <name>``.

    Examples
    --------
    >>> "neuro_3d_config" in example_configs()
    True
    """
    return sorted(p.stem for p in EXAMPLE_CONFIG_DIR.glob("*.py") if p.name != "__init__.py")


def _literal(value):
    """``value`` with numpy arrays and scalars turned into Python lists and numbers."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, list | tuple):
        return type(value)(_literal(v) for v in value)
    if isinstance(value, Mapping):
        return {k: _literal(v) for k, v in value.items()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def write_config_file(options, path, header=""):
    """Write options as a config file that :class:`Config` reads back to the same values.

    The file is written atomically (to a temporary file that is then renamed).

    Parameters
    ----------
    options : mapping
        ``{name: value}``, in the form a config file gives them (``(x, y, z)`` order, before
        :meth:`Config.fixValues`). Numpy arrays and numbers are written as lists and numbers.
    path : str or os.PathLike
        The file to write.
    header : str, optional
        Text for a comment block at the top of the file.

    Raises
    ------
    ConfigError
        If a name is not an option, or a value cannot be written as a Python literal.
    """
    _check_names(options, os.fspath(path))
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for group, opts in _OPTIONS:
        names = [name for name, _, _, _ in opts if name in options]
        if names:
            lines.append(f"\n### {group} ###")
        for name in names:
            value = _literal(options[name])
            text = repr(value)
            try:
                same = ast.literal_eval(text) == value
            except (ValueError, SyntaxError):
                same = False
            if not same:
                raise ConfigError(f"option {name} = {text} cannot be written to a config file")
            lines += [f"# {_HELP[name]}", f"{name} = {text}"]
    data = ("\n".join(lines).lstrip("\n") + "\n").encode("utf-8")
    atomic_write(path, data)


# --- the three levels ----------------------------------------------------------------------------


class MasterConfig:
    """The hard-coded defaults (level 1), one attribute per option.

    Every instance has its own deep copies (see :func:`master_defaults`).
    """

    def __init__(self):
        for name, value in master_defaults().items():
            setattr(self, name, value)

    def options(self):
        """Return a deep copy of all options as a dict ``{name: value}``."""
        return {name: copy.deepcopy(getattr(self, name)) for name in OPTION_NAMES}


class DefaultConfig(MasterConfig):
    """The master defaults updated from the user's default file (level 2).

    Parameters
    ----------
    user_file : str, os.PathLike or None, optional
        The user's file (executed as Python, like a run's config file); default
        ``~/.elektronn.config``. Nothing is read if it is None or does not exist.

    Attributes
    ----------
    user_file : str or None
        The file that was read, or None.
    user_options : frozenset of str
        The options the user file sets.

    Raises
    ------
    RuntimeError
        If executing the file raises.
    ConfigError
        If it sets unknown options or values of the wrong type.
    """

    def __init__(self, user_file=USER_CONFIG_FILE):
        super().__init__()
        self.user_file, self.user_options = None, frozenset()
        if user_file is None:
            return
        path = os.path.expanduser(os.fspath(user_file))
        if not os.path.isfile(path):
            return
        logger.info("Reading User Default Config %s", path)
        options = read_config_file(path)
        _check_names(options, path)
        _check_types(options, path)
        for name, value in options.items():
            setattr(self, name, value)
        self.user_file, self.user_options = path, frozenset(options)


_default_config = None


def get_default_config(reload=False):
    """Return the shared :class:`DefaultConfig`, reading ``~/.elektronn.config`` once.

    Parameters
    ----------
    reload : bool, optional
        Read the user file again.

    Returns
    -------
    DefaultConfig
        Configurations copy their values from it and never change it.
    """
    global _default_config
    if _default_config is None or reload:
        _default_config = DefaultConfig()
    return _default_config


def __getattr__(name):
    """``default_config``: the shared :class:`DefaultConfig` (ELEKTRONN 1.0's module-level
    singleton), created on first access instead of at import."""
    if name == "default_config":
        return get_default_config()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Config:
    """The configuration of one training run (level 3), one attribute per option.

    The values are the defaults (:class:`DefaultConfig`), updated from the config file and
    then from ``overrides``; they are checked, normalised (:meth:`fixValues`) and checked for
    consistency (:meth:`checkConfig`). For image modes the input size is chosen with
    :func:`~elektronn.net.netutils.CNNCalculator`. A configuration creates no folder and writes
    no file: the :class:`~elektronn.training.trainer.Trainer` creates ``save_path`` when the
    run starts, after the data was loaded and checked.

    Parameters
    ----------
    config_file : str, os.PathLike or None
        The config file. It is executed as Python code (it is the user's own file, as in
        ELEKTRONN 1.0; see :func:`read_config_file`). A name that is not a path is looked up
        among the example configs (:data:`EXAMPLE_CONFIG_DIR`). None: no file.
    gpu : None, bool, int or str, optional
        ELEKTRONN 1.0 selected a Theano GPU with it. PyTensor has no such switch; the value
        is kept as :attr:`gpu` for the caller (docs/differences.md, T16) and otherwise ignored.
    trainer_file : str, os.PathLike or None, optional
        The script that drives the training, copied to ``<save_path>/Backup/elektronn-train``
        when the run starts (:meth:`backupScripts`).
    use_existing_dir : bool, optional
        Kept for ELEKTRONN 1.0's signature (there it kept a configuration from creating
        ``save_path``); stored as :attr:`use_existing_dir`.
    override_MFP_to_active : bool, optional
        Use max-fragment-pooling in every layer that pools, and ``batch_size = 1`` (for
        prediction with the config of a training).
    imposed_input_size : int or sequence of int, optional
        Replaces ``desired_input``. It is **not** reordered: give 3-D sizes as ``(z, x, y)``.
    default_config : DefaultConfig, optional
        The defaults to start from (default: :func:`get_default_config`). Not modified.
    overrides : mapping, optional
        Options set after the file, as if the file ended with them.

    Attributes
    ----------
    config_file : str or None
        The absolute path of the config file.
    n_layers : int
        ``len(filters) + len(MLP_layers)`` (a recurrent layer is not counted).
    dimensions : CNNCalculator result or None
        The architecture calculator of image modes (None for 'vect-scalar').
    patch_size : tuple of int or None
        The chosen input size ``(x, y)`` or ``(z, x, y)`` of image modes.
    user_options : dict
        The options as the config file and ``overrides`` gave them (paths expanded, before
        :meth:`fixValues`).

    Raises
    ------
    RuntimeError
        If the file is not found or cannot be executed.
    ConfigError
        If options are unknown, of the wrong type, or do not fit together.

    Notes
    -----
    Fixes against ELEKTRONN 1.0 (besides T1 in docs/differences.md): ``save_path`` defaults to
    ``~/CNN_Training/<save_name>/`` when no file sets it (ELEKTRONN 1.0 used
    ``~/CNN_Training/Test/`` whatever the name), and always ends with a path separator;
    ``~`` is also expanded in the path of a ``(path, class name)`` ``data_class_name``;
    types are checked before :meth:`fixValues` (which relies on them); entries of ``filters``
    and ``pool`` are reordered one by one, so scalar and 3-element entries may be mixed.
    """

    def __init__(self, config_file, gpu=None, trainer_file=None, use_existing_dir=False,
                 override_MFP_to_active=False, imposed_input_size=None, *,
                 default_config=None, overrides=None):
        self.gpu = gpu
        self.trainer_file = trainer_file
        self.use_existing_dir = use_existing_dir
        self.override_MFP_to_active = override_MFP_to_active
        self.imposed_input_size = imposed_input_size
        self.default_config = default_config if default_config is not None \
            else get_default_config()
        self.config_file = None if config_file is None else find_config_file(config_file)
        self.parseConfig(overrides)
        self.typeChecks()
        self.fixValues()
        self.checkConfig()
        self.dimensions = self.patch_size = None
        if self.mode != "vect-scalar":
            self._chooseInput()
        if not use_existing_dir:
            self.checkDataFiles()
        if gpu not in (None, False):
            logger.info("gpu=%r ignored: PyTensor selects its device through its own "
                        "configuration", gpu)

    # -- the processing steps, in the order of __init__ ------------------------------------------

    def parseConfig(self, overrides=None):
        """Merge defaults, config file and ``overrides`` into attributes (no checks of values).

        Returns
        -------
        dict
            :attr:`user_options`.
        """
        source = self.config_file or "configuration"
        user = {}
        if self.config_file is not None:
            logger.info("Reading config-file %s", self.config_file)
            user = read_config_file(self.config_file)
            _check_names(user, source)
        if overrides:
            _check_names(overrides, "overrides")
            user.update(copy.deepcopy(dict(overrides)))
        options = self.default_config.options()
        options.update(user)
        if "save_path" not in user and "save_path" not in self.default_config.user_options:
            options["save_path"] = _SAVE_ROOT + str(options["save_name"]) + "/"
        for name in _PATH_OPTIONS:
            if isinstance(options[name], str | os.PathLike):
                options[name] = os.path.expanduser(os.fspath(options[name]))
        if isinstance(options["save_path"], str):
            options["save_path"] = os.path.join(options["save_path"], "")
        dcn = options["data_class_name"]
        if _KINDS["pair"][0](dcn):
            options["data_class_name"] = (os.path.expanduser(os.fspath(dcn[0])), dcn[1])
        self._source, self._overridden = source, bool(overrides)
        self.user_options = {name: copy.deepcopy(options[name]) for name in user}
        self._options_in = copy.deepcopy(options)
        for name, value in options.items():
            setattr(self, name, value)
        return self.user_options

    def typeChecks(self):
        """Raise :class:`ConfigError` naming every option whose value has a wrong type."""
        _check_types(self.options(), self._source)

    def fixValues(self):
        """Bring the options to the form the trainer and :func:`createNet` use.

        * ``monitor_batch_size`` becomes a multiple of ``batch_size`` (rounded down, at least
          ``batch_size``).
        * For ``n_dim == 3`` the 3-element entries of ``filters`` and ``pool`` and a
          3-element ``desired_input`` are reordered from ``(x, y, z)`` to ``(z, x, y)``;
          scalar entries stay as they are.
        * ``MFP``: False, None, 0 or ``[]`` become ``[0] * len(filters)``, True or 1
          ``[1] * len(filters)``. With ``override_MFP_to_active`` it is 1 for every layer that
          pools and ``batch_size`` becomes 1.
        * ``imposed_input_size`` replaces ``desired_input`` (already in ``(z, x, y)`` order).
        * A single ``pooling_mode`` is repeated per conv layer, a single ``activation_func``
          and a single (or None) ``dropout_rates`` per layer (``n_layers``).
        * ``class_weights`` becomes a float32 array (not normalised, as in ELEKTRONN 1.0).
        * ``example_ignore_threshold`` None becomes 0.0; an int ``history_freq`` ``[int]``.

        Raises
        ------
        ConfigError
            If a 3-D entry does not have 3 elements, or ``n_dim == 2`` has 3-element entries.
        """
        self.n_layers = len(self.filters) + len(self.MLP_layers)
        if self.monitor_batch_size % self.batch_size:
            self.monitor_batch_size = max(self.batch_size,
                                          self.monitor_batch_size
                                          - self.monitor_batch_size % self.batch_size)
        if self.mode != "vect-scalar":
            self._checkShapes()
        if self.n_dim == 3:
            self.filters = [_xyz2zxy(f) for f in self.filters]
            self.pool = [_xyz2zxy(p) for p in self.pool]
            self.desired_input = _xyz2zxy(self.desired_input)

        n_conv = len(self.filters)
        if self.MFP is None or isinstance(self.MFP, bool | int | np.bool_) \
                or (isinstance(self.MFP, list | tuple) and len(self.MFP) == 0):
            self.MFP = [int(bool(self.MFP))] * n_conv
        if self.override_MFP_to_active:
            self.MFP = [int(np.max(p) > 1) for p in self.pool]
            self.batch_size = 1
        if self.imposed_input_size is not None:
            self.desired_input = copy.deepcopy(self.imposed_input_size)

        if not isinstance(self.pooling_mode, list | tuple):
            self.pooling_mode = [self.pooling_mode] * n_conv
        if not isinstance(self.activation_func, list | tuple):
            self.activation_func = [self.activation_func] * self.n_layers
        if not isinstance(self.dropout_rates, list | tuple):
            self.dropout_rates = [self.dropout_rates] * self.n_layers
        if self.class_weights is not None:
            self.class_weights = np.array(self.class_weights, dtype=np.float32)
            logger.info("class_weights %s are used as given (not normalised)",
                        self.class_weights)
        if self.example_ignore_threshold is None:
            self.example_ignore_threshold = 0.0
        if not isinstance(self.history_freq, list | tuple):
            self.history_freq = [self.history_freq]

    def _checkShapes(self):
        """Raise ConfigError for entries whose length does not fit ``n_dim`` (xyz order)."""
        problems = []
        if self.n_dim not in (2, 3):
            problems.append(f"n_dim must be 2 or 3 for mode {self.mode!r}, got {self.n_dim}")
        for name in ("filters", "pool", "desired_input"):
            value = getattr(self, name)
            entries = [value] if name == "desired_input" else value
            for entry in entries:
                if isinstance(entry, list | tuple | np.ndarray) and len(entry) != self.n_dim:
                    problems.append(f"{name} entry {list(entry)} needs {self.n_dim} sizes "
                                    f"(n_dim={self.n_dim}), in (x, y[, z]) order")
        if problems:
            raise ConfigError(f"{self._source}:\n  " + "\n  ".join(problems))

    def checkConfig(self):
        """Warn about important options the config file does not set, and check consistency.

        Raises
        ------
        ConfigError
            Listing every inconsistency (layer lists of different lengths, MLP layers in
            'img-img' mode, unknown ``mode``/``target``/``optimizer``/``border_mode`` ...).
        """
        mandatory = list(_MANDATORY)
        if self.mode in ("img-img", "img-scalar"):
            mandatory += _MANDATORY_CNN
        if self.mode == "vect-scalar":
            mandatory += _MANDATORY_MLP
        if self.data_class_name is None:
            mandatory += _MANDATORY_DATA
        missing = [name for name in mandatory if name not in self.user_options]
        if missing:
            logger.warning("%s does not set the important options %s; their default values "
                           "are used, which may not work", self._source, missing)

        problems = []

        def require(ok, message):
            if not ok:
                problems.append(message)

        for name, allowed in (("mode", _MODES), ("target", TARGETS),
                              ("optimizer", OPTIMIZERS), ("border_mode", _BORDER_MODES)):
            value = getattr(self, name)
            require(value in allowed, f"{name} must be one of {list(allowed)}, got {value!r}")
        require(len(self.dropout_rates) in (0, self.n_layers),
                f"dropout_rates needs one rate per layer ({self.n_layers}) or none ([]), got "
                f"{list(self.dropout_rates)}")
        require(not self.lazy_labels or self.mode == "img-img",
                "lazy_labels is only possible in 'img-img' mode")
        require(self.mode != "img-img" or not self.MLP_layers,
                "'img-img' mode does not allow MLP_layers")
        require(self.mode != "img-scalar" or self.MLP_layers,
                "'img-scalar' mode requires MLP_layers")
        require(self.mode != "vect-scalar" or not self.filters,
                "'vect-scalar' mode does not allow conv layers (filters)")
        require(self.mode not in ("img-img", "img-scalar") or self.filters,
                f"mode {self.mode!r} needs conv layers (filters, pool, nof_filters)")
        require(len(self.filters) == len(self.pool) == len(self.nof_filters),
                f"filters, pool and nof_filters need one entry per conv layer, got "
                f"{len(self.filters)}, {len(self.pool)} and {len(self.nof_filters)}")
        require(self.rnn_layer_kwargs is None or self.mode == "vect-scalar",
                "a recurrent layer (rnn_layer_kwargs) is only possible in 'vect-scalar' mode")
        if problems:
            raise ConfigError(f"{self._source}:\n  " + "\n  ".join(problems))

    def checkDataFiles(self):
        """Check that the data files of an image training exist, before any long work.

        Checks ``data_path``/``d_files``, ``label_path``/``l_files`` (HDF5 files or zarr
        stores) and ``preview_data_path`` (a ``data_class_name`` loads its own data).

        Raises
        ------
        ConfigError
            Naming every missing file, what it should hold and, for the layout of the
            synthetic example cubes (``raw_<i>.h5``, ``barrier_int16_<i>.h5``), the command
            that writes them.
        """
        if self.data_class_name is not None or self.mode == "vect-scalar":
            return
        wanted = [(Path(self.data_path) / name, key, "d_files")
                  for name, key in self.d_files]
        wanted += [(Path(self.label_path) / name, key, "l_files")
                   for name, key in self.l_files]
        if self.preview_data_path is not None:
            wanted.append((Path(self.preview_data_path), None, "preview_data_path"))
        from elektronn.training.volumes import is_zarr

        missing = [(path, key, option) for path, key, option in wanted
                   if not (path.is_file() or (key and path.is_dir() and is_zarr(path)))]
        if not missing:
            return
        lines = [f"{option} file {path.absolute()} does not exist" +
                 (f" (expected an HDF5 file or a zarr group with the dataset {key!r})"
                  if key else "")
                 for path, key, option in missing]
        hint = _synthetic_hint(self.d_files, self.l_files, self.data_path, self.label_path)
        raise ConfigError(f"{self._source}: missing data:\n  " + "\n  ".join(lines) +
                          "\nSet data_path/label_path (in the config or with --set "
                          "data_path=FOLDER/) to where your cubes are." + hint)

    def _chooseInput(self):
        """Set :attr:`dimensions` and :attr:`patch_size` (image modes)."""
        def calculator(desired):
            try:
                return CNNCalculator(self.filters, self.pool, desired, MFP=self.MFP,
                                     force_center=self.mode == "img-img", n_dim=self.n_dim)
            except ValueError as e:
                raise ConfigError(f"{self._source}: the conv architecture (filters={self.filters}"
                                  f", pool={self.pool}, desired_input={self.desired_input}, "
                                  f"zxy order for 3-D) does not work: {e}") from e

        dims = calculator(self.desired_input)
        desired = np.broadcast_to(np.asarray(self.desired_input), (self.n_dim,)) \
            if self.desired_input is not None else dims.input
        if self.mode == "img-scalar" and np.any(np.not_equal(dims.input, desired)):
            if self.border_mode == "reject":
                raise ConfigError(
                    f"The CNN architecture does not allow the input size {list(desired)} of "
                    f"the images (the nearest is {dims.input}) and border_mode='reject'. Use "
                    "an architecture that fits, other image sizes or another border_mode.")
            if self.border_mode in ("mirror", "0-pad"):  # the next larger valid size
                larger = [min((v for v in valid if v >= d), default=i)
                          for i, d, valid in zip(dims.input, desired, dims.valid_inputs,
                                                 strict=True)]
                dims = calculator(larger)
        logger.info("Selected patch-size for CNN input: %s", dims)
        self.dimensions = dims
        self.patch_size = tuple(int(i) for i in np.atleast_1d(dims.input))
        if len(self.patch_size) == 1:
            self.patch_size *= self.n_dim

    def backupScripts(self, trainer_file=None, folder=None):
        """Write copies of the config file and the trainer script into ``<folder>/Backup``.

        ``Backup/config.py`` is the config file (written from :attr:`user_options` if there
        is no file or there are overrides, so it gives the same configuration),
        ``Backup/elektronn-train`` the trainer script (if given). Files are written
        atomically; nothing is deleted. The :class:`~elektronn.training.trainer.Trainer`
        calls this when a run starts, after the data was loaded and checked.

        Parameters
        ----------
        trainer_file : str or os.PathLike, optional
            The script that drives the training (default :attr:`trainer_file`).
        folder : str or os.PathLike, optional
            The training folder (default ``save_path``); it must exist.
        """
        trainer_file = self.trainer_file if trainer_file is None else trainer_file
        backup = Path(self.save_path if folder is None else folder) / "Backup"
        backup.mkdir(exist_ok=True)
        if trainer_file is not None:
            _atomic_copy(trainer_file, backup / "elektronn-train")
        if self.config_file is not None and not self._overridden:
            _atomic_copy(self.config_file, backup / "config.py")
        else:
            write_config_file(self.user_options, backup / "config.py",
                              header=f"Configuration {self.save_name} (written by elektronn)")
            os.chmod(backup / "config.py", 0o755)

    # -- access ------------------------------------------------------------------------------------

    def options(self):
        """Return a deep copy of all options (after :meth:`fixValues`) as a dict."""
        return {name: copy.deepcopy(getattr(self, name)) for name in OPTION_NAMES}

    def write(self, path):
        """Write all options as a config file from which :class:`Config` gives this one.

        The values are written as they were before :meth:`fixValues` (``(x, y, z)`` order);
        ``override_MFP_to_active`` and ``imposed_input_size`` are not part of a file.

        Parameters
        ----------
        path : str or os.PathLike
            The file (written atomically).
        """
        write_config_file(self._options_in, path,
                          header=f"Configuration {self.save_name} (written by elektronn)")

    def describe(self):
        """Return a listing of all options by group, and the derived values."""
        lines = [f"Configuration from {self.config_file or 'defaults'}"]
        for group, opts in _OPTIONS:
            lines.append(f"# {group}")
            lines += [f"{name} = {getattr(self, name)!r}" for name, _, _, _ in opts]
        lines.append("# Derived")
        lines += [f"{name} = {getattr(self, name)!r}" for name in ("n_layers", "patch_size")]
        return "\n".join(lines)

    __str__ = describe

    def __repr__(self):
        return (f"<Config {self.save_name!r} from {self.config_file or 'defaults'}: "
                f"mode={self.mode!r}, n_dim={self.n_dim}, n_layers={self.n_layers}, "
                f"patch_size={self.patch_size}>")


def _synthetic_hint(d_files, l_files, data_path, label_path):
    """How to write synthetic cubes, if the files have the layout of the example cubes."""
    n = len(d_files)
    layout = ([(f"raw_{i}.h5", "raw") for i in range(n)],
              [(f"barrier_int16_{i}.h5", "lab") for i in range(n)])
    if ([tuple(e) for e in d_files], [tuple(e) for e in l_files]) != layout \
            or os.path.normpath(data_path) != os.path.normpath(label_path):
        return ""
    return ("\nSynthetic cubes of this layout are written by `elektronn-demo` (into "
            "elektronn-demo-output/data/) or by\n  python -m elektronn.data.synthetic "
            f"{data_path} --cubes {n}")


def _xyz2zxy(shape):
    """A 3-element sequence reordered from ``(x, y, z)`` to ``[z, x, y]``; anything else as is."""
    if isinstance(shape, list | tuple | np.ndarray) and len(shape) == 3:
        return [shape[2], shape[0], shape[1]]
    return shape


def _atomic_copy(src, dst, mode=0o755):
    """Copy ``src`` to ``dst`` atomically, with permissions ``mode`` (ELEKTRONN 1.0: 0755)."""
    with open(src, "rb") as f:
        data = f.read()
    atomic_write(dst, data, mode)
