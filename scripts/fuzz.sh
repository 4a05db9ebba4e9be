#!/usr/bin/env bash
# Runs every fuzz target of the module for FUZZTIME (default 60s) each.
#   scripts/fuzz.sh [FUZZTIME]
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.26.9}
time=${1:-60s}
status=0
while IFS= read -r line; do
  file=${line%%:*}
  target=$(sed -E 's/^func (Fuzz[A-Za-z0-9_]*).*/\1/' <<<"${line#*:}")
  pkg=./$(dirname "$file")
  echo "== $pkg $target ($time)"
  if ! go test -run='^$' -fuzz="^${target}\$" -fuzztime="$time" "$pkg" 2>&1 | tail -3; then
    status=1
  fi
done < <(grep -rH --include='*_test.go' -E '^func Fuzz' . | sort)
exit $status
