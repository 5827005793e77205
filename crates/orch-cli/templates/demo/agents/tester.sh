#!/bin/sh
# Demo tester: writes the item's test (the re-test gate then runs the whole suite).
. "$(dirname "$0")/lib.sh"
case "$scenario" in
    first-fix-breaks-a-test)
        tests='check "a discount over 100% costs nothing" "0.00" "$(cart_discount 150 20.00)"' ;;
    feature-full-cycle)
        tests='check "8% tax on 10.00" "10.80" "$(cart_tax 8 10.00)"
check "no tax" "10.00" "$(cart_tax 0 10.00)"' ;;
    escalates)
        tests='check "a negative quantity is refused" "2" "$(printf '"'"'apple 1.00 -3\n'"'"' | cart_total >/dev/null 2>&1; echo $?)"
check "valid lines still add up" "3.00" "$(printf '"'"'apple 1.00 3\n'"'"' | cart_total)"' ;;
    *) unknown_scenario ;;
esac
printf '# %s: %s\n%s\n' "$item" "$title" "$tests" > "$test_file"
verdict pass "wrote $test_file" false "$test_file"
