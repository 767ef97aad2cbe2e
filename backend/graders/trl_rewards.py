"""TRL's own reward functions (``trl.rewards`` in TRL 1.16), offered as graders.

Listing them imports nothing from TRL (the window stays torch-free); the function is
imported when the grader is made, in the worker. Those that need ``math_verify``
(``accuracy_reward``, ``reasoning_accuracy_reward``, ``get_cosine_scaled_reward``) are
listed as unavailable, with the reason, when it is not installed.
"""

from __future__ import annotations

import importlib.util

from backend.graders.spec import GraderSetting as S
from backend.graders.spec import GraderSpec as _Spec

MATH_VERIFY_MISSING = ("needs the math_verify package, which is not installed here "
                       "(pip install 'math-verify[antlr4_13_2]')")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _as_messages(completions) -> list:
    """TRL's math and format rewards read ``completion[0]["content"]``: plain strings are wrapped."""
    return [c if isinstance(c, list) else [{"role": "assistant", "content": str(c)}] for c in completions]


def _conversational(name: str):
    def factory(settings: dict):
        import trl.rewards as rewards

        func = getattr(rewards, name)

        def grade(prompts=None, completions=(), completion_ids=None, **kwargs):
            return func(completions=_as_messages(completions), **kwargs)

        return grade

    return factory


def _with_solution(func, column: str):
    """``func`` fed the reference column as TRL's ``solution`` argument."""
    def grade(prompts=None, completions=(), completion_ids=None, **kwargs):
        from backend.graders.builtin import reference_values

        solutions = reference_values(column, kwargs, len(completions))
        rest = {k: v for k, v in kwargs.items() if k != "solution"}
        return func(completions=_as_messages(completions), solution=[str(s) for s in solutions], **rest)

    return grade


def _math(name: str):
    def factory(settings: dict):
        import trl.rewards as rewards

        return _with_solution(getattr(rewards, name), settings["column"])

    return factory


def _cosine(settings: dict):
    import trl.rewards as rewards

    return _with_solution(rewards.get_cosine_scaled_reward(max_len=int(settings["max_len"])), settings["column"])


def _repetition(settings: dict):
    import trl.rewards as rewards

    func = rewards.get_repetition_penalty_reward(ngram_size=int(settings["ngram_size"]),
                                                 max_penalty=float(settings["max_penalty"]))

    def grade(prompts=None, completions=(), completion_ids=None, **kwargs):
        return func(completions=completions, completion_ids=completion_ids, **kwargs)

    return grade


def _overlong(settings: dict):
    import trl.rewards as rewards

    func = rewards.get_soft_overlong_punishment(int(settings["max_completion_len"]), int(settings["soft_punish_cache"]))

    def grade(prompts=None, completions=(), completion_ids=None, **kwargs):
        return func(completion_ids=completion_ids, **kwargs)

    return grade


_SOLUTION = S("column", "solution", "Dataset column holding the reference solution (LaTeX or a number).")


def GraderSpec(*args, **kwargs) -> _Spec:  # noqa: N802 - TRL's functions are imported in the worker only
    return _Spec(*args, made_in_worker=True, **kwargs)


def trl_graders() -> tuple[_Spec, ...]:
    math_ok = _has("math_verify")
    why = "" if math_ok else MATH_VERIFY_MISSING
    return (
        GraderSpec("trl_think_format", "TRL think format", "TRL's think_format_reward: 1 when the completion "
                   "starts with one <think>…</think> block.", (), _conversational("think_format_reward")),
        GraderSpec("trl_repetition_penalty", "TRL repetition penalty", "TRL's repetition penalty: 0 without "
                   "repeated n-grams of tokens, down to the maximum penalty for a completion that only repeats.",
                   (S("ngram_size", 3, "Length of the n-grams, in tokens."),
                    S("max_penalty", -1.0, "The reward of a fully repetitive completion (negative).")),
                   _repetition),
        GraderSpec("trl_soft_overlong", "TRL soft overlong punishment", "TRL's DAPO length penalty: 0 up to "
                   "the maximum less the cache, falling to -1 at the maximum.",
                   (S("max_completion_len", 256, "Maximum completion length in tokens."),
                    S("soft_punish_cache", 64, "Tokens before the maximum where the penalty ramps up.")),
                   _overlong),
        GraderSpec("trl_accuracy", "TRL math accuracy", "TRL's accuracy_reward: math_verify checks the answer "
                   "against the solution column (LaTeX aware).", (_SOLUTION,), _math("accuracy_reward"),
                   column_settings=("column",), available=math_ok, unavailable_reason=why),
        GraderSpec("trl_reasoning_accuracy", "TRL reasoning accuracy", "TRL's reasoning_accuracy_reward: like "
                   "math accuracy, on the text after </think> only.", (_SOLUTION,),
                   _math("reasoning_accuracy_reward"), column_settings=("column",), available=math_ok,
                   unavailable_reason=why),
        GraderSpec("trl_cosine_scaled", "TRL cosine-scaled accuracy", "TRL's cosine-scaled reward: correct "
                   "short answers score most, wrong short answers least.",
                   (_SOLUTION, S("max_len", 1000, "Length at which the scale reaches its end, in characters.")),
                   _cosine, column_settings=("column",), available=math_ok, unavailable_reason=why),
    )
