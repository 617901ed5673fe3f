"""The dataset card: `DIR/README.md`, a Hugging Face YAML header and a body written from the metadata
(`distillm card DIR` rewrites it from DIR/metadata.json).

The header follows the Hub's conventions (license, language, task_categories,
size_categories, configs -> data/*.parquet, dataset_info with the features and the row
count), so `datasets.load_dataset(DIR)` reads the shards. `validate` checks the counts
written here, and `publish` takes the Zenodo title, licence, keywords and description
from it.
"""

from __future__ import annotations

import html
import re
import time
from pathlib import Path
from typing import Any

from pipeline.contract.dataset import dataset_schema
from pipeline.infra.errors import InputError

CITATION = """@inproceedings{schlatt:2025,
  author    = {Ferdinand Schlatt and Maik Fr{\\"o}be and Harrisen Scells and Shengyao Zhuang and
               Bevan Koopman and Guido Zuccon and Benno Stein and Martin Potthast and Matthias Hagen},
  title     = {{Rank-DistiLLM: Closing the Effectiveness Gap Between Cross-Encoders and LLMs
               for Passage Re-Ranking}},
  booktitle = {Advances in Information Retrieval. 47th European Conference on IR Research (ECIR 2025)},
  year      = {2025},
  note      = {arXiv:2405.07920}
}"""

_HF_DTYPES = {"string": "string", "int32": "int32", "double": "float64", "float": "float32"}


def size_category(rows: int) -> str:
    """The Hub's size bucket for a row count."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return label
    return "1M<n<10M" if rows < 10_000_000 else "10M<n<100M" if rows < 100_000_000 else "100M<n<1B"


def pretty_name(metadata: dict[str, Any]) -> str:
    return f"Rank-DistiLLM: {metadata['teacher']} re-rankings of {metadata['first_stage']} ({metadata['dataset_id']})"


def header(metadata: dict[str, Any]) -> dict[str, Any]:
    """The YAML header (Hugging Face dataset card metadata)."""
    schema = dataset_schema(metadata["with_text"])
    return {
        "pretty_name": pretty_name(metadata),
        "license": metadata["license"],
        "language": ["en"],
        "task_categories": ["text-ranking"],
        "tags": ["information-retrieval", "knowledge-distillation", "rank-distillm", "listwise-reranking", "msmarco"],
        "size_categories": [size_category(metadata["rows"])],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}]}],
        "dataset_info": {
            "features": [{"name": f.name, "dtype": _HF_DTYPES[str(f.type)]} for f in schema],
            "splits": [{"name": "train", "num_examples": metadata["rows"]}],
        },
    }


def render_card(metadata: dict[str, Any]) -> str:
    """The whole README.md: YAML header, then how the data was made, counts, licence, loading, citation."""
    import yaml

    m = metadata
    repairs = ", ".join(f"{k} {v}" for k, v in m.get("repairs", {}).items() if v) or "none"
    rate = m.get("repair_rate")
    text_note = (
        "The `text` column holds the MS MARCO passage text: it is MS MARCO's, redistributed under its terms."
        if m["with_text"]
        else "No passage text is included; join `doc_id` with the MS MARCO passage corpus."
    )
    lines = [
        "---",
        yaml.safe_dump(header(m), sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# {pretty_name(m)}",
        "",
        f"Listwise re-rankings by the LLM **{m['teacher']}** (`{m['model']}`) of the top-{m['depth']} "
        f"**{m['first_stage']}** candidates of {m['queries']} queries of `{m['dataset_id']}`, made to "
        "distil the LLM into a cross-encoder as in Rank-DistiLLM (Schlatt et al., ECIR 2025).",
        "",
        "## How it was made",
        "",
        f"- first stage: `{m['first_stage']}`; each query's top {m['depth']} candidates were re-ranked",
        f"- teacher: `{m['model']}`, prompt `{m['prompt']}` (sha256 `{m['prompt_sha256']}`)",
        *([f"- teacher run from: {m['teacher_source']}"] if m.get("teacher_source") else []),
        *(
            [
                f"- sliding window: window {m['window']}, stride {m['stride']}, depth {m['depth']}, from the bottom up; "
                f"at most {m.get('max_words')} words per passage",
                f"- permutation repair: {m.get('windows_repaired')} of {m.get('windows')} windows repaired "
                f"(rate {'n/a' if rate is None else f'{rate:.3%}'}); repairs: {repairs}",
            ]
            if m.get("window")
            else [f"- a teacher run made elsewhere: its top {m['depth']} per query; no window or repair counts"]
        ),
        f"- made by rank-distillm-pipeline {m['pipeline_version']}",
        "",
        "## Counts",
        "",
        "| what | count |",
        "|---|---|",
        f"| queries | {m['queries']} |",
        f"| rows | {m['rows']} |",
        f"| shards | {len(m['shards'])} |",
        "",
        "## Columns",
        "",
        "One row per (query, candidate), ordered by query, then `teacher_rank`: `qid`, `query`, `doc_id`,",
        "`first_stage_rank` (int32), `first_stage_score` (float64), `teacher_rank` (int32, 1 = best),",
        f"`teacher_score` (float32, = {m['depth']} - teacher_rank + 1), `first_stage`, `teacher`"
        + (", `text`." if m["with_text"] else "."),
        *lightning_ir_lines(m),
        "",
        "## Licence",
        "",
        f"The rankings are released under `{m['license']}`. Queries and passages come from MS MARCO, which "
        "Microsoft licenses for non-commercial research purposes only (https://microsoft.github.io/msmarco/); "
        f"those terms apply to the `query` column and to any use of the passages. {text_note}",
        "",
        "## Loading",
        "",
        "```python",
        "import datasets, pandas",
        'ds = datasets.load_dataset("parquet", data_files="data/*.parquet", split="train")',
        'df = pandas.read_parquet("data")',
        "```",
        "",
        "With lightning-ir (targets `depth - rank + 1`, the teacher's gains):",
        "",
        "```python",
        "from lightning_ir import RunDataset",
        f'ds = RunDataset("{m.get("lightning_ir_file")}", depth={m["depth"]}, targets="rank")',
        "```",
        "",
        "`distillm validate DIR` checks that every query's teacher ranking is a full permutation.",
        "",
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return "\n".join(lines)


def lightning_ir_lines(m: dict[str, Any]) -> list[str]:
    """The card's sentences on the lightning-ir run files (pipeline.dataset.lightning_ir)."""
    lines = [
        f"The same rankings as lightning-ir's run table: `{m.get('lightning_ir_file')}` (`query_id`, `query`, "
        f"`doc_id`, `rank` = teacher_rank, `score` = teacher_score{', `text`' if m['with_text'] else ''})"
        + (": it holds the texts, so lightning-ir reads it offline." if m["with_text"] else ".")
    ]
    if m.get("teacher_run_file"):
        lines.append(f"As a TREC run named by its ir_datasets id: `{m['teacher_run_file']}`.")
    return lines


