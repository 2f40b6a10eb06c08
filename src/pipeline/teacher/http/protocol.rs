//! The three wire protocols: how a request body is built and how an answer becomes image
//! bytes: OpenAI's images API (`POST /v1/images/generations`, answer `data[0].b64_json` or
//! `url`), AUTOMATIC1111's `POST /sdapi/v1/txt2img` (answer `images[0]`, base64) and Hugging
//! Face text-to-image (`{"inputs", "parameters"}`, answer raw image bytes).

use base64::Engine;
use serde_json::{json, Value};

use super::super::Request;
use crate::config::{HttpConfig, Protocol};

/// The path a protocol posts to when the endpoint URL has none.
pub fn default_path(p: Protocol) -> &'static str {
    match p {
        Protocol::Openai => "/v1/images/generations",
        Protocol::A1111 => "/sdapi/v1/txt2img",
        Protocol::Hf => "/",
    }
}

/// The full URL to post to: the endpoint as written when it has a path, else base + the
/// protocol's path.
pub fn post_url(base: &str, p: Protocol) -> String {
    let after_scheme = base.split_once("://").map_or(base, |(_, rest)| rest);
    match after_scheme.find('/') {
        Some(i) if after_scheme[i..] != *"/" => base.to_string(),
        _ => format!("{}{}", base.trim_end_matches('/'), default_path(p)),
    }
}

/// The exact JSON body for one request.
pub fn body(cfg: &HttpConfig, r: &Request<'_>) -> Value {
    let mut b = match cfg.protocol {
        Protocol::Openai => {
            let mut b = json!({
                "prompt": r.prompt.text,
                "n": 1,
                "size": format!("{}x{}", r.width, r.height),
                "response_format": "b64_json",
            });
            if let Some(m) = &cfg.model {
                b["model"] = json!(m);
            }
            if cfg.send_seed {
                b["seed"] = json!(r.seed);
            }
            b
        }
        Protocol::A1111 => {
            // A1111 seeds numpy, which takes 32 bits.
            let mut b = json!({
                "prompt": r.prompt.text,
                "seed": r.seed & 0xFFFF_FFFF,
                "width": r.width,
                "height": r.height,
                "batch_size": 1,
                "n_iter": 1,
                "send_images": true,
                "save_images": false,
            });
            if let Some(s) = cfg.steps {
                b["steps"] = json!(s);
            }
            if let Some(g) = cfg.guidance {
                b["cfg_scale"] = json!(g);
            }
            if let Some(n) = &cfg.negative_prompt {
                b["negative_prompt"] = json!(n);
            }
            b
        }
        Protocol::Hf => {
            let mut p = json!({ "width": r.width, "height": r.height, "seed": r.seed });
            if let Some(s) = cfg.steps {
                p["num_inference_steps"] = json!(s);
            }
            if let Some(g) = cfg.guidance {
                p["guidance_scale"] = json!(g);
            }
            if let Some(n) = &cfg.negative_prompt {
                p["negative_prompt"] = json!(n);
            }
            json!({ "inputs": r.prompt.text, "parameters": p })
        }
    };
    for (k, v) in &cfg.extra {
        b[k] = v.clone();
    }
    if cfg.send_structure {
        b["lightgen"] = json!({ "prompt_id": r.prompt.prompt_id, "spec": r.prompt.spec, "slots": r.prompt.slots });
    }
    b
}

/// What a server's answer holds.
#[derive(Debug)]
pub enum Answer {
    Bytes(Vec<u8>),
    /// An image to fetch (OpenAI `url` answers).
    Url(String),
}

/// Extracts the image from a 2xx answer body, or says what is wrong with it.
pub fn parse(p: Protocol, content_type: &str, body: &[u8]) -> Result<Answer, String> {
    match p {
        Protocol::Hf => {
            if content_type.starts_with("application/json") {
                return Err(format!("expected image bytes, got JSON: {}", snippet(body)));
            }
            if body.is_empty() {
                return Err("empty answer body".into());
            }
            Ok(Answer::Bytes(body.to_vec()))
        }
        Protocol::Openai => {
            let v: Value =
                serde_json::from_slice(body).map_err(|e| format!("answer is not JSON ({e}): {}", snippet(body)))?;
            let item = v["data"].get(0).ok_or_else(|| format!("answer has no data[0]: {}", snippet(body)))?;
            if let Some(b) = item["b64_json"].as_str() {
                return decode_b64(b).map(Answer::Bytes);
            }
            if let Some(u) = item["url"].as_str() {
                return Ok(Answer::Url(u.to_string()));
            }
            Err("data[0] has neither b64_json nor url".into())
        }
        Protocol::A1111 => {
            let v: Value =
                serde_json::from_slice(body).map_err(|e| format!("answer is not JSON ({e}): {}", snippet(body)))?;
            let b = v["images"].get(0).and_then(Value::as_str).ok_or("answer has no images[0]")?;
            decode_b64(b).map(Answer::Bytes)
        }
    }
}

/// Base64, with or without a `data:image/...;base64,` prefix.
pub fn decode_b64(s: &str) -> Result<Vec<u8>, String> {
    let s = s.split_once(";base64,").map_or(s, |(_, rest)| rest);
    base64::engine::general_purpose::STANDARD.decode(s.trim()).map_err(|e| format!("bad base64 ({e})"))
}

/// The first bytes of a body, printable, for error messages.
pub fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(160)]).replace('\n', " ");
    if body.len() > 160 {
        format!("{s}…")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_the_protocol_path_only_when_they_have_none() {
        assert_eq!(post_url("http://h:8080", Protocol::Openai), "http://h:8080/v1/images/generations");
        assert_eq!(post_url("http://h:8080/", Protocol::A1111), "http://h:8080/sdapi/v1/txt2img");
        assert_eq!(post_url("https://h/models/x", Protocol::Hf), "https://h/models/x");
        assert_eq!(post_url("http://h/custom/gen", Protocol::Openai), "http://h/custom/gen");
    }

    #[test]
    fn answers_are_checked() {
        let ok = br#"{"data":[{"b64_json":"aGVsbG8="}]}"#;
        assert!(matches!(parse(Protocol::Openai, "application/json", ok), Ok(Answer::Bytes(b)) if b == b"hello"));
        let truncated = br#"{"data":[{"b64_json":"aGVsbG8"}]}"#;
        assert!(parse(Protocol::Openai, "application/json", truncated).unwrap_err().contains("base64"));
        assert!(parse(Protocol::Openai, "application/json", b"<html>").unwrap_err().contains("not JSON"));
        let a = br#"{"images":["data:image/png;base64,aGVsbG8="]}"#;
        assert!(matches!(parse(Protocol::A1111, "application/json", a), Ok(Answer::Bytes(b)) if b == b"hello"));
        assert!(parse(Protocol::Hf, "application/json", br#"{"error":"loading"}"#).unwrap_err().contains("loading"));
    }
}
