"""GLUE-layout fixture files that the tests write themselves, and where the real GLUE copy is (`$GLUE_DIR`).

`write_glue(root)` writes `<root>/<TASK>/{train,dev}.tsv` for CoLA, SST-2, MRPC, STS-B, RTE and WNLI in the
layout and column conventions of GLUE's `download_glue_data.py` files, quirks included: CoLA has no header
(source, label, original mark, sentence) and its dev.tsv no final newline; SST-2 is lower-cased, tokenised text
with a space before the tab; MRPC's header starts with a UTF-8 BOM and its sentences keep `"` characters,
one of them an opening quote that is never closed (read with quote handling, it would swallow the rows after
it); STS-B has ten columns and scores written as `5.000`, `3.8`, `0`, `2.40000000000000`; RTE labels are
`entailment`/`not_entailment`. All texts are English sentences written for these tests (none is copied from
GLUE); SST-2 and STS-B are built from hand-written phrases so that they have a few hundred rows each, enough
for the evaluator's and the runner's tests.

`expected(task, split)` is what a correct reader returns for a file, kept apart from `experiments.tasks` (it
never looks at `TASKS`), so a reader that gets a column, a header or a quirk wrong fails the comparison.

Tests of the real GLUE files are marked `needs_real_glue` (skipped when `$GLUE_DIR` is unset) and start with
`real_glue()`, the folder `$GLUE_DIR` names: a `$GLUE_DIR` that is not a complete GLUE folder fails the test
rather than skipping it, so CI, which always sets it, runs them or goes red.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

FIXTURE_TASKS = ("cola", "sst2", "mrpc", "stsb", "rte", "wnli")
FOLDERS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "rte": "RTE", "wnli": "WNLI"}
SPLITS = ("train", "dev")
GLUE_SKIP_REASON = "set GLUE_DIR to GLUE's task folders to check the real files"

# The header line of each file, exactly as GLUE writes it (None: no header).
HEADERS = {
    "cola": None,
    "sst2": "sentence\tlabel",
    "mrpc": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String",
    "stsb": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
    "rte": "index\tsentence1\tsentence2\tlabel",
    "wnli": "index\tsentence1\tsentence2\tlabel",
}


@dataclass(frozen=True)
class Expected:
    """What a correct reader gives for one fixture file: texts (stripped), second texts, label strings."""

    text_a: list[str]
    text_b: list[str] | None
    labels: list[str]  # as written in the file: "0"/"1", "entailment", "3.800", …


# ------------------------------------------------------------------------------------------------ CoLA

# (label, original mark, sentence): acceptable sentences and their broken twins, as in CoLA's sources
_COLA = [
    ("1", "", "The children finished the cake before their parents came home."),
    ("0", "*", "The children finished the cake their parents before came home."),
    ("1", "", "Which letter did you say that Anna had burned?"),
    ("0", "*", "Which letter did you say who had burned?"),
    ("1", "", "The river seems to have risen overnight."),
    ("0", "*", "The river seems risen to have overnight."),
    ("1", "", "Tom gave his sister a bicycle for her birthday."),
    ("0", "*", "Tom gave a bicycle his sister for her birthday."),
    ("1", "", "It is likely that the train will be late again."),
    ("0", "?*", "The train is likely that will be late again."),
    ("1", "", "She wondered whether the shop would still be open."),
    ("0", "*", "She wondered the shop whether would still be open."),
    ("1", "", "The more carefully you read, the more you notice."),
    ("0", "??", "The more carefully you read, you notice the more."),
    ("1", "", "Nobody believed the story that the old sailor told."),
    ("0", "*", "Nobody believed the story that the old sailor told it."),
    ("1", "", "The dog chased the ball across the wet grass."),
    ("0", "*", "The dog chased across the wet grass the ball the."),
    ("1", "", "I asked him to close the window quietly."),
    ("0", "*", "I asked him close to the window quietly to."),
    ("1", "", "Our neighbours, who rarely travel, flew to Lisbon last spring."),
    ("0", "*", "Our neighbours flew, who rarely travel, to Lisbon last spring the."),
    ("1", "", "How many apples did the farmer say were rotten?"),
    ("0", "*", "How many did the farmer say apples were rotten?"),
]
_COLA_SOURCES = ("tf21", "hw19", "r-93", "kp07")


def _cola(split: str) -> list[tuple[str, str, str, str]]:
    rows = [(_COLA_SOURCES[i // 6], label, mark, text) for i, (label, mark, text) in enumerate(_COLA)]
    return rows[:16] if split == "train" else rows[16:]


# ----------------------------------------------------------------------------------------------- SST-2

_SST_SUBJECTS = ["the film", "this movie", "the script", "the cast", "its director", "the second half",
                 "the soundtrack", "the dialogue", "the ending", "the lead performance", "the camera work",
                 "the story", "every scene", "the humor", "the pacing"]
_SST_GOOD = ["is warm , funny and surprisingly wise", "never loses its nerve",
             "feels fresh from the first frame to the last", "is a genuine pleasure to watch",
             "earns every one of its tears", "is smart without ever showing off", "is beautifully played",
             "moves with real grace", "stays with you long after the credits", "is sharp , generous and alive",
             "gives the story a big , beating heart", "makes the familiar feel new again", "is quietly moving",
             "is a small miracle of timing", "does n't waste a single minute"]
_SST_BAD = ["is dull , loud and far too long", "never finds a reason to exist", "feels like a first draft",
            "is a chore to sit through", "wastes a talented cast", "is smug and oddly lifeless",
            "falls apart in the last act", "drags like a wet blanket", "is forgotten before the lights come up",
            "is clumsy , cheap and confused", "is as stale as last week 's bread", "mistakes noise for energy",
            "has nothing new to say", "is painfully slow", "ca n't decide what it wants to be"]
SST2_DEV_ROWS = 120


def _sst2_all() -> list[tuple[str, str]]:
    rows = []
    for i, subject in enumerate(_SST_SUBJECTS):
        for j, (good, bad) in enumerate(zip(_SST_GOOD, _SST_BAD, strict=True)):
            for label, phrase in (("1", good), ("0", bad)):
                text = f"{subject} {phrase}"
                if (i + j) % 3 == 0:
                    text += " ."  # whole sentences end with a spaced full stop; phrases do not
                elif (i + j) % 7 == 1:
                    text = phrase.split(" ", 1)[1] if phrase.startswith("is ") else phrase  # a bare phrase
                rows.append((text, label))
    unique = list(dict.fromkeys(rows))
    random.Random(0).shuffle(unique)
    return unique


def _sst2(split: str) -> list[tuple[str, str]]:
    rows = _sst2_all()
    return rows[SST2_DEV_ROWS:] if split == "train" else rows[:SST2_DEV_ROWS]


# ------------------------------------------------------------------------------------------------ MRPC

# (quality, id1, id2, string1, string2): news sentences with quotes (one opening quote never closed), $ amounts
_MRPC = [
    ("1", "1203411", "1203388", 'The mayor called the new budget "a plan for the next decade", and the council '
     "approved it on Tuesday.", 'Calling it "a plan for the next decade", the council approved the mayor\'s budget '
     "on Tuesday."),
    ("0", "884120", "884301", "The company sold its bakery division for $410 million in cash last year.",
     "The bakery division was bought in 2001 for $265 million and sold again for $410 million."),
    ("1", "3015562", "3015547", "Shares of the airline fell 6 percent on Monday after it cut its forecast.",
     "The airline's shares dropped 6 percent on Monday when it lowered its outlook."),
    ("0", "1559020", "1559187", "Police said the two men were arrested at a petrol station near the border.",
     "The two men had crossed the border twice in the week before, police said."),
    ("1", "2240918", "2240866", "The storm knocked out power to about 120,000 homes across the region.",
     "About 120,000 homes in the region lost power because of the storm."),
    ("1", "702214", "702390", "The new vaccine was safe and worked in nine of ten patients, the researchers said.",
     '"It was safe, and it worked in nine out of ten patients," one of the researchers said.'),
    ("0", "1871503", "1871456", "The bill passed the Senate 61-38 after a week of debate.",
     "Opponents of the bill said they would keep fighting it in the House."),
    ("1", "2958830", "2958794", "The museum will reopen in March after a two-year renovation.",
     "After two years of renovation work, the museum reopens in March."),
    ("0", "1120445", "1120502", "Sales of electric cars rose 40 percent in the first quarter.",
     "Sales of petrol cars fell for the third quarter in a row."),
    ("1", "3390127", "3390201", "The coach said his team had simply been outplayed in the second half.",
     '"We were simply outplayed in the second half," the coach said.'),
    ("1", "1658930", "1658877", "The transit agency said the new line would cut the trip downtown by half.",
     '"The new line will cut the trip downtown by half for most of our riders.'),  # opening quote, never closed
    ("0", "2480016", "2480145", "The central bank left interest rates unchanged at 2.5 percent.",
     "Most economists had expected the central bank to raise rates to 2.75 percent."),
    ("1", "905571", "905602", "Firefighters needed four hours to bring the warehouse fire under control.",
     "It took firefighters four hours to control the fire at the warehouse."),
    ("0", "3127740", "3127693", "The singer cancelled the last three concerts of her tour because of illness.",
     "Her tour had sold more than 200,000 tickets, the promoter said."),
    ("1", "1447208", "1447311", "The city plans to plant 10,000 trees along its main roads by 2030.",
     "By 2030, 10,000 trees are to be planted along the city's main roads."),
    ("0", "2719054", "2718996", "The factory will hire 300 workers when it opens next spring.",
     "The factory's owner has closed two other plants in the state since 2019."),
]


def _mrpc(split: str) -> list[tuple[str, str, str, str, str]]:
    return _MRPC[:10] if split == "train" else _MRPC[10:]


# ----------------------------------------------------------------------------------------------- STS-B

# caption-style sentences: subjects and actions, each in two wordings that mean the same
_STS_SUBJECTS = [("A man", "A guy"), ("A woman", "A lady"), ("A young girl", "A little girl"),
                 ("A boy", "A small boy"), ("Two men", "A pair of men"), ("A chef", "A cook"),
                 ("An old man", "An elderly man"), ("A group of children", "Some kids")]
_STS_ACTIONS = [("is playing a guitar", "is strumming a guitar"), ("is slicing an onion", "is cutting an onion"),
                ("is riding a horse", "is on horseback"), ("is swimming in a pool", "is swimming in the pool"),
                ("is reading a book", "is reading a novel"), ("is running along the beach", "is jogging on the beach"),
                ("is cooking rice in a pot", "is boiling rice in a pot"),
                ("is climbing a rock wall", "is scaling a rock wall"), ("is singing on a stage", "is singing on stage"),
                ("is painting a fence", "is painting the fence")]
# score strings per kind of pair, in the formats GLUE's file mixes (3 decimals, fewer, none, 14)
_STS_SCORES = {
    "same": ["5.000", "4.800", "4.750", "4.6", "5", "4.40000000000000"],
    "other_subject": ["3.200", "2.800", "3.0", "2.40000000000000", "2.600"],
    "other_action": ["1.600", "1.200", "0.800", "1.0", "1.40"],
    "unrelated": ["0.000", "0.200", "0", "0.400", "0.6"],
}
# news headlines and forum posts (genre, filename, year, sentence1, sentence2, score)
_STS_NEWS = [
    ("main-news", "headlines", "2014", '"We will not back down," union leader says',
     "Union leader vows not to back down", "4.200"),
    ("main-news", "headlines", "2014", "Flooding closes main road into the capital",
     "Main road to the capital shut by floods", "4.800"),
    ("main-news", "headlines", "2015", "Central bank holds rates steady", "Central bank raises rates again",
     "1.400"),
    ("main-news", "headlines", "2015", "Three injured in factory explosion",
     "Factory blast leaves three people hurt", "5.000"),
    ("main-news", "headlines", "2013", "Prime minister visits flood victims", "Storm season ends early this year",
     "0.000"),
    ("main-news", "headlines", "2013", 'Minister calls report "deeply unfair"', "Minister rejects critical report",
     "3.400"),
    ("main-forums", "answers-forums", "2015", "You can freeze bread for about three months without a problem.",
     "Bread keeps in the freezer for around three months.", "4.600"),
    ("main-forums", "answers-forums", "2015", "I would ask your doctor before you stop taking it.",
     "Most people prefer tea to coffee in the morning.", "0.000"),
    ("main-forums", "answers-forums", "2015", "The short answer is that it depends on the soil.",
     'It depends on your soil, so there is no single "right" answer.', "3.800"),
    ("main-news", "headlines", "2016", "Rescue teams reach village cut off by landslide",
     "Landslide cuts off mountain village", "2.600"),
]
STSB_DEV_ROWS = 110


def _caption(subject: str, action: str) -> str:
    """`A man is …`, `Two men are …`."""
    plural = subject.split()[0] in ("Two", "Some")
    return f"{subject} {'are' + action[2:] if plural else action}."


def _stsb_all() -> list[tuple[str, str, str, str, str, str]]:
    """(genre, filename, year, sentence1, sentence2, score) in a fixed shuffled order."""
    rng = random.Random(1)
    rows = []
    n_sub, n_act = len(_STS_SUBJECTS), len(_STS_ACTIONS)
    for i, subject in enumerate(_STS_SUBJECTS):
        for j, action in enumerate(_STS_ACTIONS):
            for kind in _STS_SCORES:
                other_subject = _STS_SUBJECTS[(i + 1 + j % (n_sub - 1)) % n_sub]
                other_action = _STS_ACTIONS[(j + 3 + i % (n_act - 3)) % n_act]
                first = _caption(subject[0], action[0])
                second = {"same": _caption(subject[1], action[1]),
                          "other_subject": _caption(other_subject[0], action[1]),
                          "other_action": _caption(subject[1], other_action[0]),
                          "unrelated": _caption(other_subject[1], other_action[1])}[kind]
                filename, year = (("MSRvid", "2012test"), ("MSRvid", "2012train"), ("images", "2014"),
                                  ("images", "2015"))[(i + j) % 4]
                rows.append(("main-captions", filename, year, first, second, rng.choice(_STS_SCORES[kind])))
    rows += _STS_NEWS
    rng.shuffle(rows)
    return rows


def _stsb(split: str) -> list[tuple[str, ...]]:
    """Rows with GLUE's ten fields: index, genre, filename, year, old_index, source1, source2, s1, s2, score."""
    rows = _stsb_all()
    rows = rows[STSB_DEV_ROWS:] if split == "train" else rows[:STSB_DEV_ROWS]
    counters: dict[tuple[str, str], int] = {}
    out = []
    for index, (genre, filename, year, s1, s2, score) in enumerate(rows):
        old = counters[(filename, year)] = counters.get((filename, year), 0) + 1
        out.append((str(index), genre, filename, year, f"{old:04d}", "none", "none", s1, s2, score))
    return out


