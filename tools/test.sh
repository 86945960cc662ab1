#!/usr/bin/env bash
# The project's test command (the README's second command; .ci/run calls it).
# Installs what the build needs from Debian if it is missing, then runs every
# test of the workspace: unit, integration (real cdylib plugins built and
# dlopen'ed), the short torture runs, and the doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -e /usr/include/urcu.h ] || need+=(liburcu-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  echo "tools/test.sh: installing ${need[*]} from Debian"
  if [ "$(id -u)" -ne 0 ]; then
    echo "tools/test.sh: need root to apt-get install ${need[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

cargo test --workspace "$@"
