#!/bin/sh
# Demo analyst: writes the item's requirements.
. "$(dirname "$0")/lib.sh"
case "$scenario" in
    feature-full-cycle)
        criteria='- `cart_tax RATE TOTAL` prints TOTAL with RATE percent tax added, two decimals.
- 8 % tax on 10.00 is 10.80; 0 % tax leaves the total unchanged.' ;;
    escalates)
        criteria='- `cart_total` refuses a line whose quantity is negative: it prints
  "line N: negative quantity Q" on stderr and exits 2, printing no total.
- Carts without such lines total as before.' ;;
    *) unknown_scenario ;;
esac
mkdir -p "$docs"
cat > "$docs/requirements.md" <<DOC
# $item requirements: $title

## Acceptance criteria

$criteria

## Out of scope

Currency formatting beyond two decimals.
DOC
verdict pass "requirements written" false "$docs/requirements.md"
