//! Rebuilds when a migration is added or changed: `sqlx::migrate!` embeds
//! the `migrations/` directory in the binary.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