# ----------------------------------------------------------------------------------------------- RTE/WNLI

_RTE = [
    ("The city council voted on Monday to close the old library on Elm Street. A new, larger library will open "
     "next year near the station.", "The library on Elm Street will close.", "entailment"),
    ("Maria Lopez, who founded the bakery chain in 1994, stepped down as its chief executive last week.",
     "Maria Lopez founded a bank.", "not_entailment"),
    ("Heavy rain caused the river to burst its banks, and hundreds of families were moved to schools and "
     "sports halls.", "Hundreds of families had to leave their homes.", "entailment"),
    ('The minister said the tax would be "temporary", but it has now been in place for eleven years.',
     "The tax was dropped after one year.", "not_entailment"),
    ("Researchers at the university have found that the bees fly up to six kilometres from the hive to find "
     "food.", "Bees can fly several kilometres from their hive.", "entailment"),
    ("The team won its first three games of the season but lost the next five.",
     "The team has not lost a game this season.", "not_entailment"),
    ("After the bridge was damaged in the storm, the ferry service doubled the number of crossings.",
     "A storm damaged the bridge.", "entailment"),
    ("The painting, once thought to be lost, was found in an attic in Ghent and sold at auction for $2 million.",
     "The painting was found in a museum.", "not_entailment"),
    ("More than 40,000 runners took part in the marathon, which was won by a 23-year-old student.",
     "A student won the marathon.", "entailment"),
    ("The company denied that it planned to move its headquarters, saying the reports were \"pure "
     "speculation\".", "The company will move its headquarters.", "not_entailment"),
    ("Doctors say that walking for thirty minutes a day lowers the risk of heart disease.",
     "Walking can be good for the heart.", "entailment"),
    ("The festival, held every summer since 1968, was cancelled this year because of a lack of funding.",
     "The festival has never been cancelled.", "not_entailment"),
    ("The museum's new wing, designed by a local architect, doubles the space for modern art.",
     "The museum has more room for modern art.", "entailment"),
    ("Although the film was praised by critics, it earned less than half of what it cost to make.",
     "The film made a large profit.", "not_entailment"),
]
_WNLI = [
    ("The bottle would not fit into the bag because it was too big.", "The bottle was too big.", "1"),
    ("The bottle would not fit into the bag because it was too big.", "The bag was too big.", "0"),
    ("Sam thanked Peter because he had lent him his car.", "Peter had lent him his car.", "1"),
    ("Sam thanked Peter because he had lent him his car.", "Sam had lent him his car.", "0"),
    ("The vase fell off the shelf because it was not level.", "The shelf was not level.", "1"),
    ("Lucy could not lift the box onto the table because it was too heavy.", "The table was too heavy.", "0"),
    ("The dog barked at the postman until he went away.", "The postman went away.", "1"),
    ("Anna told Beth that she had won the prize, and she was delighted.", "The prize was delighted.", "0"),
    ("The soup was too hot for the child, so she waited for it to cool.", "The child waited for the soup to cool.",
     "1"),
    ("Mark could not see the screen over the man in front of him because he was so tall.", "Mark was so tall.",
     "0"),
]


