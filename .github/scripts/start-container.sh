#!/usr/bin/env bash
# Start the Debian 12 container the harness runs in, with the runner's KVM device when
# it has one.
#
#   start-container.sh NAME
#
# A runner without KVM (most of GitHub's, and any machine without nested virtualisation)
# has no /dev/kvm, and `docker run --device /dev/kvm` would fail there: the container
# starts without it and the harness boots its kernels under TCG. Where the device
# exists it is passed in, and the harness itself probes whether KVM really runs a guest
# (a real-mode probe, then a kernel boot) and falls back to TCG when it does not; the
# container runs as root, which opens the device whatever its mode on the runner.
#
# Environment: KVM_DEVICE, the device to look for (default /dev/kvm; tests point it
# elsewhere); HARNESS_SNAPSHOT_MIRROR, passed into the container; GITHUB_WORKSPACE,
# mounted at /src; GITHUB_OUTPUT and GITHUB_STEP_SUMMARY, as GitHub Actions sets them.
# Step output: kvm=true|false.
set -euo pipefail

name=${1:?usage: start-container.sh NAME}
device=${KVM_DEVICE:-/dev/kvm}
cache="$HOME/harness-cache"

kvm=()
if [ -c "$device" ]; then
    echo "$device exists: passed into the container, where the harness probes whether KVM runs a guest"
    kvm=(--device "$device:/dev/kvm")
    echo "kvm=true" >>"$GITHUB_OUTPUT"
else
    echo "::notice title=No KVM::this runner has no $device: the kernels boot under TCG (emulation, several times slower)"
    echo "kvm=false" >>"$GITHUB_OUTPUT"
    echo "This runner has no \`$device\`: the kernels booted under TCG (emulation, several times slower)." \
        >>"$GITHUB_STEP_SUMMARY"
fi

mkdir -p "$cache"
docker run --detach --name "$name" "${kvm[@]}" \
    --volume "$GITHUB_WORKSPACE:/src" --workdir /src \
    --volume "$cache:/cache" --env HARNESS_CACHE_DIR=/cache \
    --env HARNESS_SNAPSHOT_MIRROR \
    debian:bookworm sleep infinity
