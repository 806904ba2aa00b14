//! The sweep file and its expansion into runs.
//!
//! ```toml
//! concept = "purple_cross"
//! name = "cfg"            # optional: the sweep's folder name (default: the file's stem)
//! seeds = [0, 1]          # optional: every option set once per seed
//! [train]                 # optional: options every run of the sweep shares
//! checkpoint_every = 10
//! [grid]                  # every combination of these [train] options…
//! train_cfg = ["1", "2"]
//! steps = [20]
//! [[run]]                 # …then these option sets, each as given
//! train_cfg = "3-7:cos"
//! [eval]                  # optional: CLIP-evaluate each finished run
//! clip = "hf:openai/clip-vit-large-patch14"
//! samples = 4
//! ```
//!
//! The runs are numbered in a fixed order: the grid's combinations (its keys
//! in alphabetical order, the last one changing fastest), then the `[[run]]`
//! sets in file order; each of them once per seed, seeds changing fastest.
//!
//! Keys under `[train]`, `[grid]` and `[[run]]` are the concept's `[train]`
//! options (`concept.toml`); each value is checked against them when the file
//! is read, so a typo fails before anything trains. A number given for an
//! option written as text (`lr = [0.005, 0.003]`, `train_cfg = [2, 5]`) is
//! taken as its text.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SweepError;
use crate::concept::{Concept, TrainConfig};
use crate::eval::{EvalSettings, DEFAULT_CLIP};
use crate::sd::SamplerKind;
use crate::train::schedule::LrSchedule;
use crate::train::CfgSpec;
use crate::workspace::Workspace;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    concept: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    seeds: Option<Vec<u64>>,
    #[serde(default)]
    train: toml::Table,
    #[serde(default)]
    grid: toml::Table,
    #[serde(default)]
    run: Vec<toml::Table>,
    #[serde(default)]
    eval: Option<EvalSpec>,
}

/// `[eval]` of a sweep file: how each finished run is scored (the `eval`
/// command's options; unset ones take its defaults).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    /// CLIP model: a Hugging Face CLIP folder or `hf:org/name` (offline cache).
    pub clip: Option<String>,
    pub samples: Option<usize>,
    pub seed: Option<u64>,
    pub steps: Option<usize>,
    pub cfg: Option<f64>,
    pub sampler: Option<String>,
    /// Class word for CLIP-T.
    pub class: Option<String>,
    /// A prompt file (relative to the sweep file's folder).
    pub prompts: Option<PathBuf>,
}

impl EvalSpec {
    pub fn clip(&self) -> &str {
        self.clip.as_deref().unwrap_or(DEFAULT_CLIP)
    }

    /// The evaluation settings; relative prompt files resolve against `base`.
    pub fn settings(&self, base: &Path) -> Result<EvalSettings, String> {
        let d = EvalSettings::default();
        let sampler = match &self.sampler {
            Some(s) => SamplerKind::parse(s).ok_or_else(|| {
                format!(
                    "[eval] sampler `{s}` is unknown (known: {})",
                    SamplerKind::known_names()
                )
            })?,
            None => d.sampler,
        };
        let samples = self.samples.unwrap_or(d.samples);
        if samples == 0 {
            return Err("[eval] samples must be at least 1".into());
        }
        Ok(EvalSettings {
            samples,
            seed: self.seed.unwrap_or(d.seed),
            steps: self.steps.unwrap_or(d.steps),
            cfg: self.cfg.unwrap_or(d.cfg),
            sampler,
            class_word: self.class.clone(),
            prompts: self.prompts.as_ref().map(|p| base.join(p)),
        })
    }
}

/// One run of a sweep: its options and the resolved training config.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRun {
    /// Position in the sweep (`--only INDEX`, an array job's task id).
    pub index: usize,
    /// The options this run sets (its option set by key, then `seed`).
    pub options: Vec<(String, toml::Value)>,
    /// The concept's `[train]` with the sweep's `[train]` and these options.
    pub config: TrainConfig,
}

