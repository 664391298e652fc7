//! Rebuild when a migration or the rollback script is added, removed or edited,
//! so the embedded copies never go stale.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
    println!("cargo:rerun-if-changed=../../rollback");
}
