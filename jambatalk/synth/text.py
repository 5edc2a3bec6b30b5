"""A deterministic generator of varied English sentences for the synthetic corpus.

Sentences come from grammar templates filled from word lists chosen to cover every viseme
class: bilabials (p, b, m), labiodentals (f, v), dental and alveolar consonants, rounded
vowels (oo, oh, w), spread vowels (ee, ay) and open vowels (ah). :data:`HELDOUT_SENTENCES`
are hand-written sentences that the generator never produces, for evaluation on unseen text.
"""

from __future__ import annotations

import numpy as np

__all__ = ["generate_sentences", "HELDOUT_SENTENCES", "DEMO_SENTENCE"]

DEMO_SENTENCE = "Hello! I am a talking head, and my lips move when I speak."

NAMES = ["Bob", "Mary", "Paul", "Fiona", "Victor", "Maya", "Ruth", "Lou", "Peter", "Emma", "Vivian", "Sean",
         "Zoe", "Owen", "Greta", "Hugo", "Nina", "Theo", "June", "Boris", "Molly", "Ivan", "Chloe", "Walter"]
ADJECTIVES = ["blue", "big", "small", "happy", "bright", "famous", "velvet", "smooth", "cheap", "moody", "purple",
              "heavy", "open", "quiet", "broken", "frozen", "proud", "vivid", "bumpy", "lovely", "shiny", "muddy",
              "golden", "fluffy", "pale", "warm", "rough", "sweet", "odd", "tall"]
NOUNS = ["moon", "boat", "map", "bubble", "fox", "violin", "coffee", "shoe", "goose", "sheep", "cheese", "key",
         "father", "car", "dog", "bottle", "window", "apple", "mouse", "feather", "wave", "rope", "puppy", "oven",
         "pebble", "umbrella", "baby", "whistle", "pumpkin", "phone", "zebra", "yacht", "bridge", "jam", "harp",
         "mirror", "wagon", "tooth", "basket", "candle", "owl", "penguin", "valley", "tomato", "lamp", "room"]
PLURALS = ["moons", "boats", "maps", "bubbles", "foxes", "violins", "shoes", "geese", "sheep", "keys", "cars",
           "dogs", "bottles", "windows", "apples", "mice", "feathers", "waves", "ropes", "puppies", "pebbles",
           "babies", "pumpkins", "phones", "zebras", "mirrors", "wagons", "baskets", "candles", "owls", "lamps"]
VERBS_PAST = ["moved", "pushed", "bought", "found", "painted", "fixed", "carried", "washed", "lifted", "dropped",
              "borrowed", "chose", "threw", "viewed", "wrapped", "mopped", "saved", "folded", "opened", "judged",
              "shook", "polished", "weighed", "grabbed", "hid", "followed", "buried", "traded"]
VERBS = ["move", "push", "buy", "find", "paint", "fix", "carry", "wash", "lift", "drop", "borrow", "choose",
         "throw", "view", "wrap", "save", "fold", "open", "shake", "polish", "weigh", "grab", "hide", "follow"]
PLACES = ["the park", "the old mill", "the museum", "the beach", "the zoo", "the kitchen", "the harbour",
          "the market", "the forest", "the roof", "the valley", "the bus stop", "the moon", "Boston", "Paris",
          "the village", "the cave", "the office", "the garden", "the farm"]
ADVERBS = ["slowly", "quickly", "happily", "carefully", "softly", "proudly", "boldly", "very fast", "by mistake",
           "every morning", "before noon", "at dawn", "with a smile", "in the rain", "for fun", "twice"]
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve", "fifty", "a few"]
TIMES = ["Yesterday", "On Monday", "Every summer", "Last week", "At midnight", "Before breakfast", "Often",
         "Maybe tomorrow", "In the evening", "Once"]

TEMPLATES = [
    "{Name} {verb_past} the {adj} {noun}.",
    "The {adj} {noun} was in {place}.",
    "{Time}, {name} {verb_past} {num} {plural} {adv}.",
    "Why did {name} {verb} the {adj} {noun}?",
    "Please {verb} the {noun} and the {noun2} {adv}.",
    "{Name} and {name2} {verb_past} a {adj} {noun} near {place}.",
    "I think the {noun} is {adj}, but the {noun2} is {adj2}.",
    "Do you remember when {name} {verb_past} the {noun}?",
    "We saw {num} {adj} {plural} at {place}.",
    "{Time}, the {adj} {noun} {verb_past} {adv}.",
    "Bring me the {adj} {noun}, {name}!",
    "My {noun} is more {adj} than your {noun2}.",
    "{Name} never wanted to {verb} a {noun} in {place}.",
    "How many {plural} can {name} {verb} {adv}?",
    "The {noun} and the {noun2} were both {adj}.",
    "{Name} said the {plural} looked {adj} and {adj2}.",
]

HELDOUT_SENTENCES = [
    "Marble statues rarely smile at passing tourists.",
    "A warm breeze made the flags wave above the harbour.",
    "Few people know how to fold a paper swan.",
    "Cool blue pools shimmer under the morning sun.",
    "Please keep the heavy boxes away from the fire.",
    "Our neighbour plays the tuba every Friday evening.",
    "Bubbles floated past the open window and vanished.",
    "Five brave volunteers moved the piano upstairs.",
    "She whispered something funny about the broken umbrella.",
    "The museum opens at nine and closes at five.",
    "Maybe the moon looks bigger when it is low.",
    "Very few wolves remain in the northern valleys.",
    "Peppermint tea tastes lovely with fresh lemon.",
    "We booked a cheap room by the old bridge.",
    "Who moved my shoes from the back porch?",
    "Thick fog covered the beach before dawn.",
]


def _fill(template: str, rng: np.random.Generator) -> str:
    def pick(words: list[str], avoid: str | None = None) -> str:
        while True:
            w = words[int(rng.integers(len(words)))]
            if w != avoid:
                return w

    name = pick(NAMES)
    noun = pick(NOUNS)
    adj = pick(ADJECTIVES)
    values = {
        "name": name, "name2": pick(NAMES, name), "noun": noun, "noun2": pick(NOUNS, noun), "adj": adj,
        "adj2": pick(ADJECTIVES, adj), "plural": pick(PLURALS), "verb": pick(VERBS), "verb_past": pick(VERBS_PAST),
        "place": pick(PLACES), "adv": pick(ADVERBS), "num": pick(NUMBERS), "time": pick(TIMES),
    }
    values.update({k.capitalize(): v[:1].upper() + v[1:] for k, v in values.items()})
    text = template.format(**values)
    return text.replace(" a a", " an a").replace(" a o", " an o").replace(" a u", " an u")


def generate_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct sentences, the same for the same seed; none is one of :data:`HELDOUT_SENTENCES`."""
    rng = np.random.default_rng([seed, 0x7E47])
    out: list[str] = []
    seen = set(HELDOUT_SENTENCES)
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise RuntimeError(f"could not generate {n} distinct sentences")
        text = _fill(TEMPLATES[int(rng.integers(len(TEMPLATES)))], rng)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out
