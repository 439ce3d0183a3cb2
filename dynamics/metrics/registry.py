"""The metric registry: every stored metric name, once, on the function that computes exactly its stored value.

A registration (in the spirit of lm-evaluation-harness's registry) names the metric, says where it lives and
which app page shows it; the function bears the stored name it computes:

    @register("anisotropy", family="geometry", page="geometry", layers=ALL_LAYERS, label="Anisotropy",
              unit="cosine in [−1, 1]",
              definition="Mean cosine similarity over all unordered pairs of distinct tokens.")
    def anisotropy(h: Matrix) -> float: ...

Names computed together. A function whose stored names share their work (a value and its baseline-adjusted form,
the same-sequence and other-sequence means of one pass) computes them in one call: it carries one `@register` per
stored name, each with its own label, unit, definition and variants (same family, scope and layers), is named
after them (the first name, or what they measure, e.g. `rogue_shares`), and returns {stored name: value}. So
every stored name leads, through its registration, to the one function that computes it, and no function hands
a stored value to another through a cache.

The probe's engine (`dynamics.measure.engine`) calls each registered function once (`computations`) and stores what it
returns; the report and the app (through the definitions the probe stores) take labels, definitions, units,
pages and "defined in" (the registered function's module and name, right by construction) from it;
`tests/reference/` pins every registered name against an independent float64 formula. A new metric is one
function, one registration and one reference test.

Calling convention. A registered function's parameters are named after the probe's *inputs* (`INPUTS` below);
the probe binds them by name, so `def self_similarity(h, word_type)` receives the layer's hidden states
and the word-type labels. Parameters with a default that are not inputs keep their default. An input that is
None for this model or layer (e.g. `masked` without an MLM head, `g` at layer 0) means "not applicable": the
metric is skipped without a row. A ValueError from the function means "undefined here": the row is stored as
NULL with a note (every name of a function that computes several). The value of a name is a float (variant
"all"), None (NULL), or a mapping variant → value.

Scopes: "layer" metrics are computed per layer from that layer's inputs; "snapshot" metrics once per snapshot
(stored at layer 0); "layer_pair" metrics per layer l ≥ 1 from the layer × layer CKA matrix; "series" metrics per
run, after all snapshots: from the step × step CKA matrix of each layer (`cka_steps`, a value per step), or from
the layer's LayerNorm outlier dimensions at every snapshot (`ln_outliers`, a value per step), or from the run's
word-acquisition curves (`acquisition`, one value per run, stored at its last measured step); "group" metrics per
seed group and step shared by its runs, from the runs' stored arrays (`agreement`: seed agreement, stored in the
store's `group_metrics` table, `dynamics.measure.agreement`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Which layers a metric is stored for (L = the last encoder layer; layer 0 = the embedding-layer output).
ALL_LAYERS = "0…L"
CONTEXT_LAYERS = "1…L"  # g = h − e is zero at layer 0
LAST_LAYER = "L"
EMBEDDING_LAYER = "0"

SCOPES = ("layer", "snapshot", "layer_pair", "series", "group")
FAMILIES = ("anchors", "drift", "context", "geometry", "cka_steps", "ln_outliers", "acquisition", "llc", "agreement",
            "attention", "copying")
# The app's pages that show stored metrics (app/views/<page>.py): each registration names the one that shows it.
PAGES = ("anchors", "context", "geometry", "cka", "acquisition", "seeds", "attention")
BINNED = ("all", "frequent", "medium", "rare")  # overall mean and per token-frequency bin (3 bins)
DISTANCES = ("d001", "d002", "…")  # one variant per distance d = 1…max_distance

INPUTS: dict[str, str] = {
    # per layer (scope "layer")
    "layer": "int, the layer index l",
    "h": "Rows (N, H): hidden states h_l of the N content tokens of the probe set",
    "e": "Rows (N, H): embedding-layer output e = h_0 of the same tokens",
    "g": "Rows (N, H): context vectors g_l = h_l − e (None at layer 0)",
    "word_emb": "Rows (N, H): input word-embedding rows E[x_i] (None when their width differs from H)",
    "word_emb_any": "Rows (N, D): E[x_i] whatever its width D (for comparisons through the MLM head)",
    "seq_ids": "Tensor (N,) int64: block of each token",
    "positions": "Tensor (N,) int64: position of each token in its block",
    "word_type": "Tensor (N,) int64: Ethayarajh word type of each token, −1 if not eligible",
    "freq_bin": "ndarray (N,) int64: training-frequency bin of each token",
    "bin_names": "tuple of str: names of the frequency bins",
    "layout": "BlockLayout | None: the tokens on their (block, position) grid",
    "neighbours": "Rows (n, H): the layer's rows on the fixed, seeded neighbour subsample (Gram matrix shared)",
    "seed": "int: the probe's seed",
    "window": "int: TACO's window W (odd)",
    "max_distance": "int: largest distance of the cosine-by-distance curve",
    "tc_draws": "TCDraws | None: the probe's fixed TC-loss anchors, positives and negatives (taco.objectives)",
    "tc_temperature": "float: TC-loss temperature τ",
    "masked": "MaskedPass | None: the masked pass at the last layer (None without an MLM head or mask token)",
    "attention": "HeadSums: the layer's per-head attention sums over the probe set's content queries",
    "bidirectional_attention": "HeadSums | None: the same, None for a causal model (no next-token score)",
    "copy_attention": "CopySums: the layer's per-head attention sums over the copy blocks' second-copy queries",
    "copy_predictions": "CopyPredictions | None: the head's right/wrong on the copy blocks (None without a head)",
    # per snapshot (scope "snapshot")
    "emb_matrix": "ndarray (V, H): the snapshot's input word-embedding matrix",
    "final_matrix": "ndarray (V, H): the final snapshot's input word-embedding matrix",
    "special_ids": "ndarray: ids of the tokenizer's special tokens",
    "probe_tokens": "ndarray (N,) int64: token id of each probe token",
    # layer × layer, step × step (scopes "layer_pair", "series")
    "cka_layers": "ndarray (L+1, L+1): debiased linear CKA between the layers of one snapshot",
    "cka_steps": "ndarray (S, S): debiased linear CKA of one layer between the measured snapshots",
    "norm_weight": "Tensor (H,): the layer's LayerNorm scale γ (None when the layer has no norm)",
    "outlier_masks": "ndarray (S, H) bool: a layer's LayerNorm outlier dimensions at each measured snapshot",
    "word_curves": "WordCurves: a run's per-word-type surprisal curves over its snapshots (word acquisition)",
    # per snapshot, opt-in family `llc`
    "llc_problem": "LLCProblem: the snapshot's parameters and the probe set's own loss (MLM or next-token) by sample",
    "llc_settings": "SGLDSettings: the SGLD estimator's settings (the --llc-* flags)",
    # per seed group and shared step (scope "group")
    "seed_log_probs": "list of ndarray (k, V): each seed's log-probabilities at the fixed subsample of head positions",
    "seed_samples": "list of ndarray (n, H): each seed's CKA sample of one layer (the same probe tokens)",
}


@dataclass(frozen=True)
class Metric:
    """One stored metric name: what it is and the function that computes it."""

    name: str
    family: str
    scope: str
    layers: str
    variants: tuple[str, ...]
    label: str
    definition: str
    unit: str
    fn: Callable[..., Any]
    page: str  # the app page that shows it (one of `PAGES`)

    @property
    def module(self) -> str:
        return self.fn.__module__

    @property
    def function(self) -> str:
        return self.fn.__qualname__

    @property
    def pointer(self) -> str:
        """Dotted path of the function that computed the stored value."""
        return f"{self.module}.{self.function}"

    @property
    def parameters(self) -> list[str]:
        """The inputs the function takes (its parameters that name an input)."""
        return [p for p in inspect.signature(self.fn).parameters if p in INPUTS]

    def applicable(self, inputs: Mapping[str, Any] | Any) -> bool:
        """False when an input the function needs is None for this model or layer."""
        return all(_get(inputs, p) is not None for p in self.parameters)

    @property
    def together(self) -> tuple[str, ...]:
        """The stored names its function computes in one call (this one alone for most)."""
        return tuple(n for n, m in REGISTRY.items() if m.fn is self.fn) or (self.name,)

    def __call__(self, inputs: Mapping[str, Any] | Any) -> Any:
        """This name's value: the function called with its parameters bound by name from `inputs` (a mapping or
        an object); for a function that computes several names, this name's entry of its {name: value}."""
        value = self.fn(**{p: _get(inputs, p) for p in self.parameters})
        return value[self.name] if len(self.together) > 1 else value


