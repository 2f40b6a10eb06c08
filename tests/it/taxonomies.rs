//! The shipped taxonomies meet their stated contents.

use std::collections::BTreeSet;
use std::path::Path;

use lightgen::taxonomy::Taxonomy;

fn load(name: &str) -> Taxonomy {
    Taxonomy::load(&format!("prompts/{name}.toml"), &crate::root()).unwrap()
}

fn slot<'a>(t: &'a Taxonomy, name: &str) -> Vec<&'a str> {
    t.slots.iter().find(|s| s.name == name).unwrap().values.iter().map(|v| v.text.as_str()).collect()
}

const COLORS: [&str; 10] = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"];
const FAMILIES: [&str; 6] = ["single_object", "two_object", "counting", "colors", "position", "color_attr"];

#[test]
fn shapes_world_covers_genevals_axes() {
    let t = load("shapes");
    assert!(slot(&t, "shape").len() >= 10);
    assert_eq!(slot(&t, "color").into_iter().collect::<BTreeSet<_>>(), COLORS.into_iter().collect());
    assert_eq!(slot(&t, "count"), vec!["1", "2", "3", "4"]);
    assert_eq!(slot(&t, "relation").len(), 4);
    assert!(slot(&t, "size").len() >= 2 && slot(&t, "background").len() >= 2 && slot(&t, "style").len() >= 2);
    let fams: BTreeSet<&str> = t.families.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(fams, FAMILIES.into_iter().collect());
}

#[test]
fn geneval_has_80_coco_classes_and_10_colours() {
    let t = load("geneval");
    assert_eq!(slot(&t, "object").len(), 80);
    assert_eq!(slot(&t, "color").len(), 10);
    let fams: BTreeSet<&str> = t.families.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(fams, FAMILIES.into_iter().collect());
}

#[test]
fn general_is_broad() {
    let t = load("general");
    let values: usize = t.slots.iter().map(|s| s.values.len()).sum();
    assert!(values >= 500, "{values} values");
    assert!(t.total_capacity() > 1e9, "{}", t.total_capacity());
}

#[test]
fn builtins_are_the_shipped_files() {
    for (name, text) in lightgen::taxonomy::BUILTIN {
        let file = std::fs::read_to_string(crate::root().join("prompts").join(format!("{name}.toml"))).unwrap();
        assert_eq!(&file, text);
        Taxonomy::load(&format!("builtin:{name}"), Path::new(".")).unwrap();
    }
}
