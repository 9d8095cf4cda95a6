//! `sqlx::migrate!` embeds the migrations at compile time; without this,
//! cargo would not notice a new or changed one and keep the old list.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
