#!/bin/sh
# Fail if a committed test-driver binary under tests/drivers/bin differs from
# a fresh build of its source (or is missing / has no source any more).
#
#   tests/drivers/check-stale.sh
set -eu

here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

"$here/build.sh" "$tmp/bin" >/dev/null

status=0
for fresh in "$tmp"/bin/*/*.sys; do
    rel=${fresh#"$tmp/bin/"}
    committed="$here/bin/$rel"
    if [ ! -f "$committed" ]; then
        echo "missing: tests/drivers/bin/$rel (run tests/drivers/build.sh)" >&2
        status=1
    elif ! cmp -s "$fresh" "$committed"; then
        echo "stale: tests/drivers/bin/$rel differs from a fresh build (run tests/drivers/build.sh)" >&2
        status=1
    fi
done
for committed in "$here"/bin/*/*.sys; do
    [ -e "$committed" ] || continue
    rel=${committed#"$here/bin/"}
    if [ ! -f "$tmp/bin/$rel" ]; then
        echo "orphan: tests/drivers/bin/$rel is not produced by build.sh" >&2
        status=1
    fi
done

if [ "$status" -eq 0 ]; then
    echo "tests/drivers/bin is up to date"
fi
exit "$status"
