"""The frame rate a prober reports: the stream's, never its time base (issue 11)."""

from __future__ import annotations

from fractions import Fraction

from heimdex.adapters.media.description import (
    StreamFacts,
    frame_rate,
    packet_rate,
    rate_needs_packets,
)

MS = Fraction(1, 1000)


def facts(**values: object) -> StreamFacts:
    return StreamFacts(index=0, media_type="video", codec="h264", **values)  # type: ignore[arg-type]


def test_a_millisecond_time_base_reported_as_the_average_rate_is_not_the_rate() -> None:
    # mkv_sample_with_srt.mkv: average 1000 (the tick), r_frame_rate 60, packets every 33 ms.
    times = [round(i * 1000 / 30) for i in range(30)]
    rate = frame_rate(
        facts(
            avg_frame_rate=Fraction(1000),
            base_frame_rate=Fraction(60),
            time_base=MS,
            packet_rate=packet_rate(times, MS),
        )
    )
    assert rate == 30


def test_a_declared_rate_the_packets_agree_with_is_kept_exactly() -> None:
    ntsc = Fraction(30000, 1001)
    times = [i * 1001 for i in range(40)]
    measured = packet_rate(times, Fraction(1, 30000))
    assert (
        frame_rate(facts(avg_frame_rate=ntsc, time_base=Fraction(1, 30000), packet_rate=measured))
        == ntsc
    )


def test_without_packets_a_tick_rate_falls_back_to_frames_over_duration() -> None:
    rate = frame_rate(
        facts(
            avg_frame_rate=Fraction(1000),
            base_frame_rate=Fraction(1000),
            time_base=MS,
            frame_count=50,
            duration=2.0,
        )
    )
    assert rate == 25


def test_a_low_time_base_equal_to_the_rate_is_a_real_rate() -> None:
    # A 30 fps stream counted in 1/30 s ticks: the rate and the tick coincide, legitimately.
    assert frame_rate(facts(avg_frame_rate=Fraction(30), time_base=Fraction(1, 30))) == 30


def test_b_frame_reordering_does_not_skew_the_measured_rate() -> None:
    display = [0, 3, 1, 2, 6, 4, 5, 9, 7, 8, 12, 10, 11, 15, 13, 14]  # I P B B … in decode order
    assert packet_rate([t * 40 for t in display], MS) == 25
    assert packet_rate([0, 40], MS) is None  # too few to say


def test_only_guessed_rates_cost_a_look_at_the_packets() -> None:
    mp4 = "mov,mp4,m4a,3gp,3g2,mj2"
    declared = facts(avg_frame_rate=Fraction(25), base_frame_rate=Fraction(25), time_base=MS)
    assert not rate_needs_packets(mp4, declared)  # MP4's sample table: as declared
    assert rate_needs_packets("matroska,webm", declared)  # millisecond stamps: a guess
    assert rate_needs_packets("flv", declared)
    tick = facts(avg_frame_rate=Fraction(1000), base_frame_rate=Fraction(60), time_base=MS)
    assert rate_needs_packets(mp4, tick)
    apart = facts(avg_frame_rate=Fraction(25), base_frame_rate=Fraction(50))
    assert rate_needs_packets(mp4, apart)
    audio = StreamFacts(index=1, media_type="audio", codec="aac")
    assert not rate_needs_packets("matroska,webm", audio)
