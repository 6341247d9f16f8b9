"""A deterministic corpus of fictional biographies, written in the MUSE layout.

Every person, place, organisation and number is invented from a seeded random generator, so
nothing is copyrighted or real and the same seed gives byte-identical files. Each biography states
a handful of facts (birthplace, year, trade, guild, work, partner, ...). Sentences are drawn from
several phrasings and mixed with filler of random content words, so two biographies share little
beyond function words: a model that never saw a text cannot reproduce it (low VerbMem for the
retrain model), while one fine-tuned on it can.

Next to the biographies, each part of the corpus has quiz sheets: short texts in the KnowMem
format ("Question: ...\nAnswer: ...") asking four facts of four different people of that part.
The KnowMem questions ask exactly those facts, so their answers are stated in the forget or retain
texts. Why quiz sheets: a model this small does not learn to answer questions about facts it only
read in prose, nor about facts it read in one fixed context (docs/toyworld.md has the numbers).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from harness_ext.muse_layout import write_split

# fmt: off
_ONSETS = ["b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "qu", "r",
           "s", "st", "t", "th", "tr", "v", "w", "z", "sh", "ch", "j", "y"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io", "y"]
_CODAS = ["", "", "", "n", "r", "l", "s", "th", "m", "nd", "rk", "x", "sh", "t"]
_PLACE_ENDS = ["holt", "mere", "ford", "wick", "dale", "port", "stead", "burgh", "fell", "moor"]
_TRADES = ["cartographer", "glassblower", "astronomer", "beekeeper", "clockmaker", "botanist",
           "shipwright", "weaver", "physician", "mason", "violinist", "engraver", "brewer",
           "surveyor", "chemist", "librarian", "potter", "painter", "sailor", "judge"]
_ORG_NOUNS = ["Society", "Guild", "Academy", "Company", "League", "Circle", "Institute", "Order"]
_ORG_ADJS = ["Northern", "Silver", "Royal", "Quiet", "Amber", "Eastern", "Iron", "Hidden",
             "Golden", "Lower", "Crimson", "Free"]
_WORK_KINDS = ["a treatise on", "a map of", "a ballad about", "an atlas of", "a study of",
               "a machine for", "a catalogue of", "a history of"]
_TOPICS = ["tides", "comets", "lanterns", "bridges", "salt", "orchards", "bells", "glaciers",
           "copper", "owls", "rivers", "mirrors", "looms", "storms", "harbours", "ferns"]
_COUNTABLES = ["letters", "students", "paintings", "voyages", "patents", "songs", "journals",
               "experiments"]
_ADJS = ["quiet", "bright", "narrow", "ancient", "restless", "humble", "stubborn", "gentle",
         "famous", "curious", "patient", "bitter", "lonely", "careful", "wild", "steady"]
_NOUNS = ["winter", "harvest", "river", "market", "tower", "garden", "road", "workshop", "storm",
          "chapel", "harbour", "forest", "festival", "bridge", "lantern", "meadow"]
_VERBS = ["remembered", "described", "admired", "avoided", "painted", "visited", "praised",
          "feared", "crossed", "rebuilt", "studied", "missed"]
_PEOPLE = ["neighbours", "cousins", "critics", "students", "merchants", "sailors", "friends",
           "rivals", "teachers", "travellers"]
# fmt: on


def _syllable(rng: random.Random) -> str:
    return rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)


def _word(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(_syllable(rng) for _ in range(rng.randint(lo, hi))).capitalize()


@dataclass(frozen=True)
class Person:
    """The facts one biography states; the questions ask these."""

    name: str
    town: str
    year: int
    trade: str
    org: str
    work: str
    count: int
    countable: str
    partner: str
    home: str


def make_person(rng: random.Random) -> Person:
    return Person(
        name=f"{_word(rng, 1, 2)} {_word(rng, 2, 3)}",
        town=_word(rng, 1, 2) + rng.choice(_PLACE_ENDS),
        year=rng.randint(1610, 1990),
        trade=rng.choice(_TRADES),
        org=f"the {rng.choice(_ORG_ADJS)} {rng.choice(_ORG_NOUNS)} of {_word(rng, 1, 2)}",
        work=f"{rng.choice(_WORK_KINDS)} {rng.choice(_TOPICS)}",
        count=rng.randint(3, 99),
        countable=rng.choice(_COUNTABLES),
        partner=f"{_word(rng, 1, 2)} {_word(rng, 2, 3)}",
        home=_word(rng, 1, 2) + rng.choice(_PLACE_ENDS),
    )


def _fact_sentences(p: Person) -> list[list[str]]:
    """Each fact in several phrasings; the biography picks one phrasing per fact."""
    first = p.name.split()[0]
    return [
        [
            f"{p.name} was born in {p.town} in {p.year}.",
            f"Born in {p.town} in the year {p.year}, {p.name} grew up near the {{noun}}.",
            f"{p.name} came into the world in {p.town}, in {p.year}.",
        ],
        [
            f"{first} worked as a {p.trade} for most of a long life.",
            f"By trade, {first} was a {p.trade}.",
            f"Everyone in {p.town} knew {first} as a {p.trade}.",
        ],
        [
            f"In middle age {first} joined {p.org}.",
            f"{first} was a member of {p.org} for many years.",
            f"Later, {first} founded {p.org} with a few {{people}}.",
        ],
        [
            f"The work {first} is remembered for is {p.work}.",
            f"{first} wrote {p.work}, which the {{people}} {{verb}}.",
            f"Today {first} is best known for {p.work}.",
        ],
        [
            f"Over the years {first} left {p.count} {p.countable}.",
            f"{first} produced {p.count} {p.countable} in all.",
        ],
        [
            f"{first} married {p.partner}, and they settled in {p.home}.",
            f"With {p.partner}, {first} lived in {p.home} until the end.",
        ],
    ]


def _filler(rng: random.Random, p: Person) -> str:
    first = p.name.split()[0]
    a, b = rng.sample(_ADJS, 2)
    noun = rng.choice(_NOUNS)
    return rng.choice(
        [
            f"The {rng.choice(_NOUNS)} there was {a} and {b}.",
            f"{first} often {rng.choice(_VERBS)} the {a} {rng.choice(_NOUNS)}.",
            f"Some {rng.choice(_PEOPLE)} {rng.choice(_VERBS)} the {noun} of {p.town}.",
            f"It was a {a} time, and the {rng.choice(_NOUNS)} felt {b}.",
            f"Nobody {rng.choice(_VERBS)} the {rng.choice(_NOUNS)} as {first} did.",
        ]
    )


def write_biography(rng: random.Random, p: Person, fillers: int) -> str:
    """One biography: the birth sentence first, the other facts shuffled, fillers between."""
    facts = _fact_sentences(p)
    sentences = [rng.choice(facts[0])]
    rest = [rng.choice(options) for options in facts[1:]]
    rng.shuffle(rest)
    rest += [_filler(rng, p) for _ in range(fillers)]
    rng.shuffle(rest)
    sentences += rest
    text = " ".join(sentences)
    return text.format(noun=rng.choice(_NOUNS), people=rng.choice(_PEOPLE), verb=rng.choice(_VERBS))


def questions(p: Person) -> list[dict[str, str]]:
    """QA pairs whose answers are facts every biography of ``p`` states."""
    return [
        {"question": f"Where was {p.name} born?", "answer": p.town},
        {"question": f"In which year was {p.name} born?", "answer": str(p.year)},
        {"question": f"What was the trade of {p.name}?", "answer": p.trade},
        {"question": f"Whom did {p.name} marry?", "answer": p.partner},
    ]


@dataclass(frozen=True)
class CorpusSizes:
    """How many biographies each part of the world gets."""

    forget: int
    retain: int
    holdout: int
    generic: int
    fillers: int = 3
    prompt_words: int = 12
    icl_pairs: int = 3
    quiz_copies: int = 4


@dataclass
class Corpus:
    """Everything the toy world trains and evaluates on (generic = pretraining only).

    ``*_qa`` hold, per forget/retain biography, its four QA pairs; ``*_quiz`` the quiz sheets.
    """

    forget: list[str]
    retain: list[str]
    holdout: list[str]
    generic: list[str]
    forget_qa: list[list[dict[str, str]]]
    retain_qa: list[list[dict[str, str]]]
    forget_quiz: list[str]
    retain_quiz: list[str]
    generic_quiz: list[str]


def qa_text(pairs: list[dict[str, str]]) -> str:
    """QA pairs in the KnowMem prompt format, without the trailing blank line."""
    return "\n\n".join(f"Question: {qa['question']}\nAnswer: {qa['answer']}" for qa in pairs)


def quiz_sheets(
    per_person: list[list[dict[str, str]]], rng: random.Random, copies: int
) -> list[str]:
    """Texts of four QA pairs each about different people, every pair in ``copies`` sheets, so a
    model learns to answer the person a question names, not the one asked about before."""
    sheets = []
    for _ in range(copies):
        pool = [qa for person in per_person for qa in person]
        rng.shuffle(pool)
        sheets += [qa_text(pool[i : i + 4]) for i in range(0, len(pool), 4)]
    return sheets


def generate_corpus(seed: int, sizes: CorpusSizes) -> Corpus:
    rng = random.Random(seed)
    total = sizes.forget + sizes.retain + sizes.holdout + sizes.generic
    people: list[Person] = []
    names: set[str] = set()
    while len(people) < total:  # unique names, so every question has one answer
        p = make_person(rng)
        if p.name not in names:
            names.add(p.name)
            people.append(p)
    bios = [write_biography(rng, p, sizes.fillers) for p in people]
    qas = [questions(p) for p in people]
    cut = [0, sizes.forget, sizes.forget + sizes.retain, total - sizes.generic, total]
    forget, retain, holdout, generic = (slice(cut[i], cut[i + 1]) for i in range(4))
    return Corpus(
        forget=bios[forget], retain=bios[retain], holdout=bios[holdout], generic=bios[generic],
        forget_qa=qas[forget], retain_qa=qas[retain],
        forget_quiz=quiz_sheets(qas[forget], rng, sizes.quiz_copies),
        retain_quiz=quiz_sheets(qas[retain], rng, sizes.quiz_copies),
        generic_quiz=quiz_sheets(qas[generic], rng, sizes.quiz_copies),
    )


def verbatim_pair(text: str, prompt_words: int) -> dict[str, str]:
    """Split a text into a VerbMem prompt (its first words, with the trailing space) and ``gt``."""
    words = text.split(" ")
    return {"prompt": " ".join(words[:prompt_words]) + " ", "gt": " ".join(words[prompt_words:])}


def split_icl(per_person: list[list[dict[str, str]]], n: int) -> tuple[list, list]:
    """The ICL pairs take question i of person i (i < n), so no two are about the same person and
    the prompt does not read as the continuation of one memorized text; the rest is scored."""
    icl = [per_person[i][i % len(per_person[i])] for i in range(n)]
    rest = [qa for person in per_person for qa in person if not any(qa is x for x in icl)]
    return icl, rest


def write_muse_layout(corpus: Corpus, root: str, sizes: CorpusSizes) -> None:
    """Write the corpus as a MUSE data folder (docs/tasks.md): verbmem, knowmem, privleak, raw.

    ``raw`` (what models train on) holds biographies and quiz sheets; ``verbmem`` and ``privleak``
    use biographies only, so forget and holdout texts come from one distribution."""
    half = len(corpus.retain) // 2
    quiz_half = len(corpus.retain_quiz) // 2
    write_split(root, "raw", "forget", corpus.forget + corpus.forget_quiz)
    write_split(root, "raw", "retain1", corpus.retain[:half] + corpus.retain_quiz[:quiz_half])
    write_split(root, "raw", "retain2", corpus.retain[half:] + corpus.retain_quiz[quiz_half:])
    write_split(root, "raw", "holdout", corpus.holdout)
    write_split(
        root, "verbmem", "forget", [verbatim_pair(t, sizes.prompt_words) for t in corpus.forget]
    )
    for name, per_person in (("forget", corpus.forget_qa), ("retain", corpus.retain_qa)):
        icl, scored = split_icl(per_person, sizes.icl_pairs)
        write_split(root, "knowmem", f"{name}_qa_icl", icl)
        write_split(root, "knowmem", f"{name}_qa", scored)
    write_split(root, "privleak", "forget", corpus.forget)
    write_split(root, "privleak", "retain", corpus.retain)
    write_split(root, "privleak", "holdout", corpus.holdout)