def _pairs(rows: list[tuple[str, str, str]], split: str, dev: int) -> list[tuple[str, str, str, str]]:
    picked = rows[:-dev] if split == "train" else rows[-dev:]
    return [(str(i), a, b, label) for i, (a, b, label) in enumerate(picked)]


# ------------------------------------------------------------------------------------------------ writing


def rows(task: str, split: str) -> list[tuple[str, ...]]:
    """The fields of each data row of `<TASK>/<split>.tsv` as written (SST-2's trailing space included)."""
    if task == "cola":
        return _cola(split)
    if task == "sst2":
        return [(f"{text} ", label) for text, label in _sst2(split)]
    if task == "mrpc":
        return _mrpc(split)
    if task == "stsb":
        return _stsb(split)
    if task == "rte":
        return _pairs(_RTE, split, 6)
    if task == "wnli":
        return _pairs(_WNLI, split, 4)
    raise KeyError(task)


def expected(task: str, split: str) -> Expected:
    """What a correct reader returns for the fixture's `<TASK>/<split>.tsv`."""
    data = rows(task, split)
    if task == "cola":
        return Expected([r[3] for r in data], None, [r[1] for r in data])
    if task == "sst2":
        return Expected([r[0].strip() for r in data], None, [r[1] for r in data])
    if task == "mrpc":
        return Expected([r[3] for r in data], [r[4] for r in data], [r[0] for r in data])
    if task == "stsb":
        return Expected([r[7] for r in data], [r[8] for r in data], [r[9] for r in data])
    return Expected([r[1] for r in data], [r[2] for r in data], [r[3] for r in data])  # rte, wnli


