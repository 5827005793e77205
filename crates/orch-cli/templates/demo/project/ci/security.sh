#!/bin/sh
# Gate: no eval, no piping downloads into a shell, no hard-coded secrets in src/.
if grep -n -E '(^|[^a-z_])eval[[:space:]]|curl[^|]*\|[[:space:]]*(ba)?sh|(password|secret|api_key)[[:space:]]*=' src/*.sh; then
    echo "security: findings above"
    exit 1
fi
echo "security: no findings in $(ls src/*.sh | wc -l | tr -d ' ') files"
