#!/usr/bin/env bash
# Resolve a kernel series to its release and packages, or skip a series whose archive
# cannot be reached when that archive is the Debian snapshot archive.
#
#   resolve-kernel.sh SERIES INVOKE...
#
# INVOKE... is the command that runs the harness's `invoke` (in CI,
# `docker exec NAME invoke`). Step outputs:
#   skip=false, release=RELEASE, packages="NAME=VERSION ..."    the series resolved
#   skip=true, reason=MESSAGE                                   the snapshot archive did
#                                                               not answer; the job summary
#                                                               says so and the step succeeds
# Any other failure fails the step with the harness's message.
#
# The snapshot archive (a series that left the live Debian archive, 6.6 today) is often
# slow or down for hours; its being unreachable says nothing about the harness, so it
# must not fail the run. The harness reports it as a MirrorError (harness/kernels/apt.py)
# whose message starts "series S comes from the Debian snapshot archive, which is not
# reachable from here" (or "... which is not configured"), and `invoke` exits 1 with
# "error: " and that message; tests/unit/test_workflow.py takes the message from the
# harness, so a change of its wording fails there. A live archive that does not answer
# still fails the job: every other series must run.
set -euo pipefail

series=${1:?usage: resolve-kernel.sh SERIES INVOKE...}
shift
[ $# -gt 0 ] || { echo "usage: resolve-kernel.sh SERIES INVOKE..." >&2; exit 2; }

errors=$(mktemp)
trap 'rm -f "$errors"' EXIT

if release=$("$@" kernels.resolve --kernel "$series" 2>"$errors"); then
    cat "$errors" >&2
    # The index is fresh now: this second call reads it and needs no network.
    packages=$("$@" kernels.resolve --kernel "$series" --packages)
    echo "kernel $series resolves to $release ($packages)"
    {
        echo "skip=false"
        echo "release=$release"
        echo "packages=$packages"
    } >>"$GITHUB_OUTPUT"
    exit 0
else
    status=$?
fi

cat "$errors" >&2
# The harness's message is the last thing it prints, after any logged warnings.
message=$(sed -n -e '/^error: /,$p' "$errors" | sed -e '1s/^error: //')
if [ "$status" -ne 1 ] || ! grep -qF "series $series comes from the Debian snapshot archive" <<<"$message"; then
    echo "::error title=kernel $series::could not resolve kernel $series (exit status $status), see the log"
    exit "$status"
fi

delimiter="reason_$RANDOM$RANDOM"
{
    echo "skip=true"
    echo "reason<<$delimiter"
    echo "$message"
    echo "$delimiter"
} >>"$GITHUB_OUTPUT"
{
    echo "### ⏭️ kernel $series: skipped, the Debian snapshot archive was not reachable"
    echo
    # A quote, line by line (the message of a failed apt update spans several).
    # shellcheck disable=SC2001
    sed -e 's/^/> /' <<<"$message"
} >>"$GITHUB_STEP_SUMMARY"
# An annotation is one line: %, CR and LF are escaped as GitHub's workflow commands want.
annotation=${message//'%'/'%25'}
annotation=${annotation//$'\r'/'%0D'}
annotation=${annotation//$'\n'/'%0A'}
echo "::notice title=kernel $series skipped::$annotation"
