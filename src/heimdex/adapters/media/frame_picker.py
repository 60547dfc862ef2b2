"""Finding the frame for a :class:`Slot` in an open PyAV container: the decoding half of a
thumbnail, a storyboard tile or a poster, without the pictures.

Runs in a decode worker. The rule is ``thumbnail_plan``'s: the keyframe at or before the
slot's target when it lies inside the slot — its packet decoded alone, then a drain
(``decode(None)``) so the B-frame reorder delay does not hold the frame back, then
``flush_buffers()``; otherwise the decoder runs forward from that keyframe to the first frame
at or after the target (or the last inside the slot before it). Slots asked for in order keep
one forward decode going through a long GOP, never again from its keyframe for each slot.
Packets well before the target skip their non-reference frames: no other frame is built from
them, so the picture at the target is the same, for a fraction of the work.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.error

from heimdex.adapters.media.thumbnail_plan import Slot
from heimdex.domain.errors import InvalidMedia

# Looking for a keyframe after a seek: packets read at most. Decoding forward: frames decoded at
# most per slot (10 minutes at 60 fps), in case timestamps never reach the target.
PACKET_BUDGET = 20_000
FRAME_BUDGET = 36_000
# Seconds to step back when a seek finds no keyframe (``None``: from the start).
SEEK_BACK = (0.0, 10.0, 60.0, None)
# Seconds before a target from which forward decoding stops skipping non-reference frames:
# more than any reorder delay, so the frame at the target is never one of those skipped.
SKIP_LEAD = 1.0


@dataclass(frozen=True, slots=True)
class Picked:
    """A decoded frame (PyAV's ``VideoFrame``) and its presentation time in the stream's
    time base."""

    frame: Any
    pts: int


@dataclass(frozen=True, slots=True)
class Keyframe:
    """Where decoding for a slot starts: a keyframe's pts and its packet."""

    pts: int
    packet: Any


class FramePicker:
    """The frames of one video stream of an open container, one :class:`Slot` at a time."""

    def __init__(self, container: Any, stream: Any, name: str) -> None:
        self._container = container
        self._stream = stream
        self._name = name
        self._decoder = stream.codec_context
        if self._decoder is None or stream.time_base is None:
            raise InvalidMedia(f"{name}: the video stream cannot be decoded")
        self.time_base: Fraction = stream.time_base
        start = container.start_time
        self._origin = Fraction(start, 1_000_000) if start is not None else Fraction(0)
        # Decoding forward: the GOP (its keyframe's pts) the decoder is in, the frames still to
        # come, the last frame it gave, and what it is heading for (where skipping stops).
        self._gop: int | None = None
        self._frames: Iterator[Any] = iter(())
        self._last: Picked | None = None
        self._before: Picked | None = None
        self._target = 0
        #: frames decoded so far (what a caller bounding its work counts)
        self.decoded = 0

    def locate(self, slots: Sequence[Slot], alone: bool | None = None) -> list[Keyframe]:
        """The keyframe each slot starts from — a seek and one packet each, nothing decoded —
        located before any decoding, so that :meth:`pick` s of slots in order can carry one
        forward decode through a GOP. Also chooses the decoder's threads: frame threads speed
        a long forward decode up, and only slow lone keyframes down. ``alone``: whether the
        caller decodes only the keyframes (when it knows better than the slot rule)."""
        located = [self._keyframe_at(self._bounds(slot)[1]) for slot in slots]
        if alone is None:
            alone = all(self._inside(slot, key) for slot, key in zip(slots, located, strict=True))
        if not self._decoder.is_open:  # fixed once decoding began (a second locate)
            self._decoder.thread_type = "SLICE" if alone else "AUTO"
        return located

    def keyframe_before(self, slot: Slot) -> Keyframe:
        """The keyframe :meth:`locate` finds for ``slot``, on its own."""
        return self._keyframe_at(self._bounds(slot)[1])

    # -- time ----------------------------------------------------------------------------------
    def pts(self, seconds: float) -> int:
        return round((Fraction(seconds) + self._origin) / self.time_base)

    def seconds(self, pts: int) -> float:
        return round(max(float(pts * self.time_base - self._origin), 0.0), 3)

    def _bounds(self, slot: Slot) -> tuple[int, int, int]:
        end = self.pts(slot.end) if math.isfinite(slot.end) else 2**62
        return self.pts(slot.start), self.pts(slot.target), end

    # -- picking -------------------------------------------------------------------------------
    def pick(
        self, slot: Slot, located: Keyframe | None = None, budget: int = FRAME_BUDGET
    ) -> Picked | None:
        """A frame presented inside ``slot`` (see the module's rule); ``None`` when none is.
        ``located``: the slot's keyframe from :meth:`locate` (else it is looked for now);
        ``budget``: frames decoded forward at most."""
        start, target, end = self._bounds(slot)
        keyframe = located if located is not None else self._keyframe_at(target)
        if self._inside(slot, keyframe):
            picked = self._alone(keyframe)
            if picked is not None:
                return picked
        found = self._forward(keyframe.pts, target, budget)
        if found is not None and start <= found.pts < end:
            return found
        before = self._before
        if before is not None and start <= before.pts < end:
            return before
        return None

    def keyframe(self, keyframe: Keyframe) -> Picked | None:
        """The keyframe decoded on its own: the cheapest picture near a time."""
        return self._alone(keyframe)

    @property
    def codec_context(self) -> Any:
        """The stream's decoder."""
        return self._decoder

    @property
    def last(self) -> Picked | None:
        """The last frame a forward decode reached (where a budget stopped it)."""
        return self._last

    def at(self, seconds: float) -> Picked | None:
        """The frame shown at ``seconds``: the last one presented at or before it (the first
        frame for a time before any), decoding forward from the keyframe before it."""
        return self.at_pts(self.pts(seconds))

    def at_pts(self, target: int) -> Picked | None:
        """:meth:`at` in the stream's time base."""
        keyframe = self._keyframe_at(target)
        if keyframe.pts == target:
            picked = self._alone(keyframe)
            if picked is not None:
                return picked
        found = self._forward(keyframe.pts, target, FRAME_BUDGET)
        if found is not None and found.pts <= target:
            return found
        return self._before or found

    def _inside(self, slot: Slot, keyframe: Keyframe) -> bool:
        start, _, end = self._bounds(slot)
        return start <= keyframe.pts < end

    # -- packets -------------------------------------------------------------------------------
    def _seek(self, pts: int) -> None:
        """To the keyframe at or before ``pts`` — or the first one, when ``pts`` is earlier
        than any (some demuxers refuse a backward seek before their first entry)."""
        self._gop = None  # seeking flushes the decoder: nothing to continue from
        try:
            self._container.seek(pts, stream=self._stream, backward=True, any_frame=False)
        except av.error.FFmpegError:
            self._container.seek(pts, stream=self._stream, backward=False, any_frame=False)

    def _packets(self) -> Iterator[Any]:
        """The stream's packets from the current position that have a time; stops at the end
        or after the packet budget."""
        for count, packet in enumerate(self._container.demux(self._stream)):
            if packet.size == 0 or count >= PACKET_BUDGET:
                return
            if packet.pts is not None or packet.dts is not None:
                yield packet

    def _keyframe_at(self, target: int) -> Keyframe:
        """The keyframe the decoder starts from for ``target``: its pts and its packet.

        Demuxers without an index (FLV, MPEG-TS) seek by guessing and can land past the target
        (or straight at the end); then look again from further back, and at last from the very
        start, where the first keyframe is taken whatever its time.
        """
        found: Keyframe | None = None
        for back in SEEK_BACK:
            self._seek(target - self._span(back) if back is not None else self._first_pts())
            packet = next((p for p in self._packets() if p.is_keyframe), None)
            if packet is not None:
                found = Keyframe(_pts_of(packet), packet)
                if found.pts <= target:
                    return found
        if found is None:
            raise InvalidMedia(f"{self._name}: no keyframe in the video stream")
        return found

    def _span(self, seconds: float) -> int:
        return int(Fraction(seconds) / self.time_base)

    def _first_pts(self) -> int:
        start = self._stream.start_time
        return start if start is not None else self.pts(0.0)

    # -- decoding ------------------------------------------------------------------------------
    def _alone(self, keyframe: Keyframe) -> Picked | None:
        """The keyframe decoded on its own."""
        key, packet = keyframe.pts, keyframe.packet
        self._gop = None  # the drain below ends any forward decoding
        decoder = self._decoder
        decoder.flush_buffers()
        decoder.skip_frame = "DEFAULT"  # a forward decode left unfinished may have set it
        try:
            frames = decoder.decode(packet) + decoder.decode(None)
        except av.error.FFmpegError:
            frames = []
        self.decoded += len(frames)
        decoder.flush_buffers()  # after a drain the decoder takes packets again only so
        frame = next((f for f in frames if f.pts == key), frames[0] if frames else None)
        return Picked(frame, key) if frame is not None else None

    def _forward(self, key: int, target: int, budget: int = FRAME_BUDGET) -> Picked | None:
        """The first frame at or after ``target``, decoding on from the keyframe ``key`` — or
        from where the decoder already is, when that is in the same GOP and not past it. The
        last frame before it stays in ``_before``; ``None`` when the stream ends first."""
        last = self._last
        if self._gop != key or last is None or last.pts >= target:
            self._seek(key)
            self._gop = key
            self._frames = self._decoded()
            self._last = None
        self._before = self._last
        self._target = target
        for count, frame in enumerate(self._frames, start=1):
            pts = frame.pts if frame.pts is not None else target  # no pts: take it as it comes
            picked = Picked(frame, pts)
            if pts >= target or count >= budget:
                self._last = picked
                return picked
            self._before = self._last = picked
        self._gop = None  # the stream ended: nothing to continue from
        return None

    def _decoded(self) -> Iterator[Any]:
        """Frames decoded forward from the current position, skipping the non-reference frames
        of packets well before the target."""
        decoder = self._decoder
        decoder.flush_buffers()
        lead = self._span(SKIP_LEAD)
        for packet in self._packets():
            decoder.skip_frame = "NONREF" if _pts_of(packet) < self._target - lead else "DEFAULT"
            try:
                frames = decoder.decode(packet)
            except av.error.InvalidDataError:
                continue  # a damaged packet: the next keyframe repairs the picture
            self.decoded += len(frames)
            yield from frames
        decoder.skip_frame = "DEFAULT"
        yield from decoder.decode(None)  # the end: drain what the reorder delay holds


def _pts_of(packet: Any) -> int:
    pts: int = packet.pts if packet.pts is not None else packet.dts
    return pts
