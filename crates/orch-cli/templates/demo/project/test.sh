#!/bin/sh
# Runs every tests/test_*.sh with the functions of src/*.sh loaded and prints
# "N passed, M failed"; exits 1 when any check failed.
cd "$(dirname "$0")" || exit 2
passed=0
failed=0
# check NAME EXPECTED ACTUAL
check() {
    if [ "$2" = "$3" ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL $1: expected '$2', got '$3'"
    fi
}
for f in src/*.sh; do . "./$f"; done
for t in tests/test_*.sh; do . "./$t"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
