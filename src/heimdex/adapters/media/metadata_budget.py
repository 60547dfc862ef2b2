"""How much metadata a file carries, read from its container's structure before FFmpeg parses it.

FFmpeg's metadata parsing is quadratic in the number of entries (each ``av_dict_set`` searches
the dictionary; each chapter searches the chapters): a 1.6 MB Matroska file with 40,000 tags
costs about 6 s of CPU inside ``avformat_open_input``, 4,000 tags 0.07 s. A budget checked on
the parsed description would come after that CPU is spent, so both probers call
:func:`check_metadata` first: it walks the container's element/box headers (skipping media
data by its size, a few reads for most files) and counts the entries the demuxer would create:

- Matroska/WebM: ``Tags`` and ``Chapters`` elements, found in the Segment's top level or
  through its ``SeekHead`` (the demuxer follows it to Tags written after the clusters); each
  ``SimpleTag`` and ``ChapterAtom`` is an entry, the elements' sizes are the bytes;
- MP4/MOV: ``udta`` and ``meta`` boxes in ``moov`` and its tracks; each item of a ``udta`` or
  an ``ilst`` is an entry;
- FLAC: the ``VORBIS_COMMENT`` block's comment count and size;
- MP3 and others with an ID3v2 tag in front: its size (the bytes only).

Other formats are not pre-scanned; their descriptions are still counted after parsing. The
walk is bounded (elements visited, bytes read) so a hostile structure cannot make it slow.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec

from heimdex.domain.errors import MetadataTooLarge

# Element ids (Matroska's specification): the ones the walk looks at.
_EBML = 0x1A45DFA3
_SEGMENT = 0x18538067
_SEEK_HEAD = 0x114D9B74
_SEEK = 0x4DBB
_SEEK_ID = 0x53AB
_SEEK_POSITION = 0x53AC
_CLUSTER = 0x1F43B675
_TAGS = 0x1254C367
_TAG = 0x7373
_SIMPLE_TAG = 0x67C8
_CHAPTERS = 0x1043A770
_EDITION_ENTRY = 0x45B9
_CHAPTER_ATOM = 0xB6
_METADATA_ELEMENTS = (_TAGS, _CHAPTERS)
# What holds entries (descended into) and what is one (counted).
_MATROSKA_CONTAINERS = frozenset(
    {_TAGS, _TAG, _SIMPLE_TAG, _CHAPTERS, _EDITION_ENTRY, _CHAPTER_ATOM}
)
_MATROSKA_ENTRIES = frozenset({_SIMPLE_TAG, _CHAPTER_ATOM})

# Bounds on the walk itself: past them it stops and answers what it counted.
_MAX_ELEMENTS = 100_000
_MAX_SEEK_HEAD_BYTES = 1 << 20
# Most bytes of one Tags/Chapters element read to count its entries (with the bytes budget
# off): counting stops there.
_MAX_ELEMENT_READ = 64 << 20
# The walk reads headers of a few bytes at scattered offsets: a small buffer, not 8 KiB each.
_READ_BUFFER = 1024
_FLAC_VORBIS_COMMENT = 4
_FLAC_MAX_BLOCKS = 1_000


class MetadataBudget(msgspec.Struct, frozen=True):
    """At most ``entries`` metadata entries and ``bytes`` bytes of metadata elements in one
    file; ``0`` switches a bound off."""

    entries: int = 0
    bytes: int = 0

    @property
    def enabled(self) -> bool:
        return bool(self.entries or self.bytes)


class _Count(msgspec.Struct):
    budget: MetadataBudget
    entries: int = 0
    bytes: int = 0

    @property
    def over(self) -> bool:
        return bool(
            (self.budget.entries and self.entries > self.budget.entries)
            or (self.budget.bytes and self.bytes > self.budget.bytes)
        )


class _Over(Exception):
    """Counting can stop: the budget is exceeded."""


def check_metadata(path: Path, budget: MetadataBudget) -> None:
    """``MetadataTooLarge`` when the file at ``path`` carries more metadata than ``budget``
    allows; a file whose structure the walk does not follow passes (FFmpeg will judge it)."""
    if not budget.enabled:
        return
    count = _Count(budget)
    try:
        with open(path, "rb", buffering=_READ_BUFFER) as file:
            size = file.seek(0, 2)
            file.seek(0)
            head = file.read(12)
            if head[:4] == _EBML.to_bytes(4, "big"):
                _matroska(file, size, count)
            elif head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
                _mp4(file, 0, size, count, depth=0)
            elif head[:4] == b"fLaC":
                _flac(file, size, count)
            elif head[:3] == b"ID3":
                _id3(head, count)
    except _Over:
        pass
    except (OSError, struct.error, ValueError, IndexError):
        return  # not laid out the way the walk expects: FFmpeg decides
    check_count(path.name, count.entries, count.bytes, budget)


def check_count(name: str, entries: int, size: int, budget: MetadataBudget) -> None:
    """``MetadataTooLarge`` when ``entries`` or ``size`` is over ``budget``."""
    if budget.entries and entries > budget.entries:
        raise MetadataTooLarge(
            f"{name}: more than {budget.entries} metadata entries (tags and chapters); "
            f"found at least {entries}"
        )
    if budget.bytes and size > budget.bytes:
        raise MetadataTooLarge(
            f"{name}: more than {budget.bytes} bytes of metadata; found at least {size}"
        )


# -- Matroska (EBML) ---------------------------------------------------------------------------
_UNKNOWN = -1


def _element_id(data: bytes, position: int) -> tuple[int, int]:
    """``(id, length)`` of the element id at ``position`` (the marker bit kept, as ids are)."""
    first = data[position]
    length = 1
    while length <= 4 and not first & (0x80 >> (length - 1)):
        length += 1
    if length > 4:
        raise ValueError("not an EBML id")
    return int.from_bytes(data[position : position + length], "big"), length


def _data_size(data: bytes, position: int) -> tuple[int, int]:
    """``(size, length)`` of the data size at ``position``; ``_UNKNOWN`` for an unknown size."""
    first = data[position]
    length = 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    if length > 8:
        raise ValueError("not an EBML size")
    value = first & (0xFF >> length)
    for byte in data[position + 1 : position + length]:
        value = (value << 8) | byte
    if value == (1 << (7 * length)) - 1:
        return _UNKNOWN, length
    return value, length


def _header(file: BinaryIO, position: int) -> tuple[int, int, int]:
    """``(id, data start, data size)`` of the element at ``position`` in ``file``."""
    file.seek(position)
    data = file.read(12)
    element_id, id_length = _element_id(data, 0)
    size, size_length = _data_size(data, id_length)
    if len(data) < id_length + size_length:
        raise ValueError("truncated")
    return element_id, position + id_length + size_length, size


def _matroska(file: BinaryIO, size: int, count: _Count) -> None:
    element_id, start, length = _header(file, 0)
    if element_id != _EBML or length == _UNKNOWN:
        return
    element_id, segment_start, length = _header(file, start + length)
    if element_id != _SEGMENT:
        return
    segment_end = size if length == _UNKNOWN else min(size, segment_start + length)
    visited: set[int] = set()
    seek_targets: list[int] = []
    position = segment_start
    for _ in range(_MAX_ELEMENTS):
        if segment_end - position < 2:
            break
        element_id, start, length = _header(file, position)
        if element_id in _METADATA_ELEMENTS:
            visited.add(position)
            _matroska_metadata(file, start, length, segment_end, count)
        elif element_id == _SEEK_HEAD and length != _UNKNOWN:
            seek_targets.extend(_seek_positions(file, start, length, segment_start))
        if length == _UNKNOWN:
            break  # an unknown-size cluster (live streams): what follows is found by seeking
        position = start + length
    for target in seek_targets:
        if target in visited or not segment_start <= target < segment_end:
            continue
        visited.add(target)
        element_id, start, length = _header(file, target)
        if element_id in _METADATA_ELEMENTS:
            _matroska_metadata(file, start, length, segment_end, count)


def _seek_positions(file: BinaryIO, start: int, length: int, segment_start: int) -> list[int]:
    """Where a SeekHead says Tags and Chapters are (absolute offsets)."""
    file.seek(start)
    data = file.read(min(length, _MAX_SEEK_HEAD_BYTES))
    positions = []
    for seek_id, seek_start, seek_length in _children(data, 0, len(data)):
        if seek_id != _SEEK:
            continue
        target_id, target = None, None
        for child_id, child_start, child_length in _children(
            data, seek_start, seek_start + seek_length
        ):
            value = data[child_start : child_start + child_length]
            if child_id == _SEEK_ID:
                target_id = int.from_bytes(value, "big")
            elif child_id == _SEEK_POSITION:
                target = int.from_bytes(value, "big")
        if target_id in _METADATA_ELEMENTS and target is not None:
            positions.append(segment_start + target)
    return positions


def _children(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """``(id, data start, data size)`` of each element between ``start`` and ``end``; an
    unknown size runs to ``end``. A generator: counting stops as soon as the budget is out."""
    position = start
    for _ in range(_MAX_ELEMENTS):
        if end - position < 2:
            return
        element_id, id_length = _element_id(data, position)
        length, size_length = _data_size(data, position + id_length)
        data_start = position + id_length + size_length
        if length == _UNKNOWN or data_start + length > end:
            length = end - data_start
        if length < 0:
            return
        yield element_id, data_start, length
        position = data_start + length


def _matroska_metadata(file: BinaryIO, start: int, length: int, end: int, count: _Count) -> None:
    """Count the entries of one Tags or Chapters element (its size is its bytes)."""
    if length == _UNKNOWN or start + length > end:
        length = end - start  # what the file holds, not what a header claims
    count.bytes += length
    if count.over:
        raise _Over
    file.seek(start)
    data = file.read(min(length, _MAX_ELEMENT_READ))
    stack = [(0, len(data))]
    while stack:
        first, last = stack.pop()
        for element_id, child_start, child_length in _children(data, first, last):
            if element_id in _MATROSKA_ENTRIES:
                count.entries += 1
                if count.over:
                    raise _Over
            if element_id in _MATROSKA_CONTAINERS:
                stack.append((child_start, child_start + child_length))


# -- MP4/MOV -----------------------------------------------------------------------------------
_MP4_MAX_DEPTH = 4


def _boxes(file: BinaryIO, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """``(type, payload start, end)`` of each box between ``start`` and ``end``."""
    found: list[tuple[bytes, int, int]] = []
    position = start
    while end - position >= 8 and len(found) < _MAX_ELEMENTS:
        file.seek(position)
        header = file.read(16)
        box_size, kind = struct.unpack(">I4s", header[:8])
        header_size = 8
        if box_size == 1:
            (box_size,) = struct.unpack(">Q", header[8:16])
            header_size = 16
        elif box_size == 0:
            box_size = end - position
        if box_size < header_size:
            raise ValueError("box smaller than its header")
        box_end = min(end, position + box_size)
        found.append((kind, position + header_size, box_end))
        position += box_size
    return found


def _mp4(file: BinaryIO, start: int, end: int, count: _Count, *, depth: int) -> None:
    for kind, payload, box_end in _boxes(file, start, end):
        if kind in (b"moov", b"trak") and depth < _MP4_MAX_DEPTH:
            _mp4(file, payload, box_end, count, depth=depth + 1)
        elif kind == b"udta":
            count.bytes += box_end - payload
            for child, child_payload, child_end in _boxes(file, payload, box_end):
                if child == b"meta":
                    _mp4_meta(file, child_payload, child_end, count)
                else:
                    count.entries += 1
        elif kind == b"meta" and depth > 0:
            count.bytes += box_end - payload
            _mp4_meta(file, payload, box_end, count)
        if count.over:
            raise _Over


def _mp4_meta(file: BinaryIO, start: int, end: int, count: _Count) -> None:
    """Count the items of a ``meta`` box's ``ilst``: an MP4 ``meta`` is a full box (version and
    flags first), a QuickTime one is not."""
    file.seek(start + 4)
    if file.read(4) != b"hdlr":
        start += 4
    for kind, payload, box_end in _boxes(file, start, end):
        if kind == b"ilst":
            count.entries += len(_boxes(file, payload, box_end))


# -- FLAC and ID3v2 ----------------------------------------------------------------------------
def _flac(file: BinaryIO, size: int, count: _Count) -> None:
    position = 4
    for _ in range(_FLAC_MAX_BLOCKS):
        file.seek(position)
        header = file.read(4)
        if len(header) < 4:
            return
        last, kind = header[0] & 0x80, header[0] & 0x7F
        length = int.from_bytes(header[1:4], "big")
        if kind == _FLAC_VORBIS_COMMENT:
            count.bytes += length
            (vendor,) = struct.unpack("<I", file.read(4))
            file.seek(position + 8 + vendor)
            (comments,) = struct.unpack("<I", file.read(4))
            count.entries += comments
        position += 4 + length
        if last or position >= size:
            return


def _id3(head: bytes, count: _Count) -> None:
    """An ID3v2 tag's size: four 7-bit bytes (synchsafe) after the version and flags."""
    count.bytes += sum((byte & 0x7F) << (7 * (3 - i)) for i, byte in enumerate(head[6:10]))