def file_text(task: str, split: str) -> str:
    """The whole file: header (if any), LF-terminated rows; CoLA's dev.tsv has no final newline, as in GLUE."""
    lines = ([HEADERS[task]] if HEADERS[task] is not None else []) + ["\t".join(r) for r in rows(task, split)]
    text = "\n".join(lines)
    return text if (task, split) == ("cola", "dev") else text + "\n"


def write_glue(root: Path, tasks: tuple[str, ...] | list[str] = FIXTURE_TASKS) -> Path:
    """Write `<root>/<TASK>/{train,dev}.tsv` for `tasks` (UTF-8, LF line endings); returns `root`."""
    for task in tasks:
        folder = root / FOLDERS[task]
        folder.mkdir(parents=True, exist_ok=True)
        for split in SPLITS:
            (folder / f"{split}.tsv").write_bytes(file_text(task, split).encode("utf-8"))
    return root


# ------------------------------------------------------------------------------------------ real GLUE copy


def missing_glue_files(root: Path) -> list[str]:
    """The train/dev files of the six GLUE tasks that `root` lacks (relative paths; empty when complete)."""
    return [f"{FOLDERS[t]}/{s}.tsv" for t in FIXTURE_TASKS for s in SPLITS
            if not (root / FOLDERS[t] / f"{s}.tsv").is_file()]


