#!/bin/sh
# Demo architect: records the design decision as an ADR next to the requirements.
. "$(dirname "$0")/lib.sh"
case "$scenario" in
    feature-full-cycle)
        decision='A new file src/tax.sh with one function, cart_tax, in awk like the
others, so tax stays separate from totals and discounts and each has its own test.' ;;
    escalates)
        decision='Validate in the awk program of cart_total: a negative quantity
stops it with exit status 2 and a message naming the line. No separate pass over
the input: carts are read once, from a pipe.' ;;
    *) unknown_scenario ;;
esac
[ -f "$docs/requirements.md" ] || { verdict fail "no requirements at $docs/requirements.md"; exit 0; }
cat > "$docs/adr.md" <<DOC
# ADR: $title

## Status

Accepted

## Context

See requirements.md in this folder.

## Decision

$decision

## Consequences

The suite in tests/ gains a test file for $item; coverage stays at 100 %.
DOC
verdict pass "ADR written" false "$docs/adr.md"
