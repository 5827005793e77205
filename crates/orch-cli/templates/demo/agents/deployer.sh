#!/bin/sh
# Demo deployer: deploy-staging runs the suite as a smoke test of the build; deploy
# releases (orch then merges the item's pull request into main).
. "$(dirname "$0")/lib.sh"
case "${ORCH_STAGE:-}" in
    deploy-staging)
        if out=$(sh test.sh 2>&1); then
            verdict pass "staging smoke test: $(echo "$out" | tail -n 1)"
        else
            verdict fail "staging smoke test failed: $(echo "$out" | tail -n 1)"
        fi ;;
    *)
        verdict pass "released" ;;
esac
