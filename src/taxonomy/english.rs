//! Default English word forms for slot values: the indefinite article and the plural.
//! A value's explicit `article`/`plural` always wins over these rules.

/// "an" before a vowel letter, else "a" ("an apple", "a banana").
pub fn article(value: &str) -> &'static str {
    match value.trim_start().chars().next().map(|c| c.to_ascii_lowercase()) {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

/// Plural of the last word: "teddy bear" → "teddy bears", "bus" → "buses", "berry" → "berries".
pub fn plural(value: &str) -> String {
    let (head, last) = match value.rfind(' ') {
        Some(i) => value.split_at(i + 1),
        None => ("", value),
    };
    format!("{head}{}", plural_word(last))
}

fn plural_word(word: &str) -> String {
    let lower = word.to_ascii_lowercase();
    let consonant_before =
        |suffix_len: usize| lower[..lower.len() - suffix_len].chars().last().is_some_and(|c| !"aeiou".contains(c));
    if lower.ends_with("s")
        || lower.ends_with('x')
        || lower.ends_with('z')
        || lower.ends_with("ch")
        || lower.ends_with("sh")
    {
        format!("{word}es")
    } else if lower.ends_with('y') && consonant_before(1) {
        format!("{}ies", &word[..word.len() - 1])
    } else {
        format!("{word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn articles() {
        assert_eq!(article("apple"), "an");
        assert_eq!(article("Orange cat"), "an");
        assert_eq!(article("banana"), "a");
        assert_eq!(article(""), "a");
    }

    #[test]
    fn plurals() {
        assert_eq!(plural("teddy bear"), "teddy bears");
        assert_eq!(plural("bus"), "buses");
        assert_eq!(plural("wine glass"), "wine glasses");
        assert_eq!(plural("berry"), "berries");
        assert_eq!(plural("toy"), "toys");
        assert_eq!(plural("box"), "boxes");
        assert_eq!(plural("couch"), "couches");
    }
}
