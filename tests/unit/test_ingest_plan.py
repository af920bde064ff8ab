"""What `olympus ingest` sends and skips, decided from the walk alone (no gateway)."""

from __future__ import annotations

import pytest

from olympus.client import Formats
from olympus.ingest import plan
from schemas.formats import MEDIA_TYPES

pytestmark = pytest.mark.unit

FORMATS = Formats(media_types=MEDIA_TYPES, max_upload_bytes=100, max_files_per_request=10)


def test_the_walk_sends_supported_files_and_says_why_it_skips_the_rest(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "a" / "notes.md").write_text("# notes")
    (tmp_path / "a" / "Report.PDF").write_bytes(b"%PDF-1.4")
    (tmp_path / "b" / "notes.md").write_text("another with that name")
    (tmp_path / "b" / "big.txt").write_text("x" * 101)
    (tmp_path / "b" / "empty.txt").write_text("")
    (tmp_path / "b" / "photo.jpeg").write_bytes(b"\xff\xd8")
    (tmp_path / "b" / "Makefile").write_text("all:")
    (tmp_path / ".git" / "config").write_text("[core]")
    (tmp_path / ".hidden.txt").write_text("dotfile")

    found = plan([tmp_path, tmp_path / "nowhere"], FORMATS, None)

    assert [(f.name, f.size) for f in found.files] == [("Report.PDF", 8), ("notes.md", 7)]
    assert dict(found.skipped) == {
        str(tmp_path / ".git"): "hidden folder, not walked",
        str(tmp_path / "b" / "notes.md"): f"same name as {tmp_path / 'a' / 'notes.md'}",
        str(tmp_path / "b" / "big.txt"): "101 bytes, over the gateway's 100",
        str(tmp_path / "b" / "empty.txt"): "empty",
        str(tmp_path / "b" / "photo.jpeg"): "unsupported type .jpeg",
        str(tmp_path / "b" / "Makefile"): "unsupported type (none)",
    }
    assert found.unreadable == [(str(tmp_path / "nowhere"), "does not exist")]


def test_a_glob_matches_paths_below_the_folder_and_a_file_stands_for_itself(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("guide")
    (tmp_path / "docs" / "data.json").write_text("{}")
    (tmp_path / "top.md").write_text("top")
    only_md = plan([tmp_path], FORMATS, "*.md")
    assert sorted(f.name for f in only_md.files) == ["guide.md", "top.md"]
    below = plan([tmp_path], FORMATS, "docs/*")
    assert sorted(f.name for f in below.files) == ["data.json", "guide.md"]
    single = plan([tmp_path / "top.md"], FORMATS, None)
    assert [f.path for f in single.files] == [tmp_path / "top.md"]


def test_a_dangling_link_is_reported_unreadable(tmp_path):
    (tmp_path / "gone.txt").symlink_to(tmp_path / "never.txt")
    found = plan([tmp_path], FORMATS, None)
    assert found.files == []
    assert found.unreadable == [
        (str(tmp_path / "gone.txt"), "cannot be read: No such file or directory")
    ]
