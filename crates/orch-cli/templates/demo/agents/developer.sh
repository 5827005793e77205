#!/bin/sh
# Demo developer: changes the code. Its first fix of the discount bug is wrong
# (it breaks an existing test); once the re-test gate's failure is in its prompt,
# it fixes it properly. The negative-quantity bug it escalates for analysis.
. "$(dirname "$0")/lib.sh"
case "$scenario" in
    first-fix-breaks-a-test)
        if grep -q 'gate retest failed' "$prompt"; then
            cat > src/discount.sh <<'SRC'
# cart_discount PCT TOTAL: prints TOTAL after a PCT percent discount, two decimals.
# The discount is clamped to 0..100 %, so a total never goes negative.
cart_discount() {
    awk -v pct="$1" -v total="$2" 'BEGIN {
        if (pct > 100) pct = 100
        if (pct < 0) pct = 0
        printf "%.2f\n", total * (100 - pct) / 100
    }'
}
SRC
            verdict pass "clamped the discount to 0..100 % and restored the formula the re-test caught"
        else
            # The slip a hurried fix makes: clamped, but the formula now yields the
            # discount instead of the discounted total.
            cat > src/discount.sh <<'SRC'
# cart_discount PCT TOTAL: prints TOTAL after a PCT percent discount, two decimals.
cart_discount() {
    awk -v pct="$1" -v total="$2" 'BEGIN {
        if (pct > 100) pct = 100
        printf "%.2f\n", total * pct / 100
    }'
}
SRC
            verdict pass "clamped the discount at 100 %"
        fi ;;
    feature-full-cycle)
        cat > src/tax.sh <<'SRC'
# cart_tax RATE TOTAL: prints TOTAL with RATE percent sales tax added, two decimals.
cart_tax() {
    awk -v rate="$1" -v total="$2" 'BEGIN { printf "%.2f\n", total * (100 + rate) / 100 }'
}
SRC
        verdict pass "added cart_tax in src/tax.sh" false "src/tax.sh" ;;
    escalates)
        if [ ! -f "$docs/requirements.md" ]; then
            verdict pass "rejecting input changes the cart's contract: escalating for analysis and design" true
            exit 0
        fi
        cat > src/total.sh <<'SRC'
# cart_total: reads "name price quantity" lines on stdin and prints the sum of
# price * quantity with two decimals. A negative quantity is refused: the line is
# named on stderr, no total is printed, and the exit status is 2.
cart_total() {
    awk '$3 < 0 { printf "line %d: negative quantity %s\n", NR, $3 > "/dev/stderr"; bad = 1; exit 2 }
        { sum += $2 * $3 }
        END { if (!bad) printf "%.2f\n", sum }'
}
SRC
        verdict pass "cart_total refuses negative quantities (per $docs/adr.md)" false "src/total.sh" ;;
    *) unknown_scenario ;;
esac
