//! Progress bars with rate and ETA (indicatif), hidden with `-q` or when stderr is no terminal.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `total` items; `unit` names them ("prompts").
pub fn bar(total: u64, prefix: &str, unit: &str, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    let template = format!("{{prefix:>8}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} {{per_sec}} ETA {{eta}}");
    pb.set_style(ProgressStyle::with_template(&template).expect("static template").progress_chars("=> "));
    pb.set_prefix(prefix.to_string());
    pb
}
