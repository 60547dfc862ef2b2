"""``heimdex ingest``'s local files (``LocalSourceFiles``) on a real file system: which files a
folder gives, and which it does not."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from heimdex.adapters.source_files import LocalSourceFiles
from heimdex.application.bulk_ingest import FileStatus

# The start of an AppleDouble file, which macOS writes beside each file on a FAT or exFAT disk.
_APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(200)


def test_hidden_files_are_skipped_and_hidden_folders_not_entered(
    tmp_path: Path, h264_aac_mp4: Path
) -> None:
    card = tmp_path / "card"
    (card / ".Trashes" / "501").mkdir(parents=True)
    (card / "DCIM").mkdir()
    shutil.copy(h264_aac_mp4, card / "DCIM" / "clip.mp4")
    (card / "DCIM" / "._clip.mp4").write_bytes(_APPLE_DOUBLE)  # an .mp4 name, not a video
    shutil.copy(h264_aac_mp4, card / ".Trashes" / "501" / "deleted.mp4")

    found, problems = LocalSourceFiles().discover([card], recursive=True)

    assert problems == []
    by_name = {c.path.relative_to(card).as_posix(): c for c in found}
    assert set(by_name) == {"DCIM/clip.mp4", "DCIM/._clip.mp4"}  # nothing of .Trashes
    assert by_name["DCIM/clip.mp4"].content_type == "video/mp4"
    assert by_name["DCIM/._clip.mp4"].content_type is None  # skipped, and counted
    assert by_name["DCIM/._clip.mp4"].named is False


def test_a_hidden_file_or_folder_named_on_the_command_line_is_taken(
    tmp_path: Path, h264_aac_mp4: Path
) -> None:
    hidden = tmp_path / ".footage"
    hidden.mkdir()
    shutil.copy(h264_aac_mp4, hidden / ".clip.mp4")
    shutil.copy(h264_aac_mp4, hidden / "other.mp4")
    (hidden / "other.mp4").write_bytes((hidden / "other.mp4").read_bytes() + b"other")

    named, _ = LocalSourceFiles().discover([hidden / ".clip.mp4"], recursive=False)
    in_folder, _ = LocalSourceFiles().discover([hidden], recursive=False)

    assert [(c.path.name, c.content_type) for c in named] == [(".clip.mp4", "video/mp4")]
    assert sorted((c.path.name, c.content_type) for c in in_folder) == [
        (".clip.mp4", None),
        ("other.mp4", "video/mp4"),
    ]


def test_a_symlinked_folder_that_leads_out_of_the_tree_is_not_entered(
    tmp_path: Path, h264_aac_mp4: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(h264_aac_mp4, outside / "elsewhere.mp4")
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(h264_aac_mp4, tree / "here.mp4")
    (tree / "link").symlink_to(outside, target_is_directory=True)

    found, problems = LocalSourceFiles().discover([tree], recursive=True)

    assert problems == []
    assert [c.path.name for c in found] == ["here.mp4"]


def test_a_folder_that_cannot_be_read_is_a_failure_not_silence(h264_aac_mp4: Path) -> None:
    # Root reads every folder: as root the walk takes nobody's identity (effective ids), in a
    # folder tree made for it outside pytest's (which nobody may enter).
    tree = Path(tempfile.mkdtemp(prefix="heimdex-walk-"))
    as_root = os.geteuid() == 0
    try:
        tree.chmod(0o755)
        (tree / "open").mkdir(mode=0o755)
        shutil.copy(h264_aac_mp4, tree / "open" / "seen.mp4")
        (tree / "open" / "seen.mp4").chmod(0o644)
        (tree / "locked").mkdir(mode=0o755)
        shutil.copy(h264_aac_mp4, tree / "locked" / "unseen.mp4")
        (tree / "locked").chmod(0o000)
        if as_root:
            os.setegid(65534)
            os.seteuid(65534)
        try:
            found, problems = LocalSourceFiles().discover([tree], recursive=True)
        finally:
            if as_root:
                os.seteuid(0)
                os.setegid(0)
    finally:
        (tree / "locked").chmod(0o755)
        shutil.rmtree(tree, ignore_errors=True)
    assert [c.path.name for c in found] == ["seen.mp4"]
    assert [(Path(p.file).name, p.status, p.error) for p in problems] == [
        ("locked", FileStatus.FAILED, "unreadable")
    ]
