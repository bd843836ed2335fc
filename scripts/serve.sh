#!/usr/bin/env bash
# Voxide's main job: `vox serve` answering SIP on 0.0.0.0:5060 (UDP and TCP), with the sample
# flows routed by called user — hello, ivr-menu, voicemail, conference, agent, receptionist —
# and real media
# (RTP 10000-20000, prompts spoken by espeak-ng, recordings under ./voxide-data/recordings),
# and the control API on 0.0.0.0:8080 (the first start prints the admin key, also saved in
# ./voxide-data/admin.key).
# Installs what it needs when missing: the wasm32-wasip2 target, espeak-ng, libopus-dev,
# libpocketsphinx-dev and pocketsphinx-en-us (Debian).
# Extra arguments go to `vox serve`, e.g. `bash scripts/serve.sh --sip 127.0.0.1:5070`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
need=()
command -v espeak-ng > /dev/null || need+=(espeak-ng)
dpkg -s libopus-dev > /dev/null 2>&1 || need+=(libopus-dev)
# The offline speech recognizer for flows that listen: PocketSphinx and its US English model.
dpkg -s libpocketsphinx-dev > /dev/null 2>&1 || need+=(libpocketsphinx-dev)
dpkg -s pocketsphinx-en-us > /dev/null 2>&1 || need+=(pocketsphinx-en-us)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then apt=(apt-get); else apt=(sudo apt-get); fi
  echo "installing ${need[*]}"
  "${apt[@]}" update -qq || true
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq --no-install-recommends "${need[@]}" \
    || echo "warning: could not install ${need[*]}: see below for what is missing" >&2
fi
command -v espeak-ng > /dev/null \
  || echo "warning: espeak-ng is missing: say() prompts will be silent" >&2
features=(--no-default-features)
if dpkg -s libopus-dev > /dev/null 2>&1; then
  features+=(--features opus)
else
  echo "warning: libopus-dev is missing: building without Opus (G.711 only)" >&2
fi
if dpkg -s libpocketsphinx-dev > /dev/null 2>&1; then
  features+=(--features speech)
else
  echo "warning: libpocketsphinx-dev is missing: building without speech recognition" >&2
fi
cargo build -p voxide-cli --locked "${features[@]}"
exec ./target/debug/vox serve "$@"
