//! ONNX Runtime for the real models: finding and loading the runtime, checked model sessions,
//! and CLIP's tokenizer (shared by the ONNX teacher and, later, the CLIP scorer).

pub mod clip_tokenizer;
pub mod model;
pub mod runtime;
