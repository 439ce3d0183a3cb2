"""`python -m experiments.figures_causal`: the induction-head figure of a causal-LM snapshot series.

Reads a run written by `experiments.causal_lm` (its `log.jsonl` training losses) and the probe's store over it
(`dynamics.probe RUN --metrics ...,attention,copying`), and draws, against the training step: `induction_max` and
`dup_token_max` per layer, `attn_prev_token_max` per layer, `repeat_copy_accuracy` on the first copy (the chance
baseline) and the second (copyable), the per-head induction score of the layer that ends highest, and the losses.
With `--heldout-blocks N` (N > 0) the snapshots themselves are run on N of the run's validation blocks for the
held-out next-token loss and the in-context learning score of Olsson et al. (2022): the mean loss on the last 16
positions of a block minus that on 16 positions starting at an eighth of the block (negative: later tokens are
predicted better, using the context). `--mark-onset METRIC` (one of the per-layer metrics drawn) puts a dotted
vertical line in every panel at that metric's onset in the layer where it changes most (`dynamics.results.onsets`:
the first snapshot past half of the curve's change from step 0). Matplotlib's object API on the Agg canvas.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.cli import Parser, option
from common.errors import UsageError
from common.files import replacing
from common.run_dir import RunDir

PROG = "python -m experiments.figures_causal"
ONSET_METRICS = ("induction_max", "dup_token_max", "attn_prev_token_max")
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


@dataclass
class FigureConfig:
    run: str = option("", "run folder of experiments.causal_lm (log.jsonl, snapshots/, data/)")
    store: str = option("", "the probe's store folder (default: RUN/dynamics)")
    out: str = option("docs/figures/causal_induction.png", "PNG to write")
    xscale: str = option("symlog", "x axis: linear or symlog (log above step 1, linear below)")
    heldout_blocks: int = option(64, "validation blocks run through every snapshot for the held-out loss and the "
                                     "in-context learning score; 0 skips them")
    mark_onset: str = option("", "mark the onset (first snapshot past half of the change) of this metric, "
                                 f"one of {', '.join(ONSET_METRICS)}, in the layer where it changes most")
    title: str = option("", "figure title (default: none)")


def _curve(df: Any, metric: str, variant: str | None = None, layer: int | None = None) -> tuple[Any, Any]:
    part = df[df.metric == metric]
    if variant is not None:
        part = part[part.variant == variant]
    if layer is not None:
        part = part[part.layer == layer]
    part = part.dropna(subset=["value"]).sort_values("step")
    return part.step.to_numpy(), part.value.to_numpy()


def heldout(run: Path, steps: Sequence[int], n_blocks: int) -> dict[str, np.ndarray]:
    """Held-out next-token loss and in-context learning score of each snapshot at `steps`, on the first
    `n_blocks` of the run's stored validation blocks."""
    import torch
    from transformers import GPT2LMHeadModel

    blocks = torch.from_numpy(np.load(run / "data" / "validation_blocks.npy")[:n_blocks].astype(np.int64))
    length = blocks.shape[1]
    early = slice(length // 8, length // 8 + 16)
    losses, icl = [], []
    for step in steps:
        model = GPT2LMHeadModel.from_pretrained(RunDir(run).snapshot_path(step)).eval()
        with torch.no_grad():
            per_pos = []
            for batch in blocks.split(16):
                logits = model(input_ids=batch).logits[:, :-1].float()
                nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")
                per_pos.append(nll)
            nll = torch.cat(per_pos).mean(0).numpy()  # (length - 1,) mean over blocks, target position t + 1
        losses.append(float(nll.mean()))
        icl.append(float(nll[-16:].mean() - nll[early].mean()))
    return {"loss": np.array(losses), "icl": np.array(icl)}


def draw(cfg: FigureConfig) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from dynamics.results import store as store_mod
    from dynamics.results.heads import head_series
    from dynamics.results.onsets import onset_step

    run = Path(cfg.run)
    if not cfg.run or not RunDir(run).log_path.is_file():
        raise UsageError(f"--run {cfg.run!r}: no log.jsonl there; pass an experiments.causal_lm run folder")
    if cfg.xscale not in ("linear", "symlog"):
        raise UsageError(f"--xscale {cfg.xscale!r}: choose linear or symlog")
    if cfg.mark_onset and cfg.mark_onset not in ONSET_METRICS:
        raise UsageError(f"--mark-onset {cfg.mark_onset!r}: choose one of {', '.join(ONSET_METRICS)}")
    store_dir = Path(cfg.store) if cfg.store else run / "dynamics"
    if not (store_dir / "results.sqlite").is_file():
        raise UsageError(f"--store {store_dir}: no results.sqlite; run python -m dynamics.probe {run} first")
    with store_mod.open(store_dir, readonly=True) as st:
        names = st.runs()["name"].tolist()
        if len(names) != 1:
            raise UsageError(f"--store {store_dir} holds {len(names)} runs; pass a store of this run alone")
        df = st.metrics(["induction_max", "dup_token_max", "attn_prev_token_max", "repeat_copy_accuracy"])
        heads = head_series(st, names[0], "induction")
    if df.empty:
        raise UsageError(f"--store {store_dir}: no copying/attention rows; probe with --metrics ...,attention,copying")
    train = np.array([(r["step"], r["loss"]) for r in RunDir(run).log().rows
                      if r.get("loss") is not None and "split" not in r], dtype=float).reshape(-1, 2)
    layers = sorted(int(v) for v in df[df.metric == "induction_max"].layer.unique())

    fig = Figure(figsize=(13, 7.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots(2, 3, sharex=True).ravel()
    for i, layer in enumerate(layers):
        c = COLOURS[i % len(COLOURS)]
        ax[0].plot(*_curve(df, "induction_max", layer=layer), "o-", ms=3, color=c, label=f"induction, layer {layer}")
        ax[0].plot(*_curve(df, "dup_token_max", layer=layer), "--", color=c, alpha=0.6, label=f"dup-token, layer {layer}")
        ax[1].plot(*_curve(df, "attn_prev_token_max", layer=layer), "o-", ms=3, color=c, label=f"layer {layer}")
    start = _curve(df, "induction_max", layer=layers[0])[1][0]
    ax[0].axhline(start, ls=":", color="grey", label="step 0 (near-uniform attention)")
    ax[0].set_title("best head's induction / duplicate-token score")
    ax[1].set_title("best head's previous-token score (probe text)")
    for variant, c in (("second", COLOURS[0]), ("first", "grey")):
        ax[2].plot(*_curve(df, "repeat_copy_accuracy", variant=variant), "o-", ms=3, color=c,
                   label=f"{variant} copy" + (" (chance baseline)" if variant == "first" else ""))
    ax[2].set_title("next-token accuracy on r r (copying)")
    if heads is not None:
        top = int(np.nanargmax(heads.values[-1].max(axis=1)))
        for h in range(heads.values.shape[2]):
            ax[3].plot(heads.steps, heads.values[:, top, h], "o-", ms=2, color=COLOURS[h % len(COLOURS)],
                       label=f"L{top + 1}H{h}")
        ax[3].set_title(f"induction score per head, layer {top + 1}")
    ax[4].plot(train[:, 0], train[:, 1], color="grey", lw=0.8, label="training loss (logged)")
    ax[4].set_title("next-token loss (nats)")
    steps = sorted(int(s) for s in df.step.unique())
    if cfg.heldout_blocks > 0:
        held = heldout(run, steps, cfg.heldout_blocks)
        ax[4].plot(steps, held["loss"], "o-", ms=3, color=COLOURS[1], label=f"held-out ({cfg.heldout_blocks} blocks)")
        ax[5].plot(steps, held["icl"], "o-", ms=3, color=COLOURS[1])
        ax[5].axhline(0, color="grey", lw=0.6)
        ax[5].set_title("in-context learning score (late − early loss)")
    else:
        ax[5].set_visible(False)
    onset = None
    if cfg.mark_onset:
        def change(layer: int) -> float:
            values = _curve(df, cfg.mark_onset, layer=layer)[1]
            return abs(values[-1] - values[0]) if len(values) else 0.0
        best = max(layers, key=change)
        onset = onset_step(*_curve(df, cfg.mark_onset, layer=best))
    if onset is not None:
        for i, a in enumerate(ax):
            a.axvline(onset, ls=":", color="black", lw=1,
                      label=f"onset of {cfg.mark_onset}, layer {best}: step {onset}" if i == 0 else None)
    if cfg.title:
        fig.suptitle(cfg.title, fontsize=10)
    for a in ax[:4]:  # shares: from 0, at least to 0.1, so that noise around chance does not look like a rise
        a.set_ylim(0, max(0.1, 1.1 * a.get_ylim()[1]))
    ax[0].set_xscale(cfg.xscale, **({"linthresh": 1} if cfg.xscale == "symlog" else {}))
    ax[0].set_xlim(0, max(steps))
    for a in ax:
        if a in ax[3:]:
            a.set_xlabel("training step")
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    out = Path(cfg.out)
    with replacing(out) as tmp:  # written whole or not at all (the folder made if missing)
        fig.savefig(tmp, dpi=110)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(FigureConfig, prog=PROG, description=__doc__.split("\n\n")[0].replace("`", ""))
    (cfg,) = parser.parse(list(argv) if argv is not None else None)
    try:
        out = draw(cfg)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
