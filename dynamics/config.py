"""The probe's settings: one dataclass; `common.cli.Parser` makes its flags (help from the field metadata).

Precedence: dataclass defaults < `--config FILE` (JSON or YAML, keys spelled like the fields or the flags) <
flags given on the command line.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.cli import DEVICES, option, resolve_device
from common.errors import UsageError
from dynamics.errors import ProbeError

FAMILIES = ("anchors", "context", "geometry", "attention", "copying", "llc")
# Measured unless --metrics says otherwise; attention, copying and llc (SGLD chains at every snapshot) are opt-in
# (docs/design.md, "Measurements").
DEFAULT_FAMILIES = ("anchors", "context", "geometry")


@dataclass
class ProbeConfig:
    """Everything `dynamics.probe.run` needs besides the directories."""

    out: str | None = option(None, "output folder for results.sqlite, arrays/, figures/ and report.md "
                                 "(default: DIR/dynamics for one directory; ./dynamics-results for several or "
                                 "for a Hub model id)")
    steps: list[int] | None = option(None, "measure only these steps, comma-separated, e.g. 0,100,1000")
    every: int | None = option(None, "measure only steps that are multiples of K (the final snapshot is always kept)")
    metrics: list[str] = option(list(DEFAULT_FAMILIES), "metric families, comma-separated, from "
                                "anchors,context,geometry (the default) and attention,copying (attention maps, "
                                "induction heads; opt-in), llc (the SGLD local learning coefficient; opt-in, "
                                "minutes per snapshot)")
    device: str = option("cpu", f"where the snapshots run: {DEVICES} (auto: cuda when available, else mps, else "
                                "cpu); under torchrun each process takes cuda:LOCAL_RANK for cuda, or cores / N "
                                "CPU threads for cpu")
    batch_size: int = option(16, "probe blocks per forward pass")
    max_tokens: int | None = option(None, "cap on the probe set's size in tokens (whole blocks are kept)")
    probe_text: str | None = option(None, "measure on this UTF-8 text file (documents split at blank lines) instead "
                                        "of the run's validation blocks; required when run.json names none")
    probe_blocks: int = option(64, "number of probe blocks drawn (seeded) from the validation split or the text")
    block_size: int | None = option(None, "block length for --probe-text (default: the run's block_size, else 128)")
    seed: int = option(0, "seed for the probe set (blocks, masked positions, token samples) and TC-loss draws")
    force: bool = option(False, "recompute results that are already stored")
    figures: bool = option(True, "write figures/*.png")
    progress: bool = option(True, "show a progress bar")
    window: int = option(5, "odd window W for within-window context alignment and the TC loss")
    tc_negatives: int = option(50, "negatives per anchor for the probe-set TC loss")
    tc_temperature: float = option(0.07, "temperature for the probe-set TC loss")
    max_distance: int = option(8, "largest distance for the context cosine-by-distance curve")
    cka_tokens: int = option(1024, "tokens kept per layer and snapshot for CKA across layers and snapshots")
    projection_tokens: int = option(2000, "tokens in the fixed sample projected to 2-D for the app")
    follow: bool = option(False, "keep measuring the runs' snapshots as taco.train writes them, and stop after "
                          "each run's final step (run.json's max_steps); waits for a run that has not started yet")
    follow_timeout: float = option(1800.0, "with --follow: stop after this many seconds without a new snapshot "
                                   "(training killed and not resumed); 0 waits for ever")
    revisions: list[str] | None = option(None, "for a Hugging Face model id given as DIR (ORG/NAME, not a folder): "
                                         "the revisions to read from the local Hub cache, e.g. step1000,step2000, "
                                         "or all (every cached stepN revision); never downloads (default: main)")
    neighbour_tokens: int = option(2048, "seeded subsample for the neighbour- and pair-based estimators (TwoNN, "
                                       "uniformity)")
    copy_blocks: int = option(16, "synthetic repeated blocks r r of the copying family (the same for every snapshot)")
    copy_length: int = option(32, "length T of one copy r in the copying family's blocks (capped to fit a probe block)")
    metrics_module: list[str] | None = option(None, "your own metrics: a .py file or a module name (package.module) "
                                              "that registers them with dynamics.metrics.register; repeatable or "
                                              "comma-separated (see docs/examples/my_metric.py)")
    agreement_positions: int = option(256, "seed agreement: a fixed, seeded subsample of the masked (causal: target) "
                                      "positions whose output distributions the anchors family stores per snapshot, "
                                      "for the JSD between seeds of a seed group; 0 stores none")
    llc_step_size: float = option(1e-4, "llc: SGLD step size ε")
    llc_gamma: float = option(100.0, "llc: localisation strength γ of the (γ/2)‖w − w*‖² term")
    llc_nbeta: float | None = option(None, "llc: inverse temperature nβ (default n / log n, n = the probe set's "
                                     "masked or target positions)")
    llc_chains: int = option(4, "llc: SGLD chains per snapshot")
    llc_draws: int = option(100, "llc: draws per chain after burn-in")
    llc_burn_in: int = option(50, "llc: SGLD steps per chain before the draws")
    llc_batch_size: int = option(8, "llc: probe blocks per SGLD minibatch")
    llc_seed: int = option(0, "llc: seed of the minibatches and the Langevin noise")

    def validate(self) -> ProbeConfig:
        """Raise `ProbeError` naming the flag for any value out of range; return self."""
        bad = [m for m in self.metrics if m not in FAMILIES]
        if bad or not self.metrics:
            raise ProbeError(f"--metrics {','.join(self.metrics)}: choose from {','.join(FAMILIES)}")
        positive = {"llc_chains": self.llc_chains, "llc_draws": self.llc_draws, "llc_batch_size": self.llc_batch_size,
                    "batch_size": self.batch_size, "probe_blocks": self.probe_blocks, "cka_tokens": self.cka_tokens,
                    "copy_blocks": self.copy_blocks, "copy_length": self.copy_length,
                    "projection_tokens": self.projection_tokens, "tc_negatives": self.tc_negatives,
                    "max_distance": self.max_distance, "neighbour_tokens": self.neighbour_tokens}
        for name, value in positive.items():
            if value < 1:
                raise ProbeError(f"{flag(name)} {value}: must be at least 1")
        for name in ("every", "max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ProbeError(f"{flag(name)} {value}: must be at least 1")
        if self.block_size is not None and self.block_size < 3:
            raise ProbeError(f"--block-size {self.block_size}: must be at least 3 ([CLS] + text + [SEP])")
        if self.window < 3 or self.window % 2 == 0:
            raise ProbeError(f"--window {self.window}: must be an odd number ≥ 3")
        if self.follow_timeout < 0:
            raise ProbeError(f"--follow-timeout {self.follow_timeout}: must be ≥ 0 seconds (0 waits for ever)")
        if self.follow and (self.steps is not None or self.every is not None):
            raise ProbeError("--follow measures every snapshot as it arrives; drop --steps/--every")
        if self.revisions is not None:
            if not self.revisions or any(not r or r != r.strip() for r in self.revisions):
                raise ProbeError(f"--revisions {','.join(self.revisions)}: name at least one revision, e.g. "
                                 "step1000,step2000 (or all)")
            if "all" in self.revisions and len(self.revisions) > 1:
                raise ProbeError(f"--revisions {','.join(self.revisions)}: all already means every cached stepN "
                                 "revision; pass all alone or name the revisions")
            if self.follow:
                raise ProbeError("--follow watches run directories as taco.train writes them; drop --revisions")
        if self.agreement_positions < 0 or self.llc_burn_in < 0:
            name = "agreement_positions" if self.agreement_positions < 0 else "llc_burn_in"
            raise ProbeError(f"{flag(name)} {getattr(self, name)}: must be ≥ 0")
        for name in ("llc_step_size", "llc_gamma", "llc_nbeta"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ProbeError(f"{flag(name)} {value}: must be positive")
        if self.tc_temperature <= 0:
            raise ProbeError(f"--tc-temperature {self.tc_temperature}: must be positive")
        if self.steps is not None and any(s < 0 for s in self.steps):
            raise ProbeError(f"--steps {','.join(map(str, self.steps))}: steps are non-negative")
        resolved_device(self)
        return self


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def resolved_device(cfg: ProbeConfig) -> str:
    """`common.cli.resolve_device` of `--device` (ProbeError for an unknown or unavailable device)."""
    try:
        return resolve_device(cfg.device)
    except UsageError as exc:
        raise ProbeError(str(exc)) from None
