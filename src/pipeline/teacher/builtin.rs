//! `builtin:shapes`: the shapes world as a teacher.

use serde_json::json;

use super::{Output, Request, Teacher};
use crate::world::render::{render, ShapesTeacherConfig};
use crate::world::SceneRequest;

pub struct ShapesTeacher {
    settings: ShapesTeacherConfig,
}

impl ShapesTeacher {
    pub fn new(settings: ShapesTeacherConfig) -> ShapesTeacher {
        ShapesTeacher { settings }
    }

    fn one(&self, r: &Request<'_>) -> Result<Output, String> {
        if r.width != r.height {
            return Err(format!("the shapes world draws square images; asked for {}x{}", r.width, r.height));
        }
        let req = SceneRequest::from_prompt(r.prompt.spec.as_deref(), &r.prompt.slots)?;
        let out = render(&req, r.seed, r.width, &self.settings)?;
        Ok(Output {
            image: out.image,
            params: json!({
                "teacher": self.id(),
                "prompt": r.prompt.text,
                "seed": r.seed,
                "width": r.width,
                "height": r.height,
                "shapes": self.settings,
            }),
            truth: Some(serde_json::to_value(&out.scene).expect("scene serialises")),
        })
    }
}

impl Teacher for ShapesTeacher {
    fn id(&self) -> &str {
        "builtin:shapes"
    }

    fn generate(&self, batch: &[Request<'_>]) -> Vec<Result<Output, String>> {
        batch.iter().map(|r| self.one(r)).collect()
    }
}
