#!/bin/sh
# Gate: the item's ADR exists and records a decision. Deliberately slower than the
# demo's finalize_grace_s (a review takes a while): the reaper finds this
# finalization past its grace, sees the finalizer's lease is live, and defers
# (event reaper.deferred) instead of taking the item over and rolling it back.
set -eu
demo_root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$demo_root/.demo"
echo "$$" >> "$demo_root/.demo/pids"
adr="docs/work-items/${ORCH_ITEM:?}/adr.md"
[ -s "$adr" ] || { echo "design-review: $adr is missing"; exit 1; }
grep -qi 'decision' "$adr" || { echo "design-review: $adr records no decision"; exit 1; }
echo "design-review: reading $adr"
sleep 3
echo "design-review: $adr approved"
