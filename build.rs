//! The dashboard's files (`dashboard/`) are embedded in the binary: build again when one is added, changed or
//! removed, which the embedding alone would not notice for a new file.

fn main() {
    println!("cargo:rerun-if-changed=dashboard");
}
