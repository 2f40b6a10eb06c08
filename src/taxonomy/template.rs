//! Template text: `{var}` and `{var.form}` placeholders, parsed once and rendered per prompt.

/// A parsed piece of template text.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Lit(String),
    /// `{var}` (form `None`) or `{var.form}`.
    Var {
        name: String,
        form: Option<String>,
    },
}

/// Parses `text` into pieces. `{{` and `}}` are literal braces.
/// Errors carry the byte offset of the problem within `text`.
pub fn parse(text: &str) -> Result<Vec<Piece>, (usize, String)> {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|p| p.1) == Some('{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek().map(|p| p.1) == Some('}') => {
                chars.next();
                lit.push('}');
            }
            '}' => return Err((i, "unmatched '}' (write '}}' for a literal brace)".into())),
            '{' => {
                let close = text[i..].find('}').ok_or((i, "unclosed '{'".to_string()))?;
                let inner = &text[i + 1..i + close];
                let (name, form) = match inner.split_once('.') {
                    Some((n, f)) => (n, Some(f.to_string())),
                    None => (inner, None),
                };
                let ident = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !ident(name) || form.as_deref().is_some_and(|f| !ident(f)) {
                    return Err((i, format!("bad placeholder '{{{inner}}}': expected {{var}} or {{var.form}}")));
                }
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                pieces.push(Piece::Var { name: name.to_string(), form });
                while chars.peek().is_some_and(|&(j, _)| j <= i + close) {
                    chars.next();
                }
            }
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    Ok(pieces)
}

/// Names of the variables used, in order of first use.
pub fn var_names(pieces: &[Piece]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for p in pieces {
        if let Piece::Var { name, .. } = p {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vars_forms_and_braces() {
        let p = parse("a photo of {a.article} {a} {{x}}").unwrap();
        assert_eq!(
            p,
            vec![
                Piece::Lit("a photo of ".into()),
                Piece::Var { name: "a".into(), form: Some("article".into()) },
                Piece::Lit(" ".into()),
                Piece::Var { name: "a".into(), form: None },
                Piece::Lit(" {x}".into()),
            ]
        );
        assert_eq!(var_names(&p), vec!["a"]);
    }

    #[test]
    fn rejects_bad_placeholders() {
        assert_eq!(parse("x {a").unwrap_err().0, 2);
        assert!(parse("x {a b}").is_err());
        assert!(parse("x }").is_err());
        assert!(parse("{a.}").is_err());
    }
}
