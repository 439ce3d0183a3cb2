"""Training configuration: one dataclass; its flags, help and `--config FILE` come from `common.cli.Parser`."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from common.cli import Parser, option, resolve_device
from common.errors import UsageError
from taco.errors import TacoError
from taco.presets import PRESETS


@dataclass
class TrainConfig:
    """Everything a run depends on. Saved resolved into `run.json`."""

    output_dir: str = option("", "Run directory. Default: runs/<objective>-<preset>.")
    objective: str = option("mlm", "Pre-training objective: mlm, or taco (MLM + lambda * token-alignment loss).",
                          choices=["mlm", "taco"])
    preset: str = option("mini", "Model size preset.", choices=list(PRESETS))
    model_overrides: str = option("", "JSON object of BertConfig fields that override the preset, "
                                    "e.g. '{\"hidden_dropout_prob\": 0.0}'.")
    corpus: str = option("builtin", "Training text: 'builtin' (prepared from package registries), a .txt file, "
                                  "a directory of .txt, a .jsonl with a 'text' field, or a saved datasets dataset.")
    tokenizer: str = option("", "Path to a saved Hugging Face fast tokenizer. Default: train a WordPiece "
                              "tokenizer on the training split (cached).")
    vocab_size: int = option(8192, "Vocabulary size of a newly trained tokenizer.")
    block_size: int = option(128, "Tokens per training block, [CLS] and [SEP] included.")
    batch_size: int = option(32, "Blocks per micro-batch on each process.")
    grad_accum: int = option(1, "Micro-batches accumulated per optimizer step.")
    max_steps: int = option(300, "Optimizer steps to train.")
    lr: float = option(5e-4, "Peak learning rate of AdamW.")
    warmup_fraction: float = option(0.06, "Fraction of max_steps spent in linear warm-up before linear decay to 0.")
    warmup_steps: int = option(0, "Linear warm-up steps; when > 0 it overrides --warmup-fraction (the released "
                                "TACO scripts give 2500).")
    weight_decay: float = option(0.01, "AdamW weight decay (not applied to biases and LayerNorm weights).")
    adam_beta1: float = option(0.9, "AdamW beta1.")
    adam_beta2: float = option(0.98, "AdamW beta2.")
    adam_eps: float = option(1e-6, "AdamW epsilon.")
    max_grad_norm: float = option(1.0, "Gradient clipping threshold on the global L2 norm (0 disables).")
    mlm_probability: float = option(0.15, "Fraction of content tokens selected for MLM (80%% [MASK], 10%% random, 10%% kept).")
    tc_window: int = option(5, "TACO window W (odd, >= 3): the positive lies within (W-1)/2 positions of the anchor.")
    tc_negatives: int = option(50, "TACO negatives K per anchor, drawn from other sequences of the batch.")
    tc_temperature: float = option(0.07, "TACO InfoNCE temperature tau.")
    tc_weight: float = option(1.0, "TACO loss weight lambda in L = L_MLM + lambda * L_TC.")
    tc_anchors: str = option("all", "Which positions are TACO anchors.", choices=["all", "masked", "unmasked"])
    tc_global_negatives: bool = option(True, "Under multi-process training, draw negatives from all ranks' "
                                           "(detached) context vectors.")
    tc_negative_sharing: str = option("anchor", "TACO negatives: K draws per anchor (anchor, the released code), or "
                                    "K draws per sequence shared by its anchors (sequence: the same expected loss "
                                    "and gradient, a batched product on GPUs, more variance over draws).",
                                    choices=["anchor", "sequence"])
    tc_kernel: str = option("auto", "Kernel for the TACO negatives' cosines (same values, speed differs): auto "
                                  "(taco.objectives.AUTO_METHOD per device; batched for shared negatives), "
                                  "sparse, sparse_bag, gather, or batched (needs --tc-negative-sharing sequence).",
                          choices=["auto", "sparse", "sparse_bag", "gather", "batched"])
    freeze_embeddings: bool = option(False, "Keep the word-embedding matrix (tied to the MLM output layer) fixed "
                                   "at its initial value (random, or --init-embeddings).")
    init_embeddings: str = option("", "Snapshot or run directory whose word-embedding matrix initialises this "
                                "model's (same preset and tokenizer: pass that run's --tokenizer).")
    seed: int = option(42, "Seed for initialisation, data order, masking, sampling and dropout.")
    snapshot_every: int = option(100, "Write a snapshot every N steps (plus step 0 and the final step).")
    snapshot_log_spaced: bool = option(True, "Also snapshot at steps 1, 2, 4, 8, ... below snapshot_every.")
    log_every: int = option(10, "Write a log.jsonl row every N steps.")
    eval_blocks: int = option(64, "Validation blocks scored at each snapshot.")
    data_cache: str = option("", "Cache root for the built-in corpus (corpus/builtin/), trained tokenizers "
                               "(tokenizers/) and packed token blocks (blocks/). Default: $TACO_DYNAMICS_CACHE, else "
                               "$XDG_CACHE_HOME/taco-dynamics, else ~/.cache/taco-dynamics; the same from any "
                               "directory.")
    device: str = option("auto", "Device: cpu, cuda, cuda:N, mps, or auto (cuda when available, else mps, else "
                               "cpu). Under torchrun each process uses cuda:LOCAL_RANK.")
    precision: str = option("fp32", "Compute precision; bf16 autocast is for GPUs.", choices=["fp32", "bf16"])
    resume: bool = option(False, "Continue the run in output_dir from its state/ (same config required).")
    overwrite: bool = option(False, "Delete whatever run output_dir holds and start again.")
    dry_run: bool = option(False, "Run one optimizer step and one snapshot, then stop (checks the set-up).")
    progress: bool = option(True, "Show a progress bar.")

    def resolved(self) -> TrainConfig:
        out = dataclasses.replace(self)
        if not out.output_dir:
            out.output_dir = f"runs/{out.objective}-{out.preset}"
        if out.dry_run:
            out.max_steps = 1
        return out

    def validate(self) -> None:
        """Raise `TacoError` for values that cannot work, naming the flag to fix."""
        if self.tc_window < 3 or self.tc_window % 2 == 0:
            raise TacoError(f"--tc-window must be odd and >= 3 (got {self.tc_window}); try 5")
        if self.tc_negatives < 1:
            raise TacoError(f"--tc-negatives must be >= 1 (got {self.tc_negatives}); try 50")
        if self.tc_kernel == "batched" and self.tc_negative_sharing != "sequence":
            raise TacoError("--tc-kernel batched needs --tc-negative-sharing sequence; use --tc-kernel auto")
        if self.warmup_steps < 0 or not 0 <= self.warmup_fraction <= 1:
            raise TacoError(f"--warmup-steps must be >= 0 (got {self.warmup_steps}) and --warmup-fraction in "
                            f"[0, 1] (got {self.warmup_fraction})")
        if self.tc_temperature <= 0:
            raise TacoError(f"--tc-temperature must be > 0 (got {self.tc_temperature}); try 0.07")
        if self.block_size < 8:
            raise TacoError(f"--block-size must be >= 8 (got {self.block_size})")
        if self.block_size > 512:
            raise TacoError(
                f"--block-size {self.block_size} is above the model's position limit of 512; use <= 512"
            )
        for name in ("batch_size", "grad_accum", "max_steps", "snapshot_every", "log_every", "vocab_size"):
            if getattr(self, name) < 1:
                raise TacoError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(self, name)})")
        if not 0 < self.mlm_probability < 1:
            raise TacoError(f"--mlm-probability must be in (0, 1) (got {self.mlm_probability})")
        if self.resume and self.overwrite:
            raise TacoError("--resume and --overwrite contradict each other; pass one")
        for name in ("lr", "adam_eps"):
            if not getattr(self, name) > 0:
                raise TacoError(f"--{name.replace('_', '-')} must be > 0 (got {getattr(self, name)})")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise TacoError(f"--{name.replace('_', '-')} must be in [0, 1) (got {getattr(self, name)}); "
                                "try 0.9 / 0.98")
        for name in ("weight_decay", "max_grad_norm", "tc_weight"):
            if not getattr(self, name) >= 0:
                raise TacoError(f"--{name.replace('_', '-')} must be >= 0 (got {getattr(self, name)})")
        if self.eval_blocks < 1:
            raise TacoError(f"--eval-blocks must be >= 1 (got {self.eval_blocks})")
        from taco.presets import build_config

        build_config(self.preset, self.vocab_size, overrides=self.model_overrides_dict())  # overrides checked
        self.resolved_device()

    def resolved_device(self) -> str:
        """The device by `common.cli.resolve_device` (TacoError for an unknown or unavailable one)."""
        try:
            return resolve_device(self.device)
        except UsageError as exc:
            raise TacoError(str(exc)) from None

    def model_overrides_dict(self) -> dict[str, Any]:
        if not self.model_overrides:
            return {}
        try:
            value = json.loads(self.model_overrides)
        except json.JSONDecodeError as exc:
            raise TacoError(f"--model-overrides is not valid JSON ({exc.msg}); pass e.g. '{{\"num_hidden_layers\": 2}}'") from None
        if not isinstance(value, dict):
            raise TacoError("--model-overrides must be a JSON object, e.g. '{\"num_hidden_layers\": 2}'")
        return value

    def warmup(self) -> int:
        """Warm-up steps of the learning-rate schedule: `warmup_steps` if > 0, else warmup_fraction × max_steps."""
        return self.warmup_steps if self.warmup_steps > 0 else int(round(self.warmup_fraction * self.max_steps))

    # Fields that may differ between a run and its resumption without changing its trajectory (the TC kernel
    # changes the cosines' rounding only).
    RUNTIME_ONLY = ("resume", "overwrite", "progress", "device", "dry_run", "data_cache", "tc_kernel")
    # Where things are, not what they are: a run's folder, and the paths of its corpus, tokenizer and initial
    # embeddings, may be spelled differently when it resumes (relative to another folder, after a move or copy).
    # What they hold is checked instead: the corpus by its fingerprint, the tokenizer by its hash (run.json), the
    # initial embeddings by the state (they are part of its weights); only whether embeddings were given counts.
    LOCATIONS = ("output_dir", "corpus", "tokenizer", "init_embeddings")
    # Fields added after runs were written: at their default they are left out of the state digest, and a
    # run.json without them reads as their default, so those runs still resume.
    ADDED_LATER = ("warmup_steps", "tc_negative_sharing", "tc_kernel")

    def identity(self) -> dict[str, Any]:
        """What makes a run this run (`identity_of` this config): what its state digest hashes."""
        return self.identity_of(dataclasses.asdict(self))

    @classmethod
    def identity_of(cls, config: dict[str, Any]) -> dict[str, Any]:
        """The fields of a config (a run.json's, or this one's) that determine the trajectory: runtime switches,
        `max_steps` (a run may be extended) and the `LOCATIONS` left out — except whether initial embeddings were
        given — and later-added fields at their default left out (a field a run.json lacks reads as its default).
        The same for a run wherever it lives and however its paths are spelled."""
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        full = {name: config.get(name, default) for name, default in defaults.items()}
        out = {k: v for k, v in full.items() if k not in cls.RUNTIME_ONLY + ("max_steps",) + cls.LOCATIONS
               and not (k in cls.ADDED_LATER and v == defaults[k])}
        out["init_embeddings"] = bool(full["init_embeddings"])
        return out

    def legacy_digest_fields(self, saved: dict[str, Any]) -> dict[str, Any]:
        """The fields the state digest of a run written before `identity` hashed — all but the runtime switches and
        max_steps, its paths spelled as its run.json `saved` records them — so that such a state still resumes."""
        return {k: v for k, v in {**self.digest_fields(), **{k: saved[k] for k in self.LOCATIONS if k in saved}}.items()
                if k not in self.RUNTIME_ONLY + ("max_steps",)}

    def digest_fields(self) -> dict[str, Any]:
        """The config with later-added fields at their default left out."""
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        return {k: v for k, v in dataclasses.asdict(self).items()
                if not (k in self.ADDED_LATER and v == defaults[k])}


def build_parser() -> Parser:
    return Parser(TrainConfig, prog="python -m taco.train",
                  description="Pre-train a BERT-style encoder from scratch with MLM or TACO and write a snapshot "
                              "series (DESIGN.md run-directory format). Runs under torchrun for multi-process "
                              "training.")


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """The training config from defaults < `--config FILE` < flags (exits 2 with one line on a usage error)."""
    (cfg,) = build_parser().parse(argv)
    return cfg
