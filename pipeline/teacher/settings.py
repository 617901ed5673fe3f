"""What determines a teacher's rankings: the settings a resumed or reusing run must share."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pipeline.teacher.prompts import PromptTemplate

RANKINGS = ("full", "first")


@dataclass(frozen=True)
class TeacherSettings:
    """What determines the teacher's rankings; a resumed run must use the same."""

    model: str
    prompt: str = "rank_zephyr"
    depth: int = 100
    window: int = 20
    stride: int = 10
    max_words: int = 300  # words per passage before adaptive shrinking
    max_model_len: int = 4096  # context of the model: prompt + reply must fit
    max_new_tokens: int | None = None  # default: the token count of a full permutation + 2
    constrained: bool = False  # regex-constrained decoding of "[i] > [j] > ..."
    # "full": the model generates the permutation; "first": FIRST, one generated token, the
    # window ordered by its identifiers' log-probabilities as that token (pipeline.teacher.rerank)
    ranking: str = "full"

    def __post_init__(self) -> None:
        if self.ranking not in RANKINGS:
            raise ValueError(f"unknown ranking {self.ranking!r}: choose one of {RANKINGS}")
        if self.ranking == "first" and self.constrained:
            raise ValueError("--constrained constrains a generated permutation; --ranking first generates none")


def settings_record(settings: TeacherSettings, template: PromptTemplate, tokenizer: str | None) -> dict[str, Any]:
    """The settings as written beside a reply log (`LOG.settings.json`) and in the stats' provenance.

    `ranking` appears only for FIRST runs: logs and stats written before it existed were all
    full generation, and their settings must read the same as a full-generation run's now
    (a log continues, and its replies are reused, only under equal settings).
    """
    record = {
        **asdict(settings),
        "prompt_file": str(template.path),
        "prompt_sha256": template.sha256,
        "tokenizer": tokenizer,
    }
    if settings.ranking == "full":
        del record["ranking"]
    return record
