#!/bin/sh
# Example orch agent for the __ROLE__ role, written by `orch init`.
#
# orch runs this in the item's working directory with ORCH_ITEM, ORCH_STAGE, ORCH_ROLE,
# ORCH_ATTEMPT, ORCH_JOB_ID, ORCH_WORKTREE, ORCH_PROMPT_FILE and ORCH_VERDICT_FILE
# set. A real agent reads the prompt, does its work in that directory (orch will commit
# whatever it changes), and writes its verdict as JSON to $ORCH_VERDICT_FILE:
#   {"verdict": "pass" | "fail" | "blocked", "summary": "one line", "escalate": false}
# Replace the body below with your agent, for example:
#   claude -p "$(cat "$ORCH_PROMPT_FILE")" --output-format stream-json
set -eu

role=__ROLE__
item=${ORCH_ITEM:?ORCH_ITEM is not set: orch sets it when it runs this agent}
worktree=${ORCH_WORKTREE:?ORCH_WORKTREE is not set: orch sets it when it runs this agent}
verdict_file=${ORCH_VERDICT_FILE:?ORCH_VERDICT_FILE is not set: orch sets it when it runs this agent}

echo "$role: working on $item (stage ${ORCH_STAGE:-?}, attempt ${ORCH_ATTEMPT:-1})"
if [ -n "${ORCH_PROMPT_FILE:-}" ] && [ -f "$ORCH_PROMPT_FILE" ]; then
    echo "$role: reading the prompt in $ORCH_PROMPT_FILE"
fi

# The "work": a note in the item's worktree. orch commits it on the item's branch
# (feature/<KEY>-<kind>-<slug>) after this run and pushes it; the deploy stage
# merges the branch into main.
notes="docs/work-items/$item/$role.md"
mkdir -p "$worktree/docs/work-items/$item"
printf '%s ran for %s (job %s, attempt %s)\n' \
    "$role" "$item" "${ORCH_JOB_ID:-?}" "${ORCH_ATTEMPT:-1}" >> "$worktree/$notes"
echo "$role: wrote $notes"

printf '{"verdict":"pass","summary":"%s example agent recorded its run in %s"}\n' \
    "$role" "$notes" > "$verdict_file"
echo "$role: verdict pass written to $verdict_file"