def _get(inputs: Mapping[str, Any] | Any, name: str) -> Any:
    return inputs[name] if isinstance(inputs, Mapping) else getattr(inputs, name)


REGISTRY: dict[str, Metric] = {}


class RegistrationError(ValueError):
    """A registration the registry refuses (unknown family, scope or page, a name already registered, parameters
    that are not probe inputs): raised while the registering module is imported."""


def register(name: str, *, family: str, page: str, layers: str, label: str, definition: str, unit: str,
             variants: tuple[str, ...] = ("all",), scope: str = "layer") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as the one that computes metric `name`, shown on app page `page` (see the
    module docstring).

    Stacked registrations on one function declare the names it computes together (it then returns {name: value});
    they must agree on family, scope and layers, since the function is called once for all of them, and are
    listed in the order they are written (decorators apply bottom-up)."""
    if family not in FAMILIES:
        raise RegistrationError(f"{name}: unknown family {family!r}; one of {FAMILIES}")
    if scope not in SCOPES:
        raise RegistrationError(f"{name}: unknown scope {scope!r}; one of {SCOPES}")
    if page not in PAGES:
        raise RegistrationError(f"{name}: unknown page {page!r}; one of {PAGES}")
    if not definition.endswith(".") or "\n" in definition:
        raise RegistrationError(f"{name}: the definition is one sentence ending in a full stop")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in REGISTRY and REGISTRY[name].fn is not fn:
            raise RegistrationError(f"metric {name!r} is already registered by {REGISTRY[name].pointer}")
        unknown = [p for p, spec in inspect.signature(fn).parameters.items()
                   if p not in INPUTS and spec.default is inspect.Parameter.empty]
        if unknown:
            raise RegistrationError(f"{name}: parameters {unknown} of {fn.__qualname__} are not probe inputs (the "
                                    f"inputs: {', '.join(INPUTS)})")
        metric = Metric(name, family, scope, layers, tuple(variants), label, definition, unit, fn, page)
        together = [n for n, m in REGISTRY.items() if m.fn is fn and n != name]
        if together:
            first = REGISTRY[together[0]]
            if (first.family, first.scope, first.layers) != (family, scope, layers):
                raise RegistrationError(f"{name}: {fn.__qualname__} computes {together} in the same call, so it needs "
                                        f"their family, scope and layers ({first.family}, {first.scope}, "
                                        f"{first.layers})")
            # the decorator written above the others is applied after them: it goes first
            items = [(n, m) for n, m in REGISTRY.items() if n != name]
            at = [n for n, _ in items].index(together[0])
            items.insert(at, (name, metric))
            REGISTRY.clear()
            REGISTRY.update(items)
        else:
            REGISTRY[name] = metric
        return fn

    return decorate


def unregister(names: Iterable[str]) -> None:
    """Remove registrations (a user's metric module's, when the probe run that imported it ends; see
    `dynamics.metrics.user`). Built-in names are never removed."""
    for name in names:
        REGISTRY.pop(name, None)


def load() -> dict[str, Metric]:
    """The complete registry, in registration order: the package's `__init__` has imported every module that
    registers metrics before any of its modules, this one included, is used."""
    if list(REGISTRY) != sorted(REGISTRY, key=_family_order):  # by family, then as registered
        ordered = sorted(REGISTRY.items(), key=lambda item: _family_order(item[0]))
        REGISTRY.clear()
        REGISTRY.update(ordered)
    return REGISTRY


def _family_order(name: str) -> tuple[int, int]:
    """By family, then per-layer metrics before those of layer pairs and series (then as registered)."""
    return FAMILIES.index(REGISTRY[name].family), SCOPES.index(REGISTRY[name].scope)


def metrics(family: str | None = None, scope: str | None = None) -> list[Metric]:
    """Registered metrics, in registration order, optionally of one family and/or scope."""
    return [m for m in load().values() if (family is None or m.family == family) and (scope is None or m.scope == scope)]


def get(name: str) -> Metric:
    """The registered metric `name`; KeyError naming the known ones otherwise."""
    reg = load()
    if name not in reg:
        raise KeyError(f"unknown metric {name!r}; registered: {', '.join(reg)}")
    return reg[name]


@dataclass(frozen=True)
class Computation:
    """One registered function and the stored names it computes at once (one name for most functions): what the
    probe's engine calls. Calling it returns {stored name: value}, each value a float, None (NULL) or a mapping
    variant → value (or, for a per-step "series" metric, snapshot index → value)."""

    fn: Callable[..., Any]
    metrics: tuple[Metric, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    @property
    def layers(self) -> str:
        return self.metrics[0].layers

    @property
    def parameters(self) -> list[str]:
        return self.metrics[0].parameters

    def applicable(self, inputs: Mapping[str, Any] | Any) -> bool:
        """False when an input the function needs is None for this model or layer ("not applicable": no row)."""
        return self.metrics[0].applicable(inputs)

    def __call__(self, inputs: Mapping[str, Any] | Any) -> dict[str, Any]:
        value = self.metrics[0].fn(**{p: _get(inputs, p) for p in self.parameters})
        if len(self.metrics) == 1:
            return {self.metrics[0].name: value}
        if set(value) != set(self.names):  # a programming error, not "undefined here"
            raise TypeError(f"{self.fn.__qualname__} returned {sorted(value)}; it computes {list(self.names)}")
        return {n: value[n] for n in self.names}


def computations(family: str, scope: str = "layer") -> list[Computation]:
    """The registered functions of one family and scope, each once with the stored names it computes, in
    registration order."""
    grouped: dict[Callable[..., Any], list[Metric]] = {}
    for m in metrics(family, scope):
        grouped.setdefault(m.fn, []).append(m)
    return [Computation(fn, tuple(ms)) for fn, ms in grouped.items()]


def layer_range(spec: str, last: int) -> range:
    """The layers a registration's `layers` names, for a model whose last layer is `last`."""
    return {ALL_LAYERS: range(0, last + 1), CONTEXT_LAYERS: range(1, last + 1), LAST_LAYER: range(last, last + 1),
            EMBEDDING_LAYER: range(0, 1)}[spec]


def markdown_table() -> str:
    """The table of metrics in docs/metrics.md, generated from the registry."""
    lines = ["| metric | family | page | layers | variants | unit | definition | defined in |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in load().values():
        variants = "/".join(m.variants) if m.variants != ("all",) else "all"
        lines.append(f"| `{m.name}` | {m.family} | {m.page} | {m.layers} | {variants} | {m.unit} | {m.definition} | "
                     f"`{m.pointer}` |")
    return "\n".join(lines) + "\n"

