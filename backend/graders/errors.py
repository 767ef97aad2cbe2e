"""The failure a grader causes, in words that name it."""

from __future__ import annotations


class GraderError(RuntimeError):
    """A grader that cannot run or returned something unusable. The worker reports it as a
    ``bad_grader`` failure (``failure_kind``) with ``hint``; the message names the function,
    its file and line, and the sample it failed on."""

    failure_kind = "bad_grader"

    def __init__(self, message: str, *, function: str = "", where: str = "", sample: str = "",
                 hint: str = ""):
        self.function, self.where, self.sample = function, where, sample
        self.hint = hint or ("Fix the reward function named above (try it with Try the graders before "
                             "training) or remove it from the graders, then start again.")
        text = message
        if sample:
            text += f" Sample: {sample}"
        super().__init__(text)
