#!/usr/bin/env bash
# The public HOT templates of hack/hot-corpus.txt: each source distribution is downloaded from
# PyPI with the project's pip, checked against its pinned sha256 and unpacked into
# $STRATUS_CACHE/hot-corpus/<name>-<version>/ (cached by version; nothing to do when present).
# Prints one line per source: <name>-<version> <folder of its templates>.
# Usage: hack/hot-corpus.sh [path/to/python]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${1:-$here/../.venv/bin/python}"
cache="${STRATUS_CACHE:-$HOME/.cache/stratus}/hot-corpus"
grep -v '^#' "$here/hot-corpus.txt" | while read -r name version sha folder; do
  [ -n "$name" ] || continue
  dest="$cache/$name-$version"
  if [ ! -f "$dest/.complete" ]; then
    tmp="$dest.tmp"; rm -rf "$tmp"; mkdir -p "$tmp"
    echo "hot-corpus: fetching the $name $version source distribution" >&2
    "$python" -m pip download -q --no-deps --no-binary :all: "$name==$version" -d "$tmp/sdist" >&2
    sdist="$(ls "$tmp"/sdist/*)"
    got="$(sha256sum "$sdist" | cut -d' ' -f1)"
    if [ "$got" != "$sha" ]; then
      echo "hot-corpus: $name $version has sha256 $got, not the pinned $sha" >&2; exit 1
    fi
    tar -xzf "$sdist" -C "$tmp" --strip-components=1
    rm -rf "$tmp/sdist"; touch "$tmp/.complete"; rm -rf "$dest"; mv "$tmp" "$dest"
  fi
  echo "$name-$version $dest/$folder"
done
