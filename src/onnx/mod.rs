//! ONNX Runtime for the real models: finding and loading the runtime, checked model sessions,
//! and CLIP's tokenizer (shared by the ONNX teacher and, later, the CLIP scorer).

pub mod clip_tokenizer;
pub mod model;
pub mod runtime;

use std::path::Path;

/// `<kind>:<folder name>@<hash_tree>`: how a model is named in samples, specs and manifests.
pub fn model_id(kind: &str, root: &Path) -> Result<String, String> {
    let name = root.file_name().and_then(|n| n.to_str()).unwrap_or(kind);
    Ok(format!("{kind}:{name}@{}", hash_tree(root)?))
}

/// blake3 over a model folder's files in name order (names, then bytes), cut to 16 hex digits:
/// the model's identity in every sample.
pub fn hash_tree(root: &Path) -> Result<String, String> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let p = e.map_err(|e| format!("{}: {e}", d.display()))?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut h = blake3::Hasher::new();
    for f in files {
        let rel = f.strip_prefix(root).unwrap_or(&f).to_string_lossy().to_string();
        h.update(rel.as_bytes());
        h.update_mmap(&f).map_err(|e| format!("{}: {e}", f.display()))?;
    }
    Ok(h.finalize().to_hex()[..16].to_string())
}
