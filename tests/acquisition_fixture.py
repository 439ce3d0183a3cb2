"""A results store with word acquisition in it, built by the real probe: two tiny runs (MLM and "TACO"-labelled,
`tests.integration.conftest.build_tiny_run`) with log-spaced snapshots up to step 64 — enough points for the
per-word sigmoids to fit — and a third run whose snapshots carry no MLM head (the encoder alone, re-saved as
`BertModel`), which therefore has no masked surprisal and no word acquisition. Anchors family only (the one word
acquisition needs), so the build takes about 40 s on two cores.

The runs share one tokenizer whose vocabulary is fixed by a rule written here (`fixed_tokenizer`), not learned by
the `tokenizers` WordPiece trainer, whose token ids and tie-breaks follow hash-map order and so change from process
to process: the same code writes the same runs, snapshots and stored values in every process.

Used by the app's page tests (`tests/app/conftest.py`), the report/figure tests (`tests/integration`) and the
reference suite's word-acquisition case (`tests/reference/conftest.py`).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

STEPS = (0, 1, 2, 4, 8, 16, 32, 64)
RUNS = ("mlm-acq", "taco-acq")
HEADLESS = "headless-acq"
HEADLESS_STEPS = (0, 64)
VOCAB_SIZE = 600
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0–4, as in the test runs' trained tokenizers


def build(root: Path, *, figures: bool = True) -> Path:
    """Write ROOT/{mlm-acq, taco-acq, headless-acq} and probe them into ROOT/dynamics (report and, with
    `figures`, the figures too); returns ROOT/dynamics."""
    from dynamics import probe
    from tests.integration.conftest import build_tiny_run, one_torch_thread

    tokenizer = training_tokenizer(root / "tokenizer")
    with one_torch_thread():
        mlm = build_tiny_run(root / RUNS[0], objective="mlm", steps=STEPS, seed=3, tokenizer_dir=tokenizer)
        taco = build_tiny_run(root / RUNS[1], objective="taco", steps=STEPS, seed=4, tokenizer_dir=tokenizer)
        headless = _without_head(mlm, root / HEADLESS)
        probe.run([mlm, taco, headless], out=root / "dynamics", metrics=["anchors"], probe_blocks=24, seed=2,
                  progress=False, figures=figures)
    return root / "dynamics"


def training_tokenizer(out: Path, vocab_size: int = VOCAB_SIZE) -> Path:
    """`fixed_tokenizer` of the documents `build_tiny_run` trains on (its training split of `english_docs`)."""
    from tests.integration.conftest import english_docs

    return fixed_tokenizer([d for i, d in enumerate(english_docs()) if i % 5], vocab_size, out)


def fixed_tokenizer(docs: Sequence[str], vocab_size: int, out: Path) -> Path:
    """An uncased WordPiece tokenizer saved as `BertTokenizerFast` at `out`, like the test runs' trained one but
    with a vocabulary fixed by rule, so that it is the same in every process: the special tokens, then every
    character of the documents' words, word-initial and as a "##" continuation (code point order), then the
    most frequent whole words (count ≥ 2, ties in code point order) up to `vocab_size` entries. Words are those of
    BERT's normaliser (lower case) and pre-tokeniser; a word outside the vocabulary is spelled in characters."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for doc in docs:
        counts.update(word for word, _ in pre.pre_tokenize_str(normalizer.normalize_str(doc)))
    chars = sorted({c for word in counts for c in word})
    vocab = [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars)]
    if len(vocab) > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is below the {len(vocab)} special tokens and characters")
    known = set(vocab)
    frequent = sorted((w for w, n in counts.items() if n >= 2 and len(w) > 1 and w not in known),
                      key=lambda w: (-counts[w], w))
    vocab += frequent[: vocab_size - len(vocab)]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))])
    fast = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]", do_lower_case=True)
    fast.save_pretrained(str(out))
    return out


def _without_head(run: Path, out: Path) -> Path:
    """A copy of `run` (steps `HEADLESS_STEPS` only) whose snapshots hold the encoder without its MLM head, as a
    run trained with another head, or an encoder published without one, would be."""
    from transformers import BertModel

    shutil.copytree(run, out, ignore=shutil.ignore_patterns("snapshots"))
    meta = json.loads((out / "run.json").read_text())
    meta["name"] = out.name
    (out / "run.json").write_text(json.dumps(meta))
    for step in HEADLESS_STEPS:
        name = f"step-{step:07d}"
        target = out / "snapshots" / name
        BertModel.from_pretrained(str(run / "snapshots" / name), add_pooling_layer=False).save_pretrained(target)
        shutil.copy(run / "snapshots" / name / "snapshot.json", target / "snapshot.json")
    return out
