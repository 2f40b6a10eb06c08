//! Scorers: prompt–image alignment. The trait, and the shapes analyzer of the embedded world;
//! CLIP (ONNX) for real teachers is `clip.rs`, and `mod.rs` picks one from the config.

use image::RgbImage;

use crate::world::analyze::Analyzer;
use crate::world::Spec;

/// What a scorer sees of a sample.
pub struct ScoreInput<'a> {
    pub image: &'a RgbImage,
    pub prompt: &'a str,
    pub spec: Option<&'a str>,
}

/// A raw score on the scorer's own scale, and a GenEval-style verdict when it has one.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub score: f32,
    pub verdict: Option<(bool, String)>,
    /// A unit image embedding (CLIP), for semantic deduplication.
    pub embedding: Option<Vec<f32>>,
}

/// Scores prompt–image pairs. One failure is a per-sample error.
pub trait Scorer: Send + Sync {
    /// Recorded with every score: scores of different scorers are never mixed.
    fn id(&self) -> &str;
    /// How many samples the scorer prefers per call.
    fn batch_size(&self) -> usize {
        1
    }
    fn score(&self, batch: &[ScoreInput<'_>]) -> Vec<std::result::Result<Scored, String>>;
}

/// The shapes analyzer: alignment score in [0, 1] and GenEval's verdict.
pub struct ShapesScorer(pub Analyzer);

impl Scorer for ShapesScorer {
    fn id(&self) -> &str {
        "builtin:shapes"
    }

    fn score(&self, batch: &[ScoreInput<'_>]) -> Vec<std::result::Result<Scored, String>> {
        batch
            .iter()
            .map(|x| {
                let spec = x.spec.ok_or("the shapes analyzer needs the prompt's GenEval spec")?;
                let spec: Spec = serde_json::from_str(spec).map_err(|e| format!("unreadable spec: {e}"))?;
                let j = self.0.judge(x.image, &spec);
                Ok(Scored { score: j.score, verdict: Some((j.verdict.pass, j.verdict.reason)), embedding: None })
            })
            .collect()
    }
}
