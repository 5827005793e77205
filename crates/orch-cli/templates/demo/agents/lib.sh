# Shared by the demo agents (sourced, not run). orch runs each agent in the item's
# worktree with ORCH_ITEM, ORCH_STAGE, ORCH_ROLE, ORCH_ATTEMPT, ORCH_PROMPT_FILE
# and ORCH_VERDICT_FILE set. These agents are scripted stand-ins for an AI: each
# reads the scenario its item was filed with (a "Demo-Scenario:" line in the
# prompt), really edits the code, and writes a verdict.
set -eu
demo_root=$(cd "$(dirname "$0")/.." && pwd)
item=${ORCH_ITEM:?ORCH_ITEM is not set: orch sets it when it runs this agent}
prompt=${ORCH_PROMPT_FILE:?ORCH_PROMPT_FILE is not set: orch sets it when it runs this agent}
verdict_file=${ORCH_VERDICT_FILE:?ORCH_VERDICT_FILE is not set: orch sets it when it runs this agent}
role=${ORCH_ROLE:-agent}
# Every agent process leaves its pid here, so a test can check none outlives the demo.
mkdir -p "$demo_root/.demo"
echo "$$" >> "$demo_root/.demo/pids"

scenario=$(sed -n 's/^Demo-Scenario: *//p' "$prompt" | head -n 1)
title=$(sed -n '1s/^# [^ ]* — //p' "$prompt")
docs="docs/work-items/$item"
# The item's own test file, e.g. tests/test_demo_3.sh.
test_file="tests/test_$(echo "$item" | tr 'A-Z-' 'a-z_').sh"
echo "$role: $item (stage ${ORCH_STAGE:-?}, attempt ${ORCH_ATTEMPT:-1}, scenario ${scenario:-none}): $title"

# verdict pass|fail|blocked SUMMARY [ESCALATE] [ARTIFACT...]
verdict() {
    v=$1 summary=$2 escalate=${3:-false}
    shift 2
    [ "$#" -gt 0 ] && shift
    artifacts=""
    for a in "$@"; do artifacts="$artifacts${artifacts:+,}\"$a\""; done
    printf '{"verdict":"%s","summary":"%s","escalate":%s,"artifacts":[%s]}\n' \
        "$v" "$summary" "$escalate" "$artifacts" > "$verdict_file"
    note=""
    [ "$escalate" = true ] && note=" (escalate)"
    echo "$role: verdict $v$note: $summary"
}

unknown_scenario() {
    verdict blocked "no Demo-Scenario line in the prompt: a person must take this item"
    exit 0
}
