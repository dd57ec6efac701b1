#!/usr/bin/env bash
# Test the samples on one kernel series; on a pull request, as an A/B run against its base.
#
#   test-kernel.sh SERIES BASE INVOKE...
#
# INVOKE... runs the harness's `invoke` (in CI, `docker exec NAME invoke`). BASE is the
# pull request's base commit, empty for a push or a manual run. With a BASE the run is
# `invoke test --baseline BASE`: the base's loaders and samples run beside the pull
# request's in the same boot, the job summary (report-summary.sh) shows the comparison
# first, and the step fails only when a case regressed. Without one it is a plain run,
# which fails when any case fails. The checkout must hold BASE (fetch-depth: 0).
set -euo pipefail

[ $# -ge 3 ] || { echo "usage: test-kernel.sh SERIES BASE INVOKE..." >&2; exit 2; }
series=$1
base=$2
shift 2

if [ -n "$base" ]; then
    echo "A/B: kernel $series, this pull request against its base $base"
    exec "$@" test --kernel "$series" --baseline "$base"
fi
exec "$@" test --kernel "$series"
