//! uniffi's binding generator, pinned to the uniffi version this crate is built with.
fn main() {
    uniffi::uniffi_bindgen_main()
}
