"""Pure tests of the code that decides what is correct: the checks ingest applies to a spool file, the spool's
index, ids. No service, no subprocess: these are also the runner of the mutation testing (scripts/mutation)."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.spoolindex import INDEX, SpoolIndex
from pipeline.worker import SPOOL_INDEX, announce


def test_spool_index_gives_each_new_name_once_and_waits_for_whole_lines(tmp_path: Path):
    assert SPOOL_INDEX == INDEX  # the worker writes what the coordinator reads
    index = SpoolIndex(tmp_path)
    assert index.new_names() == []  # no result yet: no index file
    announce(tmp_path, "a" * 32 + ".json")
    announce(tmp_path, "b" * 32 + ".json")
    assert index.new_names() == ["a" * 32 + ".json", "b" * 32 + ".json"]
    assert index.new_names() == []  # nothing new: nothing again
    with open(tmp_path / INDEX, "ab") as f:  # a line being written: not given until its newline arrives
        f.write(b"c" * 32)
    assert index.new_names() == []
    with open(tmp_path / INDEX, "ab") as f:
        f.write(b".json\n../escape.json\nnot a name\n" + b"d" * 32 + b".json\n")
    assert index.new_names() == ["c" * 32 + ".json", "d" * 32 + ".json"]  # only names of files in the spool
    assert index.offset == os.path.getsize(tmp_path / INDEX)


def test_announce_never_fails_the_pair(tmp_path: Path):
    announce(tmp_path / "no-such-folder", "a.json")  # cannot write: said on stderr, the result is already safe
