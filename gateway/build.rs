//! Rebuild when a migration is added: `sqlx::migrate!` embeds the directory at compile
//! time and the compiler cannot see new files in it otherwise.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
