#!/usr/bin/env bash
# Fetch the sample video (vtest.avi, pedestrians, 768x576) from Debian's opencv-doc package.
# Usage: tools/fetch_sample_video.sh DEST [PYTHON]
# Without apt (or without network), PYTHON generates a short synthetic clip instead.
set -euo pipefail
dest=${1:?usage: fetch_sample_video.sh DEST [PYTHON]}
py=${2:-python3}
mkdir -p "$(dirname "$dest")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if command -v apt-get >/dev/null 2>&1 && (cd "$tmp" && apt-get download opencv-doc >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 && apt-get download opencv-doc >/dev/null 2>&1; }); then
  dpkg-deb -x "$tmp"/opencv-doc_*.deb "$tmp/x"
  cp "$tmp/x/usr/share/doc/opencv-doc/examples/data/vtest.avi" "$dest.part"
  mv "$dest.part" "$dest"
  echo "sample video: vtest.avi from Debian's opencv-doc -> $dest"
else
  "$py" "$(dirname "$0")/make_clip.py" "$dest"
  echo "sample video: apt-get unavailable; generated a synthetic clip -> $dest"
fi
