#!/usr/bin/env bash
# Builds B3IQFFI.xcframework for the Swift package (macOS only: needs Xcode's xcodebuild and
# the Apple Rust targets). Usage, from anywhere:
#   bindings/swift/scripts/build-xcframework.sh
# Then `swift build` / `swift test` in bindings/swift, or add the package to an Xcode project.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HERE/../../target}"

if [ "$(uname -s)" != Darwin ]; then
  echo "build-xcframework.sh needs macOS with Xcode (xcodebuild); on Linux use scripts/generate.sh" >&2
  exit 1
fi

TARGETS=(aarch64-apple-darwin x86_64-apple-darwin aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios)
rustup target add "${TARGETS[@]}"
for t in "${TARGETS[@]}"; do
  cargo build --manifest-path "$HERE/Cargo.toml" -p b3iq-swift --lib --release --target "$t"
done

# Regenerate the Swift sources and the C header/modulemap from the built library.
"$HERE/scripts/generate.sh"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/headers"
cp "$HERE/include/B3IQFFI.h" "$WORK/headers/"
cp "$HERE/include/B3IQFFI.modulemap" "$WORK/headers/module.modulemap"

lib() { echo "$CARGO_TARGET_DIR/$1/release/libb3iq_ffi.a"; }
mkdir -p "$WORK/macos" "$WORK/ios-sim"
lipo -create "$(lib aarch64-apple-darwin)" "$(lib x86_64-apple-darwin)" -output "$WORK/macos/libb3iq_ffi.a"
lipo -create "$(lib aarch64-apple-ios-sim)" "$(lib x86_64-apple-ios)" -output "$WORK/ios-sim/libb3iq_ffi.a"

rm -rf "$HERE/B3IQFFI.xcframework"
xcodebuild -create-xcframework \
  -library "$WORK/macos/libb3iq_ffi.a" -headers "$WORK/headers" \
  -library "$(lib aarch64-apple-ios)" -headers "$WORK/headers" \
  -library "$WORK/ios-sim/libb3iq_ffi.a" -headers "$WORK/headers" \
  -output "$HERE/B3IQFFI.xcframework"
echo "built $HERE/B3IQFFI.xcframework"
