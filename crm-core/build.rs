//! Rebuilds when a migration is added: `sqlx::migrate!` embeds the files it saw.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
