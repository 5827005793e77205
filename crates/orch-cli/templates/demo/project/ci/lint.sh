#!/bin/sh
# Gate: every shell file parses (sh -n).
status=0
n=0
for f in test.sh src/*.sh tests/*.sh ci/*.sh; do
    [ -f "$f" ] || continue
    n=$((n + 1))
    sh -n "$f" || { echo "lint: $f does not parse"; status=1; }
done
echo "lint: $n files checked"
exit "$status"
