//! `schemas/*.json` must match the Rust types they are generated from.

#[test]
fn schemas_match_the_types() {
    for (name, text) in lightgen::schema::all() {
        let path = crate::root().join("schemas").join(name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(on_disk == text, "{} is out of date: run `cargo run -- schema --out schemas`", path.display());
    }
}
