#!/usr/bin/env bash
# Voxide's main job: `vox serve` answering SIP on 0.0.0.0:5060 (UDP and TCP), with the sample
# flows routed by called user — hello, ivr-menu, voicemail, conference, agent — and real media
# (RTP 10000-20000, prompts spoken by espeak-ng, recordings under ./voxide-data/recordings).
# Installs what it needs when missing: the wasm32-wasip2 target, espeak-ng (Debian).
# Extra arguments go to `vox serve`, e.g. `bash scripts/serve.sh --sip 127.0.0.1:5070`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
if ! command -v espeak-ng > /dev/null; then
  if [ "$(id -u)" = 0 ]; then apt=(apt-get); else apt=(sudo apt-get); fi
  "${apt[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq --no-install-recommends espeak-ng \
    || echo "warning: espeak-ng could not be installed: say() prompts will be silent" >&2
fi
cargo build -p voxide-cli --locked
exec ./target/debug/vox serve "$@"