def real_glue_dir(value: str | None = None) -> Path | None:
    """The GLUE folder `$GLUE_DIR` names (or `value`), checked complete; None when it is unset or empty.

    Raises ValueError (one line) when it is set but is not a folder or lacks a task's train.tsv or dev.tsv.
    """
    value = os.environ.get("GLUE_DIR") if value is None else value
    if not value:
        return None
    root = Path(value).expanduser()
    if not root.is_dir():
        raise ValueError(f"GLUE_DIR={value}: no such directory; point it at the folder holding CoLA/, SST-2/, "
                         "MRPC/, STS-B/, RTE/, WNLI/ (or unset it to skip the real-file tests)")
    missing = missing_glue_files(root)
    if missing:
        raise ValueError(f"GLUE_DIR={value}: incomplete GLUE folder, missing {', '.join(missing)}")
    return root


needs_real_glue = pytest.mark.skipif(not os.environ.get("GLUE_DIR"), reason=GLUE_SKIP_REASON)


def real_glue() -> Path:
    """In a `needs_real_glue` test: the checked `$GLUE_DIR` folder; the test fails (not skips) when it is incomplete."""
    try:
        root = real_glue_dir()
    except ValueError as exc:
        pytest.fail(str(exc), pytrace=False)
    if root is None:
        pytest.skip(GLUE_SKIP_REASON)
    return root
