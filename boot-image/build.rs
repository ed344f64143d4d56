// Records the host triple so the tool can find rustup's llvm-tools.
fn main() {
    println!(
        "cargo:rustc-env=BOOT_IMAGE_HOST={}",
        std::env::var("TARGET").unwrap()
    );
}
