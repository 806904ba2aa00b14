//! One evaluation, end to end: for every target, generate N samples per
//! prompt with the target's vectors (and its negative word in the negative
//! prompt, DreamArtist-style), embed them with CLIP, score them against the
//! reference image(s) and the prompts in words, and write `eval.json` and the
//! grids into the run folder. Reports through a callback; never prints.

use std::path::PathBuf;

use serde::Serialize;

use super::clip::ClipModel;
use super::error::EvalError;
use super::grid::write_grid;
use super::metrics::{diversity, fidelity, mean_of, normalized_rows, text_alignment};
use super::prompts::{default_prompts, load_prompt_file, EvalPrompt};
use super::report::{eval_dir, now_ms, save_report, EvalReport, PromptReport, REPORT_FORMAT};
use super::target::{load_target, resolve_targets, Target, TargetVectors};
use crate::concept::Concept;
use crate::generate::conditioning::words_in;
use crate::generate::word_bank;
use crate::generate::{generate, GenerateRequest, StepControl, WordBank};
use crate::sd::{SamplerKind, StableDiffusion};
use crate::train::RunDir;
use crate::workspace::Workspace;

/// How samples are drawn and scored: the same for every target of one
/// evaluation, so their numbers compare.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalSettings {
    /// Samples per prompt (seeds `seed`, `seed + 1`, …).
    pub samples: usize,
    pub seed: u64,
    pub steps: usize,
    pub cfg: f64,
    pub sampler: SamplerKind,
    /// Overrides the concept's class word for CLIP-T.
    pub class_word: Option<String>,
    /// A prompt file instead of the preset's built-in prompts.
    pub prompts: Option<PathBuf>,
}

impl Default for EvalSettings {
    fn default() -> Self {
        let g = GenerateRequest::default();
        Self {
            samples: 4,
            seed: 0,
            steps: g.steps,
            cfg: g.cfg,
            sampler: g.sampler,
            class_word: None,
            prompts: None,
        }
    }
}

/// What to evaluate: a concept's targets (none = its latest run's pair).
#[derive(Debug, Clone)]
pub struct EvalRequest {
    pub concept: String,
    pub targets: Vec<Target>,
    pub settings: EvalSettings,
}

/// Progress of an evaluation.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EvalEvent {
    /// Target `index` of `count` starts.
    Target {
        index: usize,
        count: usize,
        label: String,
    },
    /// Sampling prompt `index` of `count` of the current target.
    Prompt {
        target: String,
        index: usize,
        count: usize,
        prompt: String,
    },
    /// A target is done and its report written.
    Report { target: String, path: PathBuf },
}

/// What the progress callback asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalControl {
    Continue,
    /// Stop as soon as possible; `evaluate` returns [`EvalError::Cancelled`].
    Stop,
}

/// Embeds images and returns their unit-length rows.
fn unit_image_embeddings(
    clip: &ClipModel,
    images: &[&image::RgbImage],
) -> Result<Vec<Vec<f64>>, EvalError> {
    Ok(normalized_rows(&clip.embed_images(images)?)?)
}

/// The prompts and the name of their set.
fn prompt_set(
    concept: &Concept,
    settings: &EvalSettings,
) -> Result<(String, Vec<EvalPrompt>), EvalError> {
    match &settings.prompts {
        Some(p) => Ok((
            p.display().to_string(),
            load_prompt_file(p, &concept.positive_word())?,
        )),
        None => {
            let (name, set) = default_prompts(&concept.preset);
            Ok((name.to_string(), set))
        }
    }
}

/// The words a target's prompts may use: the target's pair, plus any other
/// workspace word the prompts mention (loaded only then, so a broken file in
/// `embeddings/` does not stop a plain evaluation).
fn bank_for(
    ws: &Workspace,
    concept: &Concept,
    prompts: &[String],
    v: &TargetVectors,
) -> Result<WordBank, EvalError> {
    let pos = concept.positive_word();
    let neg = concept.negative_word();
    let mut bank = WordBank::new();
    let others = prompts
        .iter()
        .flat_map(|p| words_in(p))
        .any(|w| w != pos && w != neg);
    if others {
        let all = word_bank(ws).map_err(|e| EvalError::Invalid(format!("{e:#}")))?;
        for name in all.names() {
            if name != pos && name != neg {
                if let Some(w) = all.get(&name) {
                    bank.insert(&name, w.vectors.clone(), w.origin.clone());
                }
            }
        }
    }
    let origin = v.source.display().to_string();
    bank.insert(&pos, v.positive.clone(), origin.clone());
    if let Some(n) = &v.negative {
        bank.insert(&neg, n.clone(), origin);
    }
    Ok(bank)
}

/// Slug of a prompt for its grid's file name.
fn slug(prompt: &str) -> String {
    let mut s = String::new();
    for c in prompt.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') && !s.is_empty() {
            s.push('-');
        }
        if s.len() >= 40 {
            break;
        }
    }
    s.trim_end_matches('-').to_string()
}

