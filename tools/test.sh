#!/usr/bin/env bash
# The project's test command (the README's second command; .ci/run calls it).
# Runs every test of the workspace: unit, integration (real cdylib plugins
# built and dlopen'ed), the short torture runs, and the doc tests.
#
# Needs only a Rust toolchain and a C compiler; no root, no packages.
# liburcu (Debian's liburcu-dev) is a peer of the benches only: when it is
# installed, its shim is built and tested too; when it is not, the benches'
# liburcu peers are skipped (see benches/build.rs). .ci/run installs it.
set -euo pipefail
cd "$(dirname "$0")/.."

have_urcu=no
for d in "${URCU_INCLUDE_DIR:-}" /usr/include/x86_64-linux-gnu /usr/include/aarch64-linux-gnu /usr/include /usr/local/include; do
  if [ -n "$d" ] && [ -e "$d/urcu/urcu-memb.h" ]; then have_urcu=yes; break; fi
done
if [ "$have_urcu" = no ]; then
  echo "tools/test.sh: liburcu not found; the benches' liburcu peer is skipped (apt-get install -y liburcu-dev to include it)"
fi

cargo test --workspace "$@"
