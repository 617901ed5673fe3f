from pathlib import Path

import pytest

from pipeline.contract.qrels import read_qrels
from pipeline.infra.errors import InputError


def test_qrels(trec_dl: Path, tmp_path: Path):
    qrels = read_qrels(trec_dl / "qrels.dl19-passage.txt")
    assert qrels["qid"].nunique() == 43 and set(qrels["relevance"]) == {0, 1, 2, 3}
    bad = tmp_path / "q.txt"
    bad.write_text("1 0 d1 2\n1 0 d1 3\n")
    with pytest.raises(InputError, match=r"q\.txt:2: duplicate judgment"):
        read_qrels(bad)
    bad.write_text("1 0 d1 high\n")
    with pytest.raises(InputError, match="relevance is not an integer"):
        read_qrels(bad)