impl PlannedRun {
    /// `key=value, …`: the run's identity in the sweep's records (a changed
    /// sweep file is caught by comparing it).
    pub fn key(&self) -> String {
        self.options
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The value this run gives option `key`, if it sets it.
    pub fn option(&self, key: &str) -> Option<&toml::Value> {
        self.options.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// A sweep file, expanded.
#[derive(Debug, Clone)]
pub struct SweepPlan {
    /// The sweep file.
    pub file: PathBuf,
    /// Its folder name under `concepts/<concept>/sweeps/`.
    pub name: String,
    pub concept: Concept,
    pub runs: Vec<PlannedRun>,
    pub eval: Option<EvalSpec>,
    /// Option keys that take more than one value across the runs (the
    /// results table's columns), in file order.
    pub varying: Vec<String>,
    /// The file's text as it was read (what the sweep's folder keeps).
    pub text: String,
}

impl SweepPlan {
    /// Reads and expands the sweep file `file` for workspace `ws`.
    pub fn load(file: &Path, ws: &Workspace) -> Result<Self, SweepError> {
        let text = std::fs::read_to_string(file).map_err(|source| SweepError::Io {
            path: file.to_path_buf(),
            source,
        })?;
        Self::from_text(file, text, ws)
    }

    /// Expands `text` as if it were the sweep file `file` (its name and the
    /// folder its relative paths start from): a Slurm task reads the snapshot
    /// taken when it was submitted, not the file as it is now.
    pub fn from_text(file: &Path, text: String, ws: &Workspace) -> Result<Self, SweepError> {
        let invalid = |message: String| SweepError::Invalid {
            path: file.to_path_buf(),
            message,
        };
        let f: SweepFile =
            toml::from_str(&text).map_err(|e| invalid(e.to_string().trim().to_string()))?;
        let concept = Concept::load(ws, &f.concept).map_err(|e| invalid(e.to_string()))?;
        let name = match &f.name {
            Some(n) => n.clone(),
            None => file
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default(),
        };
        check_name(&name).map_err(invalid)?;
        if let Some(e) = &f.eval {
            let base = file.parent().unwrap_or(Path::new("."));
            e.settings(base).map_err(invalid)?;
        }
        let runs = expand(&concept.train, &f).map_err(invalid)?;
        let varying = varying_keys(&runs);
        Ok(Self {
            file: file.to_path_buf(),
            name,
            concept,
            runs,
            eval: f.eval,
            varying,
            text,
        })
    }
}

/// A sweep name is one folder name.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "sweep name `{name}` must be letters, digits, `-`, `_` or `.` (it names a folder); \
             set `name = \"...\"` in the file"
        ))
    }
}

/// The concept's options with `table`'s on top, as a [`TrainConfig`].
fn to_config(table: &toml::Table) -> Result<TrainConfig, String> {
    toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| e.to_string().trim().replace('\n', " "))
}

/// `base` with `key = value`, if that is a valid option; a number for a
/// text option is taken as its text.
fn with_option(base: &toml::Table, key: &str, value: &toml::Value) -> Result<toml::Value, String> {
    let mut t = base.clone();
    t.insert(key.to_string(), value.clone());
    let first = match to_config(&t) {
        Ok(_) => return Ok(value.clone()),
        Err(e) => e,
    };
    let text = match value {
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        _ => None,
    };
    if let Some(text) = text {
        t.insert(key.to_string(), toml::Value::String(text.clone()));
        if to_config(&t).is_ok() {
            return Ok(toml::Value::String(text));
        }
    }
    Err(first)
}

