"""`distillm publish` / `fetch-dataset` against a local server speaking Zenodo's deposit API."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from pipeline.cli import build_parser, main
from pipeline.dataset import zenodo
from pipeline.infra.errors import InputError
from tests.dataset.zenodo_server import FakeZenodo

TOKEN = "zen-TEST-7c1d9f3a5b2e4d6f8a0b"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("ZENODO_TOKEN", TOKEN)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no real ~/.config/distillm/zenodo.toml
    waits: list[float] = []
    monkeypatch.setattr(zenodo, "_sleep", waits.append)  # retries are counted, not waited for
    fake = FakeZenodo(TOKEN).start()
    fake.waits, fake.dist = waits, tmp_path  # archives go to tmp_path/dist-VERSION
    yield fake
    fake.stop()


def publish_argv(server: FakeZenodo, dataset: Path, version: str, *extra: str) -> list[str]:
    argv = ["publish", str(dataset), "--version", version, "--base-url", server.url, "--backoff", "0.5"]
    return [*argv, "--creator", "Doe, Jane; Webis", "--dist", str(server.dist / f"dist-{version}"), *extra]


def local_md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_upload_and_metadata_without_publish(server: FakeZenodo, dataset_dl19: Path, tmp_path: Path, capsys):
    assert main(publish_argv(server, dataset_dl19, "1.0.0")) == 0
    [deposition] = server.depositions.values()
    assert not deposition["submitted"] and not server.records and not server.calls("POST", "/actions/publish$")
    dist = tmp_path / "dist-1.0.0"
    name = json.loads((dataset_dl19 / "metadata.json").read_text())["name"]
    stored = server.buckets[deposition["_bucket"]]
    assert sorted(stored) == ["MANIFEST.sha256", f"{name}-1.0.0.tar.gz"]
    for key, value in stored.items():
        assert value["data"] == (dist / key).read_bytes()
    meta = deposition["metadata"]
    assert meta["upload_type"] == "dataset" and meta["version"] == "1.0.0" and meta["license"] == "cc-by-nc-4.0"
    assert meta["title"].startswith("Rank-DistiLLM: rankvicuna re-rankings of bm25") and "(1.0.0)" in meta["title"]
    assert meta["creators"] == [{"name": "Doe, Jane", "affiliation": "Webis"}]
    assert "rank-distillm" in meta["keywords"] and "Schlatt" in meta["description"]
    assert [(r.method, r.path.split("/")[2]) for r in server.requests] == [
        ("POST", "deposit"),
        ("GET", "deposit"),
        ("PUT", "files"),
        ("PUT", "files"),
        ("GET", "deposit"),
        ("PUT", "deposit"),
    ]
    assert f"deposition {deposition['id']}" in capsys.readouterr().out
    # the manifest lists the archive and every file of the dataset, sha256sum-style
    manifest = (dist / "MANIFEST.sha256").read_text().splitlines()
    assert (
        manifest[0]
        == f"{hashlib.sha256((dist / f'{name}-1.0.0.tar.gz').read_bytes()).hexdigest()}  {name}-1.0.0.tar.gz"
    )
    assert len(manifest) == 1 + sum(1 for p in dataset_dl19.rglob("*") if p.is_file())


def test_publish_and_fetch_round_trip(server: FakeZenodo, dataset_dl19: Path, tmp_path: Path, capsys):
    assert main(publish_argv(server, dataset_dl19, "1.0.0", "--publish")) == 0
    [record_id] = server.records
    assert f"published: record {record_id}, DOI 10.5072/zenodo.{record_id}" in capsys.readouterr().out
    receipt = json.loads(next((tmp_path / "dist-1.0.0").glob("*.zenodo.json")).read_text())
    assert receipt["published"] and receipt["doi"] == f"10.5072/zenodo.{record_id}"

    out = tmp_path / "fetched"
    assert main(["fetch-dataset", str(record_id), "--base-url", server.url, "--out", str(out)]) == 0
    assert "valid: 43 queries, 4300 rows" in capsys.readouterr().out
    originals = sorted(p.relative_to(dataset_dl19) for p in dataset_dl19.rglob("*") if p.is_file())
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == originals
    assert all((out / p).read_bytes() == (dataset_dl19 / p).read_bytes() for p in originals)
    for request in server.calls("GET", "^/api/records"):  # the token, where set, only as a header
        assert request.headers["authorization"] == f"Bearer {TOKEN}" and not request.query


def test_fetch_detects_a_tampered_archive(server: FakeZenodo, dataset_dl19: Path, tmp_path: Path, capsys):
    assert main(publish_argv(server, dataset_dl19, "1.0.0", "--publish")) == 0
    [record] = server.records.values()
    archive = next(f for f in record["files"] if f["key"].endswith(".tar.gz"))
    stored = server.buckets[record["_bucket"]][archive["key"]]
    argv = ["fetch-dataset", str(record["id"]), "--base-url", server.url, "--out", str(tmp_path / "f")]

    stored["data"] = stored["data"][:-1] + bytes([stored["data"][-1] ^ 1])
    assert main(argv) == 1
    assert "md5" in capsys.readouterr().err
    archive["checksum"] = f"md5:{hashlib.md5(stored['data']).hexdigest()}"  # md5 passes, sha256 must not
    assert main(argv) == 1
    assert "sha256 differs from MANIFEST.sha256" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()


def test_new_version_deletes_carried_over_files(server: FakeZenodo, dataset_dl19: Path):
    assert main(publish_argv(server, dataset_dl19, "1.0.0", "--publish")) == 0
    [first] = server.records
    assert main(publish_argv(server, dataset_dl19, "2.0.0", "--new-version-of", str(first), "--publish")) == 0
    assert len(server.calls("POST", rf"/depositions/{first}/actions/newversion$")) == 1
    deleted = server.calls("DELETE", r"/files/[\w-]+$")
    assert len(deleted) == 2  # the archive and manifest carried over from 1.0.0
    second = max(server.records)
    assert second != first
    assert sorted(f["key"] for f in server.records[second]["files"])[1].endswith("-2.0.0.tar.gz")
    assert all("1.0.0" not in f["key"] for f in server.records[second]["files"])
    assert any(f["key"].endswith("-1.0.0.tar.gz") for f in server.records[first]["files"])  # old version intact
    assert server.depositions[second]["metadata"]["version"] == "2.0.0"


def test_retries_a_500_in_the_middle_of_the_uploads(server: FakeZenodo, dataset_dl19: Path):
    server.fail("PUT", r"^/api/files/", nth=2, status=500, times=2)  # the manifest upload, twice
    assert main(publish_argv(server, dataset_dl19, "1.0.0")) == 0
    assert len(server.calls("PUT", r"^/api/files/")) == 4
    assert server.waits == [0.5, 1.0]  # exponential backoff
    [deposition] = server.depositions.values()
    dist = server.dist / "dist-1.0.0"
    for key, stored in server.buckets[deposition["_bucket"]].items():
        assert hashlib.md5(stored["data"]).hexdigest() == local_md5(dist / key)  # re-sent whole


def test_respects_retry_after_on_429_and_gives_up_eventually(server: FakeZenodo, dataset_dl19: Path, capsys):
    server.fail("POST", r"^/api/deposit/depositions$", nth=1, status=429, headers={"Retry-After": "7"})
    assert main(publish_argv(server, dataset_dl19, "1.0.0")) == 0
    assert server.waits == [7.0] and len(server.depositions) == 1

    server.waits.clear()
    server.fail("PUT", r"^/api/files/", nth=1, status=503, times=100)
    assert main([*publish_argv(server, dataset_dl19, "1.0.1"), "--retries", "3"]) == 1
    assert server.waits == [0.5, 1.0, 2.0]
    err = capsys.readouterr().err
    assert "HTTP 503: injected failure (gave up after 4 attempts)" in err


def test_checksum_mismatch_is_a_clear_error(server: FakeZenodo, dataset_dl19: Path, capsys):
    server.corrupt_upload_checksum = True
    assert main(publish_argv(server, dataset_dl19, "1.0.0", "--publish")) == 1
    err = capsys.readouterr().err
    assert "server checksum md5:" in err and "!= local md5:" in err and ".tar.gz" in err
    assert not server.records and not server.calls("POST", "/actions/publish$")


def test_token_never_leaks(server: FakeZenodo, dataset_dl19: Path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    server.fail("PUT", r"^/api/files/", nth=1, status=500)  # a retry warning
    server.fail("PUT", r"^/api/deposit/depositions/\d+$", nth=1, status=400, message=f"bad token {TOKEN}")
    assert main(["-v", *publish_argv(server, dataset_dl19, "1.0.0", "--publish")]) == 1
    out, err = capsys.readouterr()
    assert "bad token ***" in err and "retry 1/5" in caplog.text
    dist = server.dist / "dist-1.0.0"
    written = "".join(p.read_text(errors="replace") for p in dist.iterdir() if not p.name.endswith(".tar.gz"))
    for text in (out, err, caplog.text, written):
        assert TOKEN not in text
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in server.requests)
    assert all(not r.query for r in server.requests)  # never ?access_token=


def test_token_and_creators_from_the_config_file(server: FakeZenodo, dataset_dl19: Path, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("ZENODO_TOKEN")
    config = tmp_path / "home" / ".config" / "distillm" / "zenodo.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'token = "{TOKEN}"\ncreators = [{{name = "Roe, Rick", affiliation = "Uni"}}]\n')
    argv = ["publish", str(dataset_dl19), "--version", "1.0.0", "--base-url", server.url]
    assert main([*argv, "--dist", str(tmp_path / "dist")]) == 0
    [deposition] = server.depositions.values()
    assert deposition["metadata"]["creators"] == [{"name": "Roe, Rick", "affiliation": "Uni"}]
    config.unlink()
    assert main([*argv, "--dist", str(tmp_path / "dist")]) == 2  # no token anywhere: refused before any request
    assert len(server.depositions) == 1


def test_sandbox_by_default_production_only_when_asked(dataset_dl19: Path, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("HOME", str(tmp_path))
    parse = build_parser().parse_args
    base = ["publish", str(dataset_dl19), "--version", "1"]
    assert zenodo._client(parse(base), need_token=False)[0].base_url == "https://sandbox.zenodo.org"
    assert zenodo._client(parse([*base, "--production"]), need_token=False)[0].base_url == "https://zenodo.org"
    with pytest.raises(SystemExit):
        parse([*base, "--production", "--sandbox"])


def test_a_draft_is_published_later_with_draft(server: FakeZenodo, dataset_dl19: Path, capsys):
    assert main(publish_argv(server, dataset_dl19, "1.0.0")) == 0
    [draft] = server.depositions
    assert f"review it at {server.url}/deposit/{draft}" in capsys.readouterr().out
    assert main(publish_argv(server, dataset_dl19, "1.0.0", "--draft", str(draft), "--publish")) == 0
    assert list(server.records) == [draft] and len(server.depositions) == 1  # no second deposition
    assert len(server.calls("DELETE", rf"/depositions/{draft}/files/")) == 2  # the first upload, replaced


def test_fetch_replaces_only_an_earlier_fetch_of_the_same_record(server: FakeZenodo, dataset_dl19: Path, tmp_path):
    assert main(publish_argv(server, dataset_dl19, "1.0.0", "--publish")) == 0
    [first] = server.records
    assert main(publish_argv(server, dataset_dl19, "2.0.0", "--new-version-of", str(first), "--publish")) == 0
    second = max(server.records)
    out = tmp_path / "fetched"

    def fetch(record: int, *extra: str) -> int:
        return main(["fetch-dataset", str(record), "--base-url", server.url, "--out", str(out), *extra])

    out.mkdir()
    (out / "notes.txt").write_text("my own work")
    with pytest.raises(InputError, match=rf"{out}: exists and is not an earlier fetch of record {first} from"):
        zenodo.fetch(zenodo.Zenodo(server.url), str(first), out)
    assert fetch(first) == 2  # refused before anything is downloaded
    assert (out / "notes.txt").read_text() == "my own work" and not server.calls("GET", "^/api/records")

    (out / "notes.txt").unlink()  # an empty directory may be filled
    assert fetch(first) == 0
    receipt = json.loads(out.with_name("fetched.zenodo.json").read_text())
    assert (receipt["base_url"], receipt["record"]) == (server.url, str(first))
    assert fetch(first) == 0  # running the same fetch again replaces its own output
    assert fetch(second) == 2  # another version is not replaced silently
    assert fetch(second, "--overwrite") == 0
    assert json.loads(out.with_name("fetched.zenodo.json").read_text())["record"] == str(second)
    assert any(p.name.endswith(".parquet") for p in out.rglob("*"))


def test_deposition_calls_go_through_zenodo_client(server: FakeZenodo, dataset_dl19: Path, monkeypatch):
    """zenodo-client creates, uploads, makes the new version and publishes; its ?access_token= became a header."""
    import zenodo_client

    uploads = []
    real_upload = zenodo_client.Zenodo._upload_files

    def upload(self, **kwargs):  # the real upload, counted (create calls it with no paths)
        if kwargs["paths"]:
            uploads.append([Path(p).name for p in kwargs["paths"]])
        return real_upload(self, **kwargs)

    monkeypatch.setattr(zenodo_client.Zenodo, "_upload_files", upload)
    assert main(publish_argv(server, dataset_dl19, "1.0.0", "--publish")) == 0
    [first] = server.records
    assert main(publish_argv(server, dataset_dl19, "2.0.0", "--new-version-of", str(first), "--publish")) == 0
    by_zenodo_client = [
        (r.method, r.path.rsplit("/", 1)[-1] if "actions" in r.path else r.path.split("/")[-1])
        for r in server.requests
        if r.headers.get("user-agent", "").startswith("zenodo-client-python")
    ]
    assert by_zenodo_client == [
        ("POST", "depositions"),
        ("GET", str(first)),  # create reads the deposition back
        ("POST", "publish"),
        ("POST", "newversion"),
        ("POST", "publish"),
    ]
    name = json.loads((dataset_dl19 / "metadata.json").read_text())["name"]
    assert uploads == [[f"{name}-1.0.0.tar.gz"], ["MANIFEST.sha256"], [f"{name}-2.0.0.tar.gz"], ["MANIFEST.sha256"]]
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" and not r.query for r in server.requests)


def test_fetch_files_of_a_published_rank_distillm_record(server: FakeZenodo, tmp_path: Path, monkeypatch, capsys):
    """A record that is not an export (the Rank-DistiLLM runs): chosen files, md5-checked, no token needed."""
    monkeypatch.delenv("ZENODO_TOKEN")
    name = "__rankzephyr-colbert-10000-sampled-100__msmarco-passage-train-judged.run"
    run = b"".join(f"1000 Q0 {d} {r} {1 / r:.4f} rankzephyr\n".encode() for r, d in enumerate(range(7, 12), 1))
    record = server.add_record({name: run, "__colbert__msmarco-passage-train-judged.run": b"big\n" * 1000})
    out = tmp_path / "rank-distillm"
    argv = ["fetch-dataset", str(record), "--base-url", server.url, "--out", str(out), "--file", "__rankzephyr-*"]
    assert main(argv) == 0
    assert f"1 file(s) of record {record}, md5 checked (not a distillm export): {name}" in capsys.readouterr().out
    assert [p.name for p in out.iterdir()] == [name] and (out / name).read_bytes() == run
    assert not any("authorization" in r.headers for r in server.requests)
    assert main([*argv[:-1], "__no-such-*"]) == 2
    assert "matches no file of record" in capsys.readouterr().err
    [stored] = [f for f in server.records[record]["files"] if f["key"] == name]
    server.buckets[server.records[record]["_bucket"]][name]["data"] = run + b"tampered\n"
    assert main(argv) == 1
    assert f"{name}: md5" in capsys.readouterr().err and stored["checksum"].startswith("md5:")
