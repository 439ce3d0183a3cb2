"""The probe's input, found and checked before anything is written: the snapshot series named on the command
line (`dynamics.find.series`, `dynamics.find.hub`), the snapshots selected (`--steps`, `--every`), every check of their files,
the results folder, and the probe set built from the first run. Bad input is a `ProbeError` (one line naming the
path and the fix)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from dynamics.config import ProbeConfig
from dynamics.errors import ProbeError
from dynamics.find import hub
from dynamics.find.series import Series, Snapshot, discover, selection, validate
from dynamics.find.tokens import TokenizerView, load_tokenizer
from dynamics.measure import extract as ex
from dynamics.measure import probe_set as ps
from dynamics.results import store as st

MULTI_RUN_OUT = "dynamics-results"
ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert", "xlm-roberta-xl", "longformer", "mpnet")


def discover_all(paths: Sequence[str | Path], revisions: Sequence[str] | None = None) -> list[Series]:
    """`discover` each path, or `dynamics.find.hub.discover_hub` each Hub model id (`ORG/NAME` that is not an existing
    path) at `revisions`; run names are made unique by prefixing the parent folder's name where they clash.
    `revisions` without a Hub id among `paths` is a `ProbeError` (it would silently mean nothing)."""
    if not paths:
        raise ProbeError("no directories given; pass at least one run directory")
    is_hub = [hub.is_hub_id(p) for p in paths]
    if revisions is not None and not any(is_hub):
        raise ProbeError(f"--revisions {','.join(revisions)}: applies to a Hugging Face model id (ORG/NAME, read from "
                         f"the local Hub cache), but {paths[0]} is a directory; drop --revisions")
    series = [hub.discover_hub(str(p), revisions) if h else discover(p) for p, h in zip(paths, is_hub, strict=True)]
    seen_dirs: dict[Path, str] = {}
    for s in series:
        if s.run_dir in seen_dirs:
            raise ProbeError(f"{s.run_dir}: given twice; pass each run once")
        seen_dirs[s.run_dir] = s.name
    names = [s.name for s in series]
    for s in series:
        if names.count(s.name) > 1:
            s.name = f"{s.run_dir.parent.name}/{s.name}"
            s.snapshots = [Snapshot(x.path, x.step, x.tokens_seen, s.name, x.info) for x in s.snapshots]
    if len({s.name for s in series}) < len(series):
        raise ProbeError(f"{series[0].run_dir}: runs with identical names; rename the folders")
    return series


def max_positions(snapshot: Snapshot) -> int | None:
    """How many positions the model accepts, from its config.json (RoBERTa-likes reserve padding_idx + 1; GPT-2
    names it `n_positions`)."""
    config = json.loads((snapshot.path / "config.json").read_text())
    n = config.get("max_position_embeddings", config.get("n_positions"))
    if not isinstance(n, int):
        return None
    if config.get("model_type") in ROBERTA_LIKE:
        n -= int(config.get("pad_token_id", 1) or 0) + 1
    return n


def architecture_kind(snapshot: Snapshot) -> str | None:
    """`dynamics.measure.extract.architecture_kind` ("encoder" | "causal") of the snapshot's model type, read off its
    config.json without loading the model (the same answer extraction gives); None without a model type."""
    config = snapshot.path / "config.json"
    model_type = json.loads(config.read_text()).get("model_type") if config.is_file() else None
    return ex.architecture_kind(SimpleNamespace(model_type=model_type)) if isinstance(model_type, str) else None


def block_size(first: Series, cfg: ProbeConfig) -> int:
    if cfg.block_size is not None:
        return cfg.block_size
    meta = first.meta.get("block_size")
    if isinstance(meta, int) and meta >= 3:
        return meta
    limit = max_positions(first.snapshots[0])
    return min(128, limit) if limit else 128


def build_probe(first: Series, tok: TokenizerView, cfg: ProbeConfig) -> ps.ProbeSet:
    """The probe set for a run: from `--probe-text` if given, else the run's validation blocks."""
    counts = ps.load_counts(first.data_path("token_counts_path"), len(tok))
    common = dict(probe_blocks=cfg.probe_blocks, max_tokens=cfg.max_tokens, seed=cfg.seed, train_counts=counts,
                  cka_tokens=cfg.cka_tokens, projection_tokens=cfg.projection_tokens, copy_blocks_n=cfg.copy_blocks,
                  copy_length=cfg.copy_length)
    if cfg.probe_text:
        return ps.build(tok, text_path=Path(cfg.probe_text), block_size=block_size(first, cfg), **common)
    blocks_path = first.data_path("validation_blocks_path")
    if blocks_path is None:
        raise ProbeError(f"{first.run_dir}: no validation blocks (run.json names none); pass --probe-text FILE")
    return ps.build(tok, blocks=ps.load_blocks(blocks_path), source=f"validation:{first.name}", **common)


def check_positions(selected: dict[str, list[Snapshot]], block: int) -> None:
    for snaps in selected.values():
        if snaps:
            limit = max_positions(snaps[0])
            if limit is not None and block > limit:
                raise ProbeError(f"{snaps[0].path}: the model accepts {limit} positions but probe blocks have {block}; "
                                 f"use --probe-text FILE --block-size {limit}")


def output_dir(cfg: ProbeConfig, series_list: list[Series]) -> Path:
    """`--out`, else `DIR/dynamics` for one run, else `./dynamics-results` (also for a Hub model: its cache
    folder is huggingface_hub's, not ours to write in)."""
    if cfg.out:
        return Path(cfg.out).expanduser()
    if len(series_list) == 1 and series_list[0].kind != "hub":
        return series_list[0].run_dir / "dynamics"
    return Path.cwd() / MULTI_RUN_OUT


@dataclass
class Checked:
    """What the input checks found, before anything is written; with `done` (what the store holds, less what is
    stale) it is rank 0's plan for the other processes of a torchrun group (`tok` stays on rank 0)."""

    series_list: list[Series]
    selected: dict[str, list[Snapshot]]
    no_drift: dict[str, str]  # run → why its anchor drift cannot be measured
    out: Path
    probe: ps.ProbeSet
    id_to_token: list[str]
    tok: TokenizerView | None = None
    done: dict[tuple[str, int, str], str] = field(default_factory=dict)


def check(dirs: Sequence[str | Path], cfg: ProbeConfig) -> Checked:
    """Every check of the input, and the probe set; writes nothing (`ProbeError` on bad input)."""
    series_list = discover_all(dirs, revisions=cfg.revisions)
    selected = selection(series_list, cfg.steps, cfg.every)
    validate(series_list, selected)
    # The final snapshot is read for anchor drift even when not selected: when it is unreadable and left out with
    # --steps, the other families are still measured and drift is skipped with a note.
    no_drift: dict[str, str] = {}
    for s in series_list:
        if s.final not in selected[s.name]:
            try:
                validate([s], {s.name: [s.final]})
            except ProbeError as exc:
                no_drift[s.name] = f"anchor drift not measured for {s.name}: its final snapshot is unreadable ({exc})"
    out = output_dir(cfg, series_list)
    st.check_ours(st.resolve(out))  # a file in the way, or a database that is not ours: refuse before any work
    first = series_list[0]
    tok = load_tokenizer(first.tokenizer_path)
    probe = build_probe(first, tok, cfg)
    check_positions(selected, probe.block_size)
    if cfg.probe_text is None and first.data_path("validation_blocks_path") is not None:
        check_positions({first.name: first.snapshots[:1]}, probe.block_size)
    return Checked(series_list, selected, no_drift, out, probe, tok.id_to_token(), tok)