/// The option sets × seeds of a sweep file, each checked.
fn expand(concept: &TrainConfig, f: &SweepFile) -> Result<Vec<PlannedRun>, String> {
    let mut base = toml::Table::try_from(concept).map_err(|e| e.to_string())?;
    for (k, v) in &f.train {
        let v = with_option(&base, k, v).map_err(|e| format!("[train] {k}: {e}"))?;
        base.insert(k.clone(), v);
    }
    // The grid: each key's values, checked one by one.
    let mut axes: Vec<(String, Vec<toml::Value>)> = Vec::new();
    for (k, v) in &f.grid {
        let toml::Value::Array(values) = v else {
            return Err(format!(
                "[grid] {k} must be a list of values, e.g. `{k} = [{v}]`"
            ));
        };
        if values.is_empty() {
            return Err(format!(
                "[grid] {k} is an empty list: give at least one value"
            ));
        }
        let checked = values
            .iter()
            .map(|x| with_option(&base, k, x).map_err(|e| format!("[grid] {k} = {x}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        axes.push((k.clone(), checked));
    }
    let mut sets: Vec<Vec<(String, toml::Value)>> = Vec::new();
    if !axes.is_empty() {
        sets.push(Vec::new());
        for (k, values) in &axes {
            sets = sets
                .into_iter()
                .flat_map(|set| {
                    values.iter().map(move |v| {
                        let mut s = set.clone();
                        s.push((k.clone(), v.clone()));
                        s
                    })
                })
                .collect();
        }
    }
    for (i, r) in f.run.iter().enumerate() {
        let mut set = Vec::new();
        for (k, v) in r {
            let v = with_option(&base, k, v).map_err(|e| format!("[[run]] #{} {k}: {e}", i + 1))?;
            set.push((k.clone(), v));
        }
        sets.push(set);
    }
    if sets.is_empty() {
        sets.push(Vec::new());
    }
    let seeds: Vec<Option<u64>> = match &f.seeds {
        Some(s) if s.is_empty() => return Err("seeds is an empty list: give at least one".into()),
        Some(s) => {
            if sets.iter().flatten().any(|(k, _)| k == "seed") {
                return Err(
                    "`seed` is set in [grid] or [[run]] and `seeds` is given too; keep one".into(),
                );
            }
            s.iter().copied().map(Some).collect()
        }
        None => vec![None],
    };
    let mut runs = Vec::new();
    for set in &sets {
        for seed in &seeds {
            let mut options = set.clone();
            if let Some(s) = seed {
                let v = i64::try_from(*s)
                    .map_err(|_| format!("seed {s} is too large"))?
                    .into();
                options.push(("seed".to_string(), v));
            }
            let mut t = base.clone();
            for (k, v) in &options {
                t.insert(k.clone(), v.clone());
            }
            let index = runs.len();
            let config = to_config(&t).map_err(|e| format!("run {index}: {e}"))?;
            let run = PlannedRun {
                index,
                options,
                config,
            };
            check_values(&run.config).map_err(|e| format!("run {index} ({}): {e}", run.key()))?;
            runs.push(run);
        }
    }
    Ok(runs)
}

/// What the trainer would refuse at its start, refused before any run starts.
fn check_values(c: &TrainConfig) -> Result<(), String> {
    if c.steps == 0 {
        return Err("steps must be at least 1".into());
    }
    c.train_cfg
        .parse::<CfgSpec>()
        .map_err(|e| format!("train_cfg: {e}"))?;
    LrSchedule::parse(&c.lr, &c.lr_schedule, c.warmup_steps, c.steps)
        .map_err(|e| format!("lr: {e}"))?;
    if SamplerKind::parse(&c.sample_sampler).is_none() {
        return Err(format!(
            "sample_sampler `{}` is unknown (known: {})",
            c.sample_sampler,
            SamplerKind::known_names()
        ));
    }
    Ok(())
}

/// Keys whose value differs between runs, in order of first appearance.
fn varying_keys(runs: &[PlannedRun]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for r in runs {
        for (k, _) in &r.options {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    keys.retain(|k| {
        let first = runs.first().and_then(|r| r.option(k));
        runs.iter().any(|r| r.option(k) != first)
    });
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<PlannedRun>, String> {
        let f: SweepFile = toml::from_str(text).map_err(|e| e.to_string())?;
        expand(&TrainConfig::default(), &f)
    }

    #[test]
    fn grid_times_seeds_in_a_fixed_order() {
        let runs = parse(
            "concept = \"purple_cross\"\nseeds = [0, 1]\n[grid]\ntrain_cfg = [\"1\", \"2\"]\nsteps = [20]\n",
        )
        .unwrap();
        let keys: Vec<String> = runs.iter().map(PlannedRun::key).collect();
        assert_eq!(
            keys,
            [
                "steps=20, train_cfg=\"1\", seed=0",
                "steps=20, train_cfg=\"1\", seed=1",
                "steps=20, train_cfg=\"2\", seed=0",
                "steps=20, train_cfg=\"2\", seed=1",
            ]
        );
        assert_eq!(runs[3].index, 3);
        assert_eq!(
            (
                runs[3].config.train_cfg.as_str(),
                runs[3].config.steps,
                runs[3].config.seed
            ),
            ("2", 20, 1)
        );
        // The rest are the concept's options.
        assert_eq!(runs[3].config.lr, TrainConfig::default().lr);
        assert_eq!(varying_keys(&runs), ["train_cfg", "seed"]);
    }

    #[test]
    fn shared_options_explicit_runs_and_numbers_for_text() {
        let runs = parse(
            "concept = \"c\"\n[train]\nsteps = 7\n[grid]\nlr = [0.005, 0.003]\ntrain_cfg = [2]\n\
             [[run]]\ntrain_cfg = \"3-7:cos\"\nema_decay = 0.99\n",
        )
        .unwrap();
        assert_eq!(runs.len(), 3);
        assert_eq!(runs[0].config.lr, "0.005");
        assert_eq!(runs[1].config.lr, "0.003");
        assert_eq!(runs[0].config.train_cfg, "2");
        assert!(runs.iter().all(|r| r.config.steps == 7));
        assert_eq!(runs[2].key(), "ema_decay=0.99, train_cfg=\"3-7:cos\"");
        assert_eq!(runs[2].config.ema_decay, Some(0.99));
        // No grid, no runs: one run with the concept's options.
        let one = parse("concept = \"c\"\n").unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].config, TrainConfig::default());
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let cases = [
            (
                "[grid]\nstpes = [20]\n",
                &["[grid] stpes", "unknown field"][..],
            ),
            ("[grid]\nsteps = [\"many\"]\n", &["[grid] steps = \"many\""]),
            (
                "[grid]\nsteps = 20\n",
                &["[grid] steps must be a list", "steps = [20]"],
            ),
            ("[grid]\nsteps = []\n", &["[grid] steps is an empty list"]),
            ("[train]\nflip = \"yes\"\n", &["[train] flip"]),
            ("[[run]]\nlr = \"fast\"\n", &["run 0", "lr"]),
            ("[grid]\ntrain_cfg = [\"x-y\"]\n", &["train_cfg"]),
            ("seeds = [1]\n[grid]\nseed = [2]\n", &["keep one"]),
            ("seeds = []\n", &["seeds is an empty list"]),
            ("[grid]\nsteps = [0]\n", &["steps must be at least 1"]),
        ];
        for (body, needles) in cases {
            let err = parse(&format!("concept = \"c\"\n{body}")).unwrap_err();
            for n in needles {
                assert!(err.contains(n), "{body:?}: `{n}` not in: {err}");
            }
        }
        let err = parse("concept = \"c\"\ngrids = 1\n").unwrap_err();
        assert!(err.contains("grids"), "{err}");
        assert!(check_name("cfg-sweep_2").is_ok());
        assert!(check_name("../x").is_err() && check_name("").is_err());
    }

    #[test]
    fn eval_settings_resolve_prompts_and_check_the_sampler() {
        let spec = EvalSpec {
            samples: Some(2),
            prompts: Some("p.txt".into()),
            ..Default::default()
        };
        let s = spec.settings(Path::new("/sweeps")).unwrap();
        assert_eq!(
            (s.samples, s.prompts),
            (2, Some(PathBuf::from("/sweeps/p.txt")))
        );
        assert_eq!(spec.clip(), DEFAULT_CLIP);
        let bad = EvalSpec {
            sampler: Some("plms".into()),
            ..Default::default()
        };
        assert!(bad.settings(Path::new(".")).unwrap_err().contains("plms"));
    }
}
