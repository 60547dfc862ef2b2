"""What FFmpeg may open on an upload's behalf: the demuxers and protocols both probers allow.

An upload is untrusted. Left to content sniffing, FFmpeg happily reads an HLS playlist saved as
``clip.mp4`` and then opens every file the playlist names (the Debian 12 ffprobe follows it into
any local file, even with a protocol whitelist). So the prober names the demuxers it accepts:
plain media containers and elementary streams, none of which opens another file. Left out on
purpose: playlists and manifests (``hls``, ``dash``, ``webm_dash_manifest``, ``imf``), lists of
other files (``concat``, ``ffmetadata``), image sequences and pipes (``image2``, ``*_pipe``),
devices and filter graphs (``lavfi``, ``v4l2``), network session descriptions (``sdp``,
``rtp``, ``rtsp``), subtitles and text formats, and tracker/module formats. MOV's data
references to external files are switched off separately (``enable_drefs=0``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

# FFmpeg matches a demuxer against the whitelist by each comma-separated part of its name, so
# "mov" admits "mov,mp4,m4a,3gp,3g2,mj2" and "matroska" admits "matroska,webm". Every name here
# is a demuxer in both Debian's ffprobe 5.1 and PyAV's bundled FFmpeg 8.1 (a test checks both).
MEDIA_DEMUXERS: tuple[str, ...] = (
    # containers
    "mov",  # mp4, m4a, mov, 3gp
    "matroska",  # mkv, webm
    "avi",
    "flv",
    "mpegts",
    "mpeg",  # program streams: vob, mpg
    "asf",  # wmv, wma
    "mxf",
    "ogg",  # ogv, oga, opus
    "dv",
    "ivf",
    # video elementary streams
    "h264",
    "hevc",
    "mpegvideo",
    "m4v",
    "obu",
    # audio
    "mp3",
    "aac",
    "loas",
    "ac3",
    "eac3",
    "dts",
    "truehd",
    "flac",
    "wav",
    "w64",
    "aiff",
    "caf",
    "amr",
    "ape",
    "wv",
    "au",
)

# ffprobe reads the file through ``file:``; ``pipe`` is its own stdin/stdout plumbing.
FFPROBE_PROTOCOLS = "file,pipe"
# PyAV only ever opens a path.
PYAV_PROTOCOLS = "file"


def format_whitelist(is_available: Callable[[str], bool] | None = None) -> str:
    """The ``format_whitelist`` option value, keeping only demuxers ``is_available`` knows.

    FFmpeg builds differ in the demuxers they carry; the PyAV adapter passes a check against
    its own library so the list never names one its FFmpeg lacks.
    """
    names: Iterable[str] = MEDIA_DEMUXERS
    if is_available is not None:
        names = [name for name in names if is_available(name)]
    return ",".join(names)