def write_card(out_dir: Path, metadata: dict[str, Any]) -> Path:
    path = Path(out_dir) / "README.md"
    path.write_text(render_card(metadata), encoding="utf-8")
    return path


def read_card(path: Path) -> tuple[dict[str, Any], str]:
    """(YAML header, markdown body) of a dataset card; InputError if there is no header."""
    import yaml

    text = Path(path).read_text(encoding="utf-8")
    if not text.startswith("---\n") or "\n---\n" not in text[3:]:
        raise InputError(path, 1, "dataset card has no YAML header (--- ... ---)")
    head, body = text[4:].split("\n---\n", 1)
    try:
        meta = yaml.safe_load(head) or {}
    except yaml.YAMLError as e:
        raise InputError(path, None, f"invalid YAML header: {e}") from None
    return meta, body


def card_counts(path: Path) -> dict[str, int]:
    """The counts a card states: rows (dataset_info) and queries / rows / shards (the counts table)."""
    meta, body = read_card(path)
    counts: dict[str, int] = {}
    splits = (meta.get("dataset_info") or {}).get("splits") or []
    if splits:
        counts["num_examples"] = int(splits[0].get("num_examples", -1))
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] in ("queries", "rows", "shards") and cells[1].isdigit():
            counts[cells[0]] = int(cells[1])
    return counts


def description_html(body: str) -> str:
    """The card body as simple HTML for Zenodo: headings, paragraphs, lists and code as <pre>."""
    out = []
    for block in body.strip().split("\n\n"):
        if block.startswith("#"):
            out.append(f"<h3>{_inline(block.lstrip('#').strip())}</h3>")
        elif block.startswith("```"):  # a fence: drop its ``` lines (and language tag)
            out.append(f"<pre>{html.escape(chr(10).join(block.splitlines()[1:-1]))}</pre>")
        elif block.startswith("|"):
            out.append(f"<pre>{html.escape(block)}</pre>")
        elif block.startswith("- "):
            items = "".join(f"<li>{_inline(i.strip())}</li>" for i in block[2:].split("\n- "))
            out.append(f"<ul>{items}</ul>")
        else:
            out.append(f"<p>{_inline(block)}</p>")
    return "\n".join(out)


def _inline(text: str) -> str:
    """Escaped text with markdown's **bold** and `code` as HTML."""
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def zenodo_metadata(card: Path, version: str, creators: list[dict[str, str]]) -> dict[str, Any]:
    """Zenodo deposition metadata from a dataset card: title, description, licence, keywords."""
    header, body = read_card(card)
    return {
        "upload_type": "dataset",
        "title": f"{header.get('pretty_name') or card.parent.name} ({version})",
        "description": description_html(body),
        "creators": creators,
        "license": header.get("license", "cc-by-nc-4.0"),
        "version": version,
        "keywords": list(header.get("tags", [])),
        "access_right": "open",
        "publication_date": time.strftime("%Y-%m-%d"),
    }
