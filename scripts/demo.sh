#!/usr/bin/env bash
# The sample flows offline: build them and run each against a simulated caller, printing who
# said and did what at which (virtual) time. (Real calls: scripts/serve.sh.)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
cargo build -p voxide-cli --locked
exec ./target/debug/vox test sample-flows/hello sample-flows/ivr-menu sample-flows/voicemail sample-flows/conference sample-flows/agent "$@"
