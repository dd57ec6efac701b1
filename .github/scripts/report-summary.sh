#!/usr/bin/env bash
# Write the results of a kernel's run to the job summary.
#
#   report-summary.sh SERIES INVOKE...
#
# INVOKE... runs the harness's `invoke` (in CI, `docker exec NAME invoke`). When no
# results can be reported (the run ended before it wrote any), the summary says so and
# points at the log; the test step has failed already, so this step does not.
set -euo pipefail

series=${1:?usage: report-summary.sh SERIES INVOKE...}
shift
[ $# -gt 0 ] || { echo "usage: report-summary.sh SERIES INVOKE..." >&2; exit 2; }

report=$(mktemp)
trap 'rm -f "$report"' EXIT

if "$@" report --format markdown --title "BPF samples on kernel $series" >"$report"; then
    cat "$report" >>"$GITHUB_STEP_SUMMARY"
else
    echo "### ❌ BPF samples on kernel $series: no results, see the job's log" \
        >>"$GITHUB_STEP_SUMMARY"
fi
