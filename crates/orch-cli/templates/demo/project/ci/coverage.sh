#!/bin/sh
# Gate: the share of functions defined in src/ that some test calls, as
# "coverage: N%" (orch reads the number with the gate's metric regex).
total=0
covered=0
for fn in $(sed -n 's/^\([a-z_][a-z_0-9]*\)() *{.*/\1/p' src/*.sh); do
    total=$((total + 1))
    if grep -q -w "$fn" tests/*.sh; then
        covered=$((covered + 1))
    else
        echo "coverage: $fn is not tested"
    fi
done
[ "$total" -gt 0 ] || { echo "coverage: no functions in src/"; exit 1; }
awk -v c="$covered" -v t="$total" 'BEGIN { printf "coverage: %.1f%% (%d of %d functions)\n", 100 * c / t, c, t }'
