"""Write demo_arithmetic.jsonl: addition questions with their answers, for the RL demo.

A verifiable task: the graders check the first number of each sampled answer against
the ``answer`` column, so no reward model is needed. The prompts follow the demo
preference set's "Question: ...\\nAnswer:" shape, which the base model continues.
Run it again to regenerate the file (fixed seed).
"""

import json
import random
from pathlib import Path


def main() -> None:
    rng = random.Random(7)
    # Distinct questions: repeats would put training prompts into the held-out split.
    pairs = rng.sample([(a, b) for a in range(1, 26) for b in range(1, 26)], 400)
    rows = [{"prompt": f"Question: What is {a} plus {b}?\nAnswer:", "answer": str(a + b)} for a, b in pairs]
    out = Path(__file__).with_name("demo_arithmetic.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    main()
