#!/bin/bash
# Copied from the team's shared tools (shared/tools/offline-llvm-shim.sh); see docs/backends.md.
# Lets Burn 0.22 / cubecl 0.11 CUDA builds work offline: stands in Debian's LLVM 22
# for the tracel-llvm 23.1.0-4 bundle that tracel-llvm-bundler's build.rs would download.
set -euo pipefail
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq llvm-22-dev libpolly-22-dev libzstd-dev
DATA="${XDG_DATA_HOME:-$HOME/.local/share}"
P="$DATA/tracel/tracel-llvm-23.1.0-4"   # = tracel_llvm_bundler::config::llvm_path()
mkdir -p "$P/bin"
touch "$P/.tracel-llvm-installed"        # sentinel: build.rs skips the download
cat > "$P/bin/llvm-config" <<'SH'
#!/bin/bash
# Forward to Debian's LLVM 22; rewrite absolute .so paths (libz3.so) to -lNAME,
# which tracel-llvm-bundler's norm_lib() would otherwise turn into -llibz3.
set -o pipefail
/usr/lib/llvm-22/bin/llvm-config "$@" | sed 's#/[^ ]*/lib\([A-Za-z0-9_+-]*\)\.so#-l\1#g'
SH
chmod +x "$P/bin/llvm-config"