/// Runs an evaluation and writes one report per target (`eval.json` and the
/// grids in `runs/<id>/eval/<target>/`). Returns the reports in target order.
pub fn evaluate(
    sd: &StableDiffusion,
    clip: &ClipModel,
    ws: &Workspace,
    req: &EvalRequest,
    mut on_event: impl FnMut(&EvalEvent) -> EvalControl,
) -> Result<Vec<EvalReport>, EvalError> {
    let settings = &req.settings;
    if settings.samples == 0 {
        return Err(EvalError::Invalid("samples must be at least 1".into()));
    }
    let concept = Concept::load(ws, &req.concept)?;
    let concept_dir = concept.dir(ws);
    let targets = if req.targets.is_empty() {
        resolve_targets(&concept.name, &concept_dir, &[], &[])?
    } else {
        req.targets.clone()
    };
    let (set_name, prompts) = prompt_set(&concept, settings)?;
    let class_word = settings
        .class_word
        .clone()
        .or_else(|| concept.class.clone())
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    let pos_word = concept.positive_word();
    let mut notes = Vec::new();
    if class_word.is_none() {
        notes.push(format!(
            "no class word: CLIP-T compares each sample with its prompt with {pos_word} removed; \
             set one with `concept add --class WORD` or `eval --class WORD`"
        ));
    }

    // Reference and text embeddings are shared by every target.
    let ref_paths = concept.reference_paths(ws);
    if ref_paths.is_empty() {
        return Err(EvalError::Invalid(format!(
            "concept `{}` has no reference images to compare with",
            concept.name
        )));
    }
    let refs = ref_paths
        .iter()
        .map(|p| ClipModel::open_image(p))
        .collect::<Result<Vec<_>, _>>()?;
    let ref_emb = unit_image_embeddings(clip, &refs.iter().collect::<Vec<_>>())?;
    let texts: Vec<String> = prompts
        .iter()
        .map(|p| p.in_words(class_word.as_deref()))
        .collect();
    let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let text_emb = normalized_rows(&clip.embed_texts(&text_refs)?)?;
    let gen_prompts: Vec<String> = prompts.iter().map(|p| p.with_word(&pos_word)).collect();

    let mut reports = Vec::with_capacity(targets.len());
    for (ti, target) in targets.iter().enumerate() {
        let label = target.label();
        if on_event(&EvalEvent::Target {
            index: ti,
            count: targets.len(),
            label: label.clone(),
        }) == EvalControl::Stop
        {
            return Err(EvalError::Cancelled);
        }
        let vectors = load_target(&concept, &concept_dir, target)?;
        let bank = bank_for(ws, &concept, &gen_prompts, &vectors)?;
        let out_dir = eval_dir(RunDir::at(&concept_dir, &target.run).path(), target);
        std::fs::create_dir_all(&out_dir).map_err(EvalError::io(&out_dir))?;

        let mut per_prompt = Vec::with_capacity(prompts.len());
        for (pi, prompt) in gen_prompts.iter().enumerate() {
            if on_event(&EvalEvent::Prompt {
                target: label.clone(),
                index: pi,
                count: prompts.len(),
                prompt: prompt.clone(),
            }) == EvalControl::Stop
            {
                return Err(EvalError::Cancelled);
            }
            let gen_req = GenerateRequest {
                prompt: prompt.clone(),
                negative: String::new(),
                seed: settings.seed as i64,
                count: settings.samples,
                steps: settings.steps,
                cfg: settings.cfg,
                sampler: settings.sampler,
                auto_negative: true,
                ..Default::default()
            };
            let images = generate(sd, &bank, &gen_req, |_| StepControl::Continue)?;
            let imgs: Vec<&image::RgbImage> = images.iter().map(|g| &g.image).collect();
            let emb = unit_image_embeddings(clip, &imgs)?;
            let seeds: Vec<u64> = images.iter().map(|g| g.seed).collect();
            let negative = images
                .first()
                .map(|g| g.negative.clone())
                .unwrap_or_default();
            let grid = format!("grid-{pi:02}-{}.png", slug(prompt));
            write_grid(&out_dir.join(&grid), &imgs, prompt, &negative, &seeds)?;
            per_prompt.push(PromptReport {
                prompt: prompt.clone(),
                text: texts[pi].clone(),
                negative,
                fidelity: fidelity(&emb, &ref_emb).unwrap_or(f64::NAN),
                text_alignment: text_alignment(&emb, &text_emb[pi]).unwrap_or(f64::NAN),
                diversity: diversity(&emb),
                seeds,
                grid,
            });
        }
        let method = if vectors.negative.is_some() {
            "DreamArtist"
        } else {
            "Textual Inversion"
        };
        let report = EvalReport {
            format: REPORT_FORMAT,
            concept: concept.name.clone(),
            run: target.run.clone(),
            target: target.slug(),
            label: label.clone(),
            step: vectors.step,
            vectors: vectors.kind.clone(),
            source: vectors.source.clone(),
            train_cfg: vectors.train_cfg.clone(),
            method: method.into(),
            negative_word: vectors.negative.is_some(),
            model: sd.name.clone(),
            clip: clip.spec.clone(),
            prompt_set: set_name.clone(),
            class_word: class_word.clone(),
            notes: notes.clone(),
            samples: settings.samples,
            seed: settings.seed,
            steps: settings.steps,
            cfg: settings.cfg,
            sampler: settings.sampler.as_str().to_string(),
            references: concept.references.clone(),
            fidelity: mean_of(per_prompt.iter().map(|p| Some(p.fidelity))).unwrap_or(f64::NAN),
            text_alignment: mean_of(per_prompt.iter().map(|p| Some(p.text_alignment)))
                .unwrap_or(f64::NAN),
            diversity: mean_of(per_prompt.iter().map(|p| p.diversity)),
            prompts: per_prompt,
            created_ms: now_ms(),
        };
        let path = save_report(&out_dir, &report)?;
        on_event(&EvalEvent::Report {
            target: label,
            path,
        });
        reports.push(report);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::slug;

    #[test]
    fn grid_names_are_tidy() {
        assert_eq!(
            slug("a photo of a <cat> on the beach"),
            "a-photo-of-a-cat-on-the-beach"
        );
        assert_eq!(slug("<cat>"), "cat");
        assert!(slug(&"word ".repeat(30)).len() <= 41);
    }
}
