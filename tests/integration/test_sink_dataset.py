"""The dataset sink on a real folder, read back with pyarrow and ``datasets``."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from forebay.errors import SinkRejected, SinkUnavailable
from forebay.sinks.dataset import SHARD_NAME, DatasetSink

TABLES = {
    "items": [
        ("change_id", "string"),
        ("n", "int64"),
        ("at", "timestamp"),
        ("tags", "list<string>"),
    ],
    "other": [("change_id", "string"), ("x", "float64")],
}
AT = datetime(2026, 1, 1, tzinfo=UTC)


def rows(*ns: int) -> list[dict[str, object]]:
    return [{"change_id": f"c{n}", "n": n, "at": AT, "tags": [str(n)]} for n in ns]


def read(root: Path, table: str) -> list[dict[str, object]]:
    files = sorted((root / "data" / table).glob("*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


async def test_a_write_lands_as_one_shard_per_table(tmp_path: Path) -> None:
    sink = DatasetSink(tmp_path, tables=TABLES, flush_interval_s=0)
    result = await sink.write({"items": rows(1, 2), "other": [{"change_id": "o1", "x": 0.5}]})
    assert result.applied("items") == 2 and result.applied("other") == 1
    names = os.listdir(tmp_path / "data" / "items")
    assert len(names) == 1 and SHARD_NAME.fullmatch(names[0])
    assert names[0].startswith("train-00000-")
    assert [r["n"] for r in read(tmp_path, "items")] == [1, 2]
    assert read(tmp_path, "items")[0]["at"] == AT
    assert (tmp_path / "README.md").read_text().startswith("---\nconfigs:\n- config_name: items")
    await sink.close()


async def test_the_same_batch_twice_writes_nothing(tmp_path: Path) -> None:
    sink = DatasetSink(tmp_path, tables=TABLES, flush_interval_s=0)
    await sink.write({"items": rows(1, 2)})
    before = sorted(os.listdir(tmp_path / "data" / "items"))
    again = await sink.write({"items": rows(1, 2)})
    assert (again.applied(), again.skipped("duplicate")) == (0, 2)
    partly = await sink.write({"items": rows(2, 3)})
    assert (partly.applied(), partly.skipped("duplicate")) == (1, 1)
    after = sorted(os.listdir(tmp_path / "data" / "items"))
    assert after[:1] == before and len(after) == 2
    assert after[1].startswith("train-00001-")
    await sink.close()


async def test_a_new_sink_on_the_same_folder_knows_what_is_stored(tmp_path: Path) -> None:
    first = DatasetSink(tmp_path, tables=TABLES, flush_interval_s=0)
    await first.write({"items": rows(1, 2)})
    await first.close()
    second = DatasetSink(tmp_path, tables=TABLES, flush_interval_s=0)
    result = await second.write({"items": rows(1, 2, 3)})
    assert (result.applied(), result.skipped("duplicate")) == (1, 2)
    assert sorted(r["n"] for r in read(tmp_path, "items")) == [1, 2, 3]
    assert second.shard_paths("items")[-1].startswith("data/items/train-00001-")
    await second.close()


async def test_concurrent_writes_share_a_flush(tmp_path: Path) -> None:
    sink = DatasetSink(tmp_path, tables=TABLES, flush_interval_s=0)
    await sink.open()
    results = await asyncio.gather(*(sink.write({"items": rows(n)}) for n in range(20)))
    assert sum(r.applied() for r in results) == 20
    assert len(os.listdir(tmp_path / "data" / "items")) == 1
    await sink.close()


async def test_rows_that_do_not_fit_are_rejected_alone(tmp_path: Path) -> None:
    sink = DatasetSink(tmp_path, tables=TABLES, flush_interval_s=0)
    await sink.open()
    bad, good = await asyncio.gather(
        sink.write({"items": [{"change_id": "bad", "n": "not a number"}]}),
        sink.write({"items": rows(5)}),
        return_exceptions=True,
    )
    assert isinstance(bad, SinkRejected)
    assert not isinstance(good, BaseException) and good.applied() == 1
    assert [r["n"] for r in read(tmp_path, "items")] == [5]
    await sink.close()


async def test_storage_failure_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(SinkUnavailable):
        await DatasetSink(blocker / "dataset", tables=TABLES).write({"items": rows(1)})


async def test_no_temporary_file_is_left_behind(tmp_path: Path) -> None:
    sink = DatasetSink(tmp_path, tables=TABLES, flush_interval_s=0)
    for n in range(3):
        await sink.write({"items": rows(n)})
    hidden = [p for p in tmp_path.rglob(".*") if p.is_file()]
    assert hidden == []
    await sink.close()


async def test_an_fsspec_url(tmp_path: Path) -> None:
    url = f"memory://forebay-test-{os.getpid()}-{id(tmp_path)}"
    sink = DatasetSink(url, tables=TABLES, flush_interval_s=0)
    await sink.write({"items": rows(1, 2)})
    assert (await sink.write({"items": rows(1, 2)})).applied() == 0
    (path,) = sink.shard_paths("items")
    import fsspec

    fs = fsspec.filesystem("memory")
    with fs.open(f"{url}/{path}", "rb") as stream:
        assert pq.read_table(stream).column("n").to_pylist() == [1, 2]
    fs.rm(url, recursive=True)
    await sink.close()


async def test_datasets_loads_each_table(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    sink = DatasetSink(tmp_path, tables=TABLES, flush_interval_s=0)
    await sink.write({"items": rows(1, 2), "other": [{"change_id": "o", "x": 1.5}]})
    await sink.write({"items": rows(3)})
    await sink.close()
    cache = tmp_path.parent / f"{tmp_path.name}-cache"
    items = await asyncio.to_thread(
        datasets.load_dataset, str(tmp_path), "items", split="train", cache_dir=str(cache)
    )
    assert sorted(items["n"]) == [1, 2, 3]
    other = await asyncio.to_thread(
        datasets.load_dataset, str(tmp_path), "other", split="train", cache_dir=str(cache)
    )
    assert other["x"] == [1.5]


async def test_a_steady_stream_makes_one_shard_per_flush_interval(tmp_path: Path) -> None:
    sink = DatasetSink(tmp_path, tables=TABLES, flush_interval_s=0.5)
    await sink.write({"items": rows(0)})  # flushed at once: nothing was written lately
    # Written one after another, each as soon as the previous was accepted: all of them land
    # in the next flush, half a second after the first.
    pending = []
    for n in range(1, 11):
        pending.append(asyncio.ensure_future(sink.write({"items": rows(n)})))
        await asyncio.sleep(0)
    results = await asyncio.gather(*pending)
    assert sum(r.applied() for r in results) == 10
    assert len(os.listdir(tmp_path / "data" / "items")) == 2
    await sink.close()


async def test_a_row_without_an_id_is_refused(tmp_path: Path) -> None:
    """A row without an id would be taken for every other such row: refused, alone."""
    sink = DatasetSink(tmp_path, tables=TABLES, flush_interval_s=0)
    for missing in (None, ""):
        bad, good = await asyncio.gather(
            sink.write({"items": [*rows(1), {"change_id": missing, "n": 2, "at": AT}]}),
            sink.write({"items": rows(3)}),
            return_exceptions=True,
        )
        assert isinstance(bad, SinkRejected) and "change_id" in str(bad)
        assert not isinstance(good, BaseException)
    assert [r["n"] for r in read(tmp_path, "items")] == [3]
    await sink.close()
