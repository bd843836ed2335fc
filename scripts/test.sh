#!/usr/bin/env bash
# The whole test suite: lint, host tests, every sample flow's scenarios, and a scaffolded flow.
# Installs what it needs (the wasm32-wasip2 target). Safe to run on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# A clean build gains nothing from incremental state, and it is most of target/'s size
# (17 of 29 GB on a developer's checkout): CI runs on a fresh clone with little disk to spare.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi

# Each step says how long the run has taken so far (CI must stay well under 40 minutes).
step() { printf '\n==> %s  [%dm%02ds]\n' "$*" $((SECONDS / 60)) $((SECONDS % 60)); }

step "toolchain"
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed | grep -q '^clippy' || rustup component add clippy
# Real peers and engines the integration tests use: sipp drives `vox serve`, baresip is a
# softphone, espeak-ng renders `say()` prompts, libopus encodes Opus. Installed from Debian when missing.
need=()
command -v sipp > /dev/null || need+=(sip-tester)
command -v baresip > /dev/null || need+=(baresip-core)
command -v espeak-ng > /dev/null || need+=(espeak-ng)
# libopus for the Opus codec (the `opus` cargo feature, on by default).
dpkg -s libopus-dev > /dev/null 2>&1 || need+=(libopus-dev)
# The offline speech recognizer: CMU PocketSphinx and its US English model.
dpkg -s libpocketsphinx-dev > /dev/null 2>&1 || need+=(libpocketsphinx-dev)
dpkg -s pocketsphinx-en-us > /dev/null 2>&1 || need+=(pocketsphinx-en-us)
# tcpdump shows what reached each sipp's media port in the bridged-call test.
command -v tcpdump > /dev/null || need+=(tcpdump)
# A real Postgres for the store's and the API's tests (SQLite is built in).
compgen -G "/usr/lib/postgresql/*/bin/postgres" > /dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then apt=(apt-get); else apt=(sudo apt-get); fi
  echo "installing ${need[*]}"
  "${apt[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq --no-install-recommends "${need[@]}"
fi

step "format"
cargo fmt --all --check
(cd sample-flows && cargo fmt --all --check)
(cd sample-strategies && cargo fmt --all --check)
(cd runtime/tests/guests && cargo fmt --all --check)

step "clippy (host, -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The media crate without Opus (what `--no-default-features` builds) must stay clean too.
cargo clippy -p voxide-media --features net --all-targets --locked -- -D warnings

step "clippy (sample flows and strategies, wasm32-wasip2, -D warnings)"
(cd sample-flows && cargo clippy --target wasm32-wasip2 --release --locked -- -D warnings)
(cd sample-strategies && cargo clippy --target wasm32-wasip2 --release --locked -- -D warnings)

step "postgres (for the store and API tests)"
# A throwaway server on a free loopback port, owned by the postgres user (it refuses root),
# in a temporary directory; stopped and removed when this script exits.
pg_bin=$(dirname "$(compgen -G "/usr/lib/postgresql/*/bin/postgres" | sort -V | tail -1)")
pg_dir=$(mktemp -d /tmp/voxide-pg.XXXXXX)
pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg=()
if [ "$(id -u)" = 0 ]; then
  chown postgres "$pg_dir"
  as_pg=(runuser -u postgres --)
fi
stop_pg() {
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop > /dev/null 2>&1 || true
  rm -rf "$pg_dir"
}
trap stop_pg EXIT
"${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -A trust -U voxide > "$pg_dir/initdb.log" 2>&1 \
  || { cat "$pg_dir/initdb.log"; exit 1; }
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $pg_dir -c fsync=off" start > /dev/null \
  || { cat "$pg_dir/server.log"; exit 1; }
export VOXIDE_TEST_POSTGRES="postgres://voxide@127.0.0.1:$pg_port/postgres"
echo "postgres on 127.0.0.1:$pg_port"

step "host tests"
cargo test --workspace --locked

step "sample flow scenarios (vox test)"
# `cargo test` above built target/debug/vox for the CLI's integration tests.
vox="$root/target/debug/vox"
flows=()
for dir in sample-flows/*/; do
  [ -f "$dir/Cargo.toml" ] || continue
  # Every sample flow has scenario tests; a missing one fails the build.
  if ! compgen -G "$dir/tests/*.toml" > /dev/null; then
    echo "error: ${dir%/} has no scenario tests (tests/*.toml)" >&2
    exit 1
  fi
  flows+=("${dir%/}")
done
"$vox" test --quiet "${flows[@]}"

step "scaffolded flows (vox new ... && vox test)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; stop_pg' EXIT
# The issue's literal check, in a directory of its own with its own target dir.
(cd "$tmp" && "$vox" new demo --template ivr-menu && cd demo && "$vox" test --quiet)
# The other templates share one target dir to keep CI fast.
for t in hello voicemail; do
  (cd "$tmp" && "$vox" new "my-$t" --template "$t" \
     && cd "my-$t" && CARGO_TARGET_DIR="$tmp/demo/target" "$vox" test --quiet)
done

step "all passed"
du -sh target 2> /dev/null | sed 's/^/disk used by /' || true
