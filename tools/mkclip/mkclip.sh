#!/usr/bin/env bash
# mkclip.sh makes a short synthetic H.264 test clip: ffmpeg's lavfi testsrc2 pattern encoded by
# libx264 as constrained baseline (profile_idc 66 with constraint_set1_flag, profile-level-id
# 42c0xx as x264 writes it), no B-frames, a fixed GOP with no scene-cut keyframes, SPS and PPS
# repeated before every IDR, written as a raw Annex B byte stream.
#
# Usage: mkclip.sh [OUT] [WIDTH] [HEIGHT] [FPS] [SECONDS] [BITRATE] [GOP]
#   OUT      output file              (default: device/camera/testdata/clip.h264 in this repo)
#   WIDTH    width in pixels          (default: 320)
#   HEIGHT   height in pixels         (default: 240)
#   FPS      frames per second        (default: 30)
#   SECONDS  duration in seconds      (default: 3)
#   BITRATE  ffmpeg bitrate, e.g. 300k (default: 300k)
#   GOP      frames per GOP           (default: FPS, one keyframe a second)
#
# The output is deterministic for a given ffmpeg/x264 build (single-threaded, bitexact), so
# re-running it should reproduce the committed clip byte for byte on the same build.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

out=${1:-$repo/device/camera/testdata/clip.h264}
width=${2:-320}
height=${3:-240}
fps=${4:-30}
seconds=${5:-3}
bitrate=${6:-300k}
gop=${7:-$fps}

die() { echo "mkclip: $*" >&2; exit 1; }

for v in width height fps seconds gop; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done
(( width % 2 == 0 && height % 2 == 0 )) || die "width and height must be even for 4:2:0"
[[ $bitrate =~ ^[1-9][0-9]*[kKmM]?$ ]] || die "bitrate must look like 300k, got '$bitrate'"

command -v ffmpeg >/dev/null || die "ffmpeg not found in PATH"
encoders=$(ffmpeg -hide_banner -encoders 2>/dev/null) || die "ffmpeg -encoders failed"
[[ $encoders == *" libx264 "* ]] ||
	die "this ffmpeg has no libx264 encoder; install an ffmpeg built with --enable-libx264"

frames=$(( fps * seconds ))
tmp=$(mktemp "${out}.tmp.XXXXXX")
trap 'rm -f "$tmp"' EXIT

# -profile:v baseline   constrained baseline: x264 sets constraint_set0 and constraint_set1.
# keyint/min-keyint/scenecut=0  a keyframe exactly every GOP frames, never in between.
# repeat-headers=1      SPS and PPS before every keyframe, so a loop or a late joiner can decode.
# bframes=0             no reordering (baseline has no B slices anyway), so PTS == DTS.
# threads=1, bitexact   reproducible output.
ffmpeg -hide_banner -loglevel error -nostdin -y \
	-f lavfi -i "testsrc2=size=${width}x${height}:rate=${fps}" \
	-frames:v "$frames" \
	-c:v libx264 -profile:v baseline -pix_fmt yuv420p \
	-b:v "$bitrate" -maxrate "$bitrate" -bufsize "$bitrate" \
	-g "$gop" -keyint_min "$gop" -sc_threshold 0 -bf 0 -threads 1 \
	-x264-params "keyint=${gop}:min-keyint=${gop}:scenecut=0:repeat-headers=1:bframes=0" \
	-fflags +bitexact -flags:v +bitexact \
	-bsf:v h264_mp4toannexb -f h264 "$tmp"

chmod 0644 "$tmp" # mktemp makes it 0600
mv -f "$tmp" "$out"
trap - EXIT
echo "mkclip: wrote $out ($(wc -c <"$out") bytes, $frames frames, ${width}x${height} @ ${fps} fps, GOP $gop)"
