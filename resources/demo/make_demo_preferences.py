"""Generate the demo datasets shipped with AlignStudio.

    python resources/demo/make_demo_preferences.py

writes demo_preferences.jsonl (preference pairs) and demo_sft.jsonl
(prompt/completion) next to this script. Standard library only and seeded,
so running it again reproduces the committed files byte for byte.

The preference: the chosen answer is friendly, direct and correct; the
rejected answer is dismissive and factually wrong. Both wrap the same answer
sentence in phrases of similar length, so length says nothing about which
answer is preferred (see README.md).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 20261102
PREFERENCE_ROWS = 400
SFT_ROWS = 200
HERE = Path(__file__).resolve().parent

# (country, capital, a tempting wrong answer or None for "another capital")
CAPITALS = [
    ("France", "Paris", "Lyon"), ("Germany", "Berlin", "Munich"), ("Italy", "Rome", "Milan"),
    ("Spain", "Madrid", "Barcelona"), ("Portugal", "Lisbon", "Porto"), ("Japan", "Tokyo", "Osaka"),
    ("China", "Beijing", "Shanghai"), ("India", "New Delhi", "Mumbai"), ("Canada", "Ottawa", "Toronto"),
    ("Australia", "Canberra", "Sydney"), ("Brazil", "Brasília", "Rio de Janeiro"),
    ("Argentina", "Buenos Aires", "Córdoba"), ("Mexico", "Mexico City", "Guadalajara"),
    ("Egypt", "Cairo", "Alexandria"), ("Kenya", "Nairobi", "Mombasa"), ("Norway", "Oslo", "Bergen"),
    ("Sweden", "Stockholm", "Gothenburg"), ("Finland", "Helsinki", "Tampere"),
    ("Denmark", "Copenhagen", "Aarhus"), ("Poland", "Warsaw", "Kraków"), ("Austria", "Vienna", "Salzburg"),
    ("Greece", "Athens", "Thessaloniki"), ("Ireland", "Dublin", "Cork"),
    ("the Netherlands", "Amsterdam", "Rotterdam"), ("Belgium", "Brussels", "Antwerp"),
    ("Switzerland", "Bern", "Zurich"), ("Russia", "Moscow", "Saint Petersburg"), ("Turkey", "Ankara", "Istanbul"),
    ("South Korea", "Seoul", "Busan"), ("Thailand", "Bangkok", "Chiang Mai"), ("Vietnam", "Hanoi", "Da Nang"),
    ("Indonesia", "Jakarta", "Surabaya"), ("Peru", "Lima", "Cusco"), ("Chile", "Santiago", "Valparaíso"),
    ("Colombia", "Bogotá", "Medellín"), ("Cuba", "Havana", "Santiago de Cuba"), ("Morocco", "Rabat", "Casablanca"),
    ("Nigeria", "Abuja", "Lagos"), ("Hungary", "Budapest", "Debrecen"), ("the Czech Republic", "Prague", "Brno"),
    ("Iceland", "Reykjavik", "Akureyri"), ("New Zealand", "Wellington", "Auckland"),
    ("the United Kingdom", "London", "Manchester"), ("Scotland", "Edinburgh", "Glasgow"),
]
CAPITAL_QUESTIONS = ["What is the capital of {c}?", "Which city is the capital of {c}?", "Name the capital of {c}."]

LEGS = [("spider", 8), ("ant", 6), ("dog", 4), ("chicken", 2), ("horse", 4), ("bee", 6), ("cat", 4),
        ("duck", 2), ("beetle", 6), ("cow", 4), ("octopus", 8), ("penguin", 2), ("butterfly", 6), ("scorpion", 8)]
COLOURS = [("grass", "green"), ("the sky on a clear day", "blue"), ("fresh snow", "white"), ("a ripe banana", "yellow"),
           ("coal", "black"), ("a ripe strawberry", "red"), ("a carrot", "orange"), ("a lemon", "yellow"),
           ("milk", "white"), ("a ripe tomato", "red"), ("a lime", "green"), ("an orange", "orange"),
           ("a crow", "black"), ("a polar bear's fur", "white"), ("a pumpkin", "orange"), ("a blueberry", "blue"),
           ("an emerald", "green"), ("a ruby", "red"), ("the sun in a child's drawing", "yellow"), ("chocolate", "brown")]
OTHER_COLOUR = {"green": "purple", "blue": "brown", "white": "grey", "yellow": "blue", "black": "pink",
                "red": "blue", "orange": "green", "brown": "green"}
OPPOSITES = [("hot", "cold", "warm"), ("big", "small", "large"), ("up", "down", "above"), ("early", "late", "soon"),
             ("happy", "sad", "glad"), ("fast", "slow", "quick"), ("open", "closed", "ajar"), ("light", "dark", "bright"),
             ("full", "empty", "packed"), ("old", "young", "ancient"), ("heavy", "light", "weighty"),
             ("wet", "dry", "damp"), ("loud", "quiet", "noisy"), ("rich", "poor", "wealthy"), ("hard", "soft", "firm"),
             ("strong", "weak", "tough"), ("tall", "short", "high"), ("clean", "dirty", "tidy"), ("near", "far", "close"),
             ("first", "last", "initial"), ("win", "lose", "succeed"), ("begin", "end", "start"),
             ("push", "pull", "press"), ("day", "night", "morning"), ("north", "south", "east")]
UNITS = [("minutes", "an hour", 60), ("hours", "a day", 24), ("days", "a week", 7), ("months", "a year", 12),
         ("seconds", "a minute", 60), ("days", "a leap year", 366), ("centimetres", "a metre", 100),
         ("grams", "a kilogram", 1000), ("metres", "a kilometre", 1000), ("millimetres", "a centimetre", 10),
         ("weeks", "a year", 52), ("years", "a century", 100), ("years", "a decade", 10),
         ("cards", "a standard deck", 52)]
SHAPES = [("triangle", 3), ("square", 4), ("pentagon", 5), ("hexagon", 6), ("octagon", 8), ("rectangle", 4),
          ("heptagon", 7)]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]

# Friendly and dismissive frames, listed so that the two lists have similar
# lengths: pairing them at random keeps chosen and rejected equally long.
POLITE = ["Sure! {a}", "Good question. {a}", "Happy to help: {a}", "Of course. {a}", "{a} Hope that helps!",
          "{a} Glad you asked.", "Great question! {a}", "Certainly. {a}", "{a} Happy to help.", "Gladly! {a}"]
RUDE = ["Ugh, fine. {a}", "Whatever. {a}", "Why ask me? {a}", "Obviously... {a}", "{a} Stop bothering me.",
        "{a} Look it up.", "Seriously? {a}", "Fine, whatever. {a}", "{a} Go away.", "Duh. {a}"]


def article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def facts(rng: random.Random) -> list[tuple[str, str, str]]:
    """(question, correct answer sentence, wrong answer sentence)."""
    out = []
    for country, capital, wrong in CAPITALS:
        for template in CAPITAL_QUESTIONS:
            out.append((template.format(c=country), f"The capital of {country} is {capital}.",
                        f"The capital of {country} is {wrong}."))
    for animal, legs in LEGS:
        wrong = {8: 6, 6: 4, 4: 6, 2: 4}[legs]
        a = article(animal)
        out.append((f"How many legs does {a} {animal} have?", f"{a.title()} {animal} has {legs} legs.",
                    f"{a.title()} {animal} has {wrong} legs."))
    for thing, colour in COLOURS:
        out.append((f"What colour is {thing}?", f"{thing[0].upper()}{thing[1:]} is {colour}.",
                    f"{thing[0].upper()}{thing[1:]} is {OTHER_COLOUR[colour]}."))
    for word, opposite, wrong in OPPOSITES:
        out.append((f"What is the opposite of \"{word}\"?", f"The opposite of \"{word}\" is \"{opposite}\".",
                    f"The opposite of \"{word}\" is \"{wrong}\"."))
    for unit, container, number in UNITS:
        wrong = number + rng.choice([-2, -1, 1, 2]) if number < 20 else number + rng.choice([-10, 10, 40])
        out.append((f"How many {unit} are in {container}?", f"There are {number} {unit} in {container}.",
                    f"There are {wrong} {unit} in {container}."))
    for shape, sides in SHAPES:
        a = article(shape)
        out.append((f"How many sides does {a} {shape} have?", f"{a.title()} {shape} has {sides} sides.",
                    f"{a.title()} {shape} has {sides + 1} sides."))
    for i, day in enumerate(DAYS):
        out.append((f"What day comes after {day}?", f"The day after {day} is {DAYS[(i + 1) % 7]}.",
                    f"The day after {day} is {DAYS[(i + 3) % 7]}."))
    for i, month in enumerate(MONTHS):
        out.append((f"Which month comes after {month}?", f"The month after {month} is {MONTHS[(i + 1) % 12]}.",
                    f"The month after {month} is {MONTHS[(i + 4) % 12]}."))
    pairs = [(a, b) for a in range(2, 21) for b in range(2, 21)]
    for a, b in rng.sample(pairs, 110):
        out.append((f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.",
                    f"{a} plus {b} is {a + b + rng.choice([-3, -2, -1, 1, 2, 3])}."))
    for a, b in rng.sample([(a, b) for a in range(2, 13) for b in range(2, 13)], 60):
        out.append((f"What is {a} times {b}?", f"{a} times {b} is {a * b}.",
                    f"{a} times {b} is {a * b + rng.choice([-2, -1, 1, 2]) * a}."))
    for a, b in rng.sample([(a, b) for a in range(10, 40) for b in range(1, 10)], 40):
        out.append((f"What is {a} minus {b}?", f"{a} minus {b} is {a - b}.",
                    f"{a} minus {b} is {a - b + rng.choice([-2, -1, 1, 2])}."))
    return out


def prompt_for(question: str) -> str:
    # A base model has no chat template; this plain frame is one it already
    # continues sensibly, so the demo shows the preference and not a format.
    return f"Question: {question}\nAnswer:"


def build(rng: random.Random) -> tuple[list[dict], list[dict]]:
    pool = facts(rng)
    rng.shuffle(pool)
    preferences = []
    for question, right, wrong in pool[:PREFERENCE_ROWS]:
        preferences.append({
            "prompt": prompt_for(question),
            "chosen": " " + rng.choice(POLITE).format(a=right),
            "rejected": " " + rng.choice(RUDE).format(a=wrong),
        })
    sft = [
        {"prompt": prompt_for(question), "completion": " " + rng.choice(POLITE).format(a=right)}
        for question, right, _ in rng.sample(pool, SFT_ROWS)
    ]
    return preferences, sft


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    preferences, sft = build(random.Random(SEED))
    write_jsonl(HERE / "demo_preferences.jsonl", preferences)
    write_jsonl(HERE / "demo_sft.jsonl", sft)
    print(f"wrote {len(preferences)} preference pairs and {len(sft)} SFT rows to {HERE}")


if __name__ == "__main__":
    main()
