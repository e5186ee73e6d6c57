"""Function words of the languages people most often write their memories in, and the guess
of which one a query is written in (lexical.py matches English queries on the stemmed index and
drops their function words; other languages are matched on the plain index as written).

A query's words decide its language: the language whose function words it uses most. English
"what did my sister say" uses four English ones and no other language's; German "wann hat meine
Schwester" uses German ones. When two languages tie, or none shows, the language is not known.
The lists are what tells German "was", "in", "am" from English ones, so a German question is not
mistaken for English.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["STOPWORDS", "guess_language"]

STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        """a an the and or but if of to in on at by for with about from into over after before as is are was were
        be been being am do does did doing have has had having i me my mine myself we us our ours you your yours he
        him his she her hers it its they them their what which who whom whose this that these those there here when
        where why how all any both each few more most other some such no nor not only own same so than too very can
        could would should will shall may might must s t d ll m re ve just also again ever""".split()
    ),
    "de": frozenset(
        """der die das den dem des ein eine einen einem einer eines und oder aber wenn weil dass ob zu zum zur im in
        am an auf aus bei mit nach von vor für über unter um bis durch gegen ohne ist sind war waren bin bist sein
        seine seiner seinen seinem hat habe hast haben hatte hatten wird werden wurde wurden ich mich mir mein meine
        meinen meinem meiner du dich dir dein deine er ihn ihm sie ihr ihre ihren ihrem es wir uns unser unsere
        was wer wen wem wessen welche welcher welches wann wo wie warum wieso nicht kein keine auch noch schon nur
        so sehr denn doch man sich""".split()
    ),
    "es": frozenset(
        """el la los las un una unos unas y o pero si de del a al en con por para sin sobre entre hasta desde es son
        era eran fue fueron ser estar está están estaba he has ha hemos han había yo me mi mis mío tú te tu tus él
        ella ellos ellas nos nuestro nuestra su sus le les lo que qué quién quiénes cuál cuáles cuándo dónde cómo
        cuánto cuánta por qué porque no ni también muy ya se este esta estos estas ese esa eso""".split()
    ),
    "fr": frozenset(
        """le la les l un une des du de d et ou mais si à au aux en dans sur sous avec pour par sans chez entre est
        sont était étaient été être ai as a avons avez ont avait je j me m moi mon ma mes tu te t toi ton ta tes il
        elle ils elles nous vous son sa ses leur leurs lui y que qu qui quoi quel quelle quels quelles quand où
        comment combien pourquoi ne n pas plus aussi très ce cet cette ces se s""".split()
    ),
    "pt": frozenset(
        """o a os as um uma uns umas e ou mas se de do da dos das em no na nos nas ao aos à às com por pelo pela
        para sem sobre entre até desde é são era eram foi foram ser estar está estão estava tem têm tinha eu me
        mim meu minha meus minhas tu te teu tua você ele ela eles elas nós nosso nossa seu sua seus suas lhe que
        quem qual quais quando onde como quanto quanta porque não nem também muito já este esta isso isto esse
        essa""".split()
    ),
}


def guess_language(words: Iterable[str]) -> str | None:
    """The language whose function words the (lower-case) words use most, or None when no
    language uses any or two use as many."""
    counts = {lang: 0 for lang in STOPWORDS}
    for word in words:
        for lang, stop in STOPWORDS.items():
            if word in stop:
                counts[lang] += 1
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    (best, top), (_, second) = ranked[0], ranked[1]
    return best if top > second else None
