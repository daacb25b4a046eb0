"""Regenerates captions.txt: varied English captions for calibrating and verifying text towers.

Deterministic (seeded). Subjects follow the shipped photos and the demo domain (coloured shapes) so calibration sees
the token statistics of both; a few lines exercise punctuation, numbers, HTML entities, non-ASCII and long texts.
Run: python calibration_data/make_captions.py
"""

import random
from pathlib import Path

SUBJECTS = ["a bison", "a horse", "two cows", "a sheep", "a dolphin", "a clownfish", "a turtle", "an old dam",
            "a windmill", "solar panels", "a violin player", "a drummer", "the Eiffel Tower", "a stone bridge",
            "a lighthouse", "a red tractor", "a hammer", "a teapot", "a bicycle", "a wooden chair", "a cathedral",
            "a mountain lake", "a city street", "a child with a kite", "a bowl of fruit", "a baseball", "an elephant",
            "a parrot", "a sailing boat", "a pair of scissors"]
PLACES = ["in a field", "at sunset", "under water", "on a wooden table", "in the snow", "near the sea",
          "in a busy market", "on a rainy day", "in the mountains", "inside a museum", "at night", "in a garden"]
STYLES = ["a photo of {s}.", "a close-up photo of {s} {p}.", "a blurry picture of {s}", "{s} {p}",
          "a black and white photo of {s} {p}.", "an old photograph of {s}", "there is {s} {p}, seen from above.",
          "a cropped photo of {s}.", "a bright photo of {s} {p}!", "a low resolution photo of {s}?"]
COLOURS = ["red", "green", "blue", "yellow", "orange", "purple", "white", "black"]
SHAPES = ["circle", "square", "triangle", "star", "cross"]
DEMO = ["a photo of a {c} {h}", "a small {c} {h} on a noisy background", "a large {c} {h} on a gradient",
        "a {c} {h} in front of a photo", "a rotated {c} {h}"]
EXTRA = [
    "Fish & chips at 5 o'clock &amp; a cup of tea", "3 dogs, 2 cats and 1 parrot (all asleep)",
    "Café crème on the Champs-Élysées", "東京タワーの夜景", "a 😀 emoji drawn on a whiteboard",
    "A VERY LOUD SIGN THAT SAYS STOP", "the number 42 painted on a door", "   extra   spaces\tand\ttabs   ",
    "a photo of a dog " * 12, "Straße in München im Winter", "слон в зоопарке", "a map of the world, 1890",
]


def main() -> None:
    rng = random.Random(0)
    lines = set()
    while len(lines) < 260:
        lines.add(rng.choice(STYLES).format(s=rng.choice(SUBJECTS), p=rng.choice(PLACES)))
    while len(lines) < 300:
        lines.add(rng.choice(DEMO).format(c=rng.choice(COLOURS), h=rng.choice(SHAPES)))
    out = sorted(lines) + [line.strip() for line in EXTRA]
    rng.shuffle(out)
    Path(__file__).with_name("captions.txt").write_text("\n".join(out) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
