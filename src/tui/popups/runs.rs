//! The runs browser: every run of a concept as a table ([`RunSummary`] rows
//! read by [`crate::runs::list_runs`] on the worker), sorted by any
//! [`RunColumn`] and filtered by a typed text; marks runs to compare, and asks
//! the app to write a run's note and tags, promote it or export it. The
//! browser never touches files: each of those comes back as a [`Request`].

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Clear, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use super::run_note::NoteForm;
use super::{popup_block, Outcome, Request};
use crate::concept::rundir::format_utc;
use crate::runs::{sort_runs, RunColumn, RunSummary};
use crate::tui::app::App;
use crate::tui::keymap::{ConfirmKey, FormKey, Keymap, RunsKey};
use crate::tui::state::clamp_sel;
use crate::tui::sweeps::SlurmCell;

/// At most this many runs are compared at once (one colour each).
pub const MAX_COMPARE: usize = 4;

/// The export formats offered, in the order Tab cycles them (the CLI's names).
pub const EXPORT_FORMATS: [&str; 5] = ["a1111", "a1111-pt", "kohya", "diffusers", "onetrainer"];

/// What the browser's keys do right now.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Table,
    /// Typing the filter.
    Filter,
    /// Editing the selected run's note and tags.
    Note(NoteForm),
    /// Asking before the selected run replaces the concept's pair.
    ConfirmPromote,
    /// Picking the export format (an index into [`EXPORT_FORMATS`]).
    Export(usize),
    /// Asking before the selected run's Slurm task is cancelled.
    ConfirmCancel,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunsBrowser {
    pub concept: String,
    /// The runs, sorted; `None` until the first listing arrives.
    pub runs: Option<Vec<RunSummary>>,
    /// One line per sweep of the concept: its name, its Slurm job's queue
    /// and how many runs are in each status (pending ones included).
    pub sweeps: Vec<String>,
    /// The Slurm task of each run that has one (a sweep submitted with `--slurm`).
    pub slurm: Vec<SlurmCell>,
    /// An index into [`RunColumn::NAMES`].
    pub sort: usize,
    pub descending: bool,
    pub filter: String,
    /// The selected row among the visible (filtered) runs.
    pub selected: usize,
    /// Marked run ids, in the order they were marked.
    pub marked: Vec<String>,
    /// The checkpoint step promote/export use; `None`: the finished pair.
    pub step: Option<u64>,
    pub mode: Mode,
    /// The outcome of the last action (or why it failed); empty shows hints.
    pub status: String,
}

impl RunsBrowser {
    pub fn new(concept: String) -> Self {
        Self {
            concept,
            runs: None,
            sweeps: Vec::new(),
            slurm: Vec::new(),
            sort: 0,
            descending: false,
            filter: String::new(),
            selected: 0,
            marked: Vec::new(),
            step: None,
            mode: Mode::Table,
            status: "reading runs…".into(),
        }
    }

    pub fn column(&self) -> RunColumn {
        RunColumn::parse(RunColumn::NAMES[self.sort % RunColumn::NAMES.len()])
            .unwrap_or(RunColumn::Id)
    }

    /// Takes a fresh listing, keeping the selected run where it still exists.
    pub fn set_runs(
        &mut self,
        mut runs: Vec<RunSummary>,
        sweeps: Vec<String>,
        slurm: Vec<SlurmCell>,
    ) {
        let selected = self.selected_run().map(|r| r.id.clone());
        sort_runs(&mut runs, self.column(), self.descending);
        self.marked.retain(|id| runs.iter().any(|r| &r.id == id));
        self.runs = Some(runs);
        self.sweeps = sweeps;
        self.slurm = slurm;
        if self.status == "reading runs…" {
            self.status.clear();
        }
        self.reselect(selected);
    }

    /// Selects run `id` if it is visible, else keeps the row in range.
    fn reselect(&mut self, id: Option<String>) {
        let visible = self.visible();
        self.selected = id
            .and_then(|id| visible.iter().position(|r| r.id == id))
            .unwrap_or_else(|| clamp_sel(self.selected, visible.len()));
    }

    /// The runs the filter lets through, in sort order.
    pub fn visible(&self) -> Vec<&RunSummary> {
        self.runs
            .iter()
            .flatten()
            .filter(|r| matches_filter(r, &self.filter))
            .collect()
    }

    pub fn selected_run(&self) -> Option<&RunSummary> {
        self.visible().get(self.selected).copied()
    }

    fn resort(&mut self) {
        let selected = self.selected_run().map(|r| r.id.clone());
        let (column, desc) = (self.column(), self.descending);
        if let Some(runs) = self.runs.as_mut() {
            sort_runs(runs, column, desc);
        }
        self.reselect(selected);
    }

    /// The Slurm task of run `id`, if it has one.
    pub fn slurm_of(&self, id: &str) -> Option<&SlurmCell> {
        self.slurm.iter().find(|c| c.run == id)
    }

    /// The marked runs' summaries, in marking order.
    pub fn marked_runs(&self) -> Vec<RunSummary> {
        self.marked
            .iter()
            .filter_map(|id| self.runs.iter().flatten().find(|r| &r.id == id).cloned())
            .collect()
    }

    /// Moves the promote/export step through the selected run's checkpoints;
    /// past the last one it is the finished pair again.
    fn move_step(&mut self, later: bool) {
        let Some(run) = self.selected_run() else {
            return;
        };
        let cps = &run.checkpoints;
        let pos = self.step.and_then(|s| cps.iter().position(|c| *c == s));
        self.step = match (pos, later) {
            (None, true) => cps.first().copied(),
            (None, false) => cps.last().copied(),
            (Some(i), true) => cps.get(i + 1).copied(),
            (Some(0), false) => None,
            (Some(i), false) => cps.get(i - 1).copied(),
        };
    }

    /// What promote/export take: the chosen step or the finished pair.
    pub fn target_label(&self) -> String {
        match self.step {
            Some(s) => format!("checkpoint step {s}"),
            None => "the finished pair".into(),
        }
    }

    pub fn on_key(&mut self, keymap: &Keymap, key: &KeyEvent) -> Outcome {
        match &mut self.mode {
            Mode::Table => self.table_key(keymap, key),
            Mode::Filter => {
                match keymap.form.action_for(key) {
                    Some(FormKey::Submit) => self.mode = Mode::Table,
                    Some(FormKey::Cancel) => {
                        self.filter.clear();
                        self.mode = Mode::Table;
                    }
                    Some(FormKey::Delete) => {
                        self.filter.pop();
                    }
                    _ => {
                        if let Some(c) = typed(key) {
                            self.filter.push(c);
                        }
                    }
                }
                self.selected = clamp_sel(self.selected, self.visible().len());
                Outcome::Stay
            }
            Mode::Note(form) => match form.on_key(keymap, key) {
                None => Outcome::Stay,
                Some(None) => {
                    self.mode = Mode::Table;
                    Outcome::Stay
                }
                Some(Some((note, tags))) => {
                    let run = form.run.clone();
                    self.mode = Mode::Table;
                    self.status = format!("saving the note of {run}…");
                    Outcome::Ask(Request::SaveRunNote {
                        concept: self.concept.clone(),
                        run,
                        note,
                        tags,
                    })
                }
            },
            Mode::ConfirmPromote => {
                self.mode = Mode::Table;
                match (keymap.confirm.action_for(key), self.selected_run()) {
                    (Some(ConfirmKey::Yes), Some(run)) => {
                        let run = run.id.clone();
                        self.status = format!("promoting {run} ({})…", self.target_label());
                        Outcome::Ask(Request::PromoteRun {
                            concept: self.concept.clone(),
                            run,
                            step: self.step,
                        })
                    }
                    _ => {
                        self.status = "promote cancelled".into();
                        Outcome::Stay
                    }
                }
            }
            Mode::ConfirmCancel => {
                self.mode = Mode::Table;
                let task = self
                    .selected_run()
                    .and_then(|r| self.slurm_of(&r.id))
                    .filter(|c| c.queued)
                    .cloned();
                match (keymap.confirm.action_for(key), task) {
                    (Some(ConfirmKey::Yes), Some(c)) => {
                        self.status = format!("cancelling Slurm task {}_{}…", c.job, c.index);
                        Outcome::Ask(Request::CancelSlurmTask {
                            concept: self.concept.clone(),
                            run: c.run,
                            job: c.job,
                            index: c.index,
                        })
                    }
                    _ => {
                        self.status = "cancel: nothing done".into();
                        Outcome::Stay
                    }
                }
            }
            Mode::Export(i) => {
                let n = EXPORT_FORMATS.len();
                match keymap.form.action_for(key) {
                    Some(FormKey::NextField) => *i = (*i + 1) % n,
                    Some(FormKey::PrevField) => *i = (*i + n - 1) % n,
                    Some(FormKey::Cancel) => self.mode = Mode::Table,
                    Some(FormKey::Submit) => {
                        let format = EXPORT_FORMATS[*i % n].to_string();
                        self.mode = Mode::Table;
                        if let Some(run) = self.selected_run() {
                            let run = run.id.clone();
                            self.status = format!("exporting {run} as {format}…");
                            return Outcome::Ask(Request::ExportRun {
                                concept: self.concept.clone(),
                                run,
                                step: self.step,
                                format,
                            });
                        }
                    }
                    _ => {}
                }
                Outcome::Stay
            }
        }
    }

    fn table_key(&mut self, keymap: &Keymap, key: &KeyEvent) -> Outcome {
        let Some(action) = keymap.runs.action_for(key) else {
            return Outcome::Stay;
        };
        // A new action: its own outcome (if any) replaces the last one's.
        self.status.clear();
        let len = self.visible().len();
        match action {
            RunsKey::Close => return Outcome::Close,
            RunsKey::Up => {
                self.selected = self.selected.saturating_sub(1);
                self.step = None;
            }
            RunsKey::Down => {
                self.selected = clamp_sel(self.selected + 1, len);
                self.step = None;
            }
            RunsKey::Sort => {
                self.sort = (self.sort + 1) % RunColumn::NAMES.len();
                self.resort();
            }
            RunsKey::Reverse => {
                self.descending = !self.descending;
                self.resort();
            }
            RunsKey::Filter => self.mode = Mode::Filter,
            RunsKey::Mark => {
                if let Some(id) = self.selected_run().map(|r| r.id.clone()) {
                    if let Some(i) = self.marked.iter().position(|m| *m == id) {
                        self.marked.remove(i);
                    } else if self.marked.len() >= MAX_COMPARE {
                        self.status = format!("at most {MAX_COMPARE} runs are compared");
                    } else {
                        self.marked.push(id);
                    }
                    self.selected = clamp_sel(self.selected + 1, len);
                }
            }
            RunsKey::Compare => {
                if self.marked.len() < 2 {
                    self.status = format!(
                        "mark 2 to {MAX_COMPARE} runs with {} first",
                        keymap.runs.key(RunsKey::Mark)
                    );
                } else {
                    return Outcome::Ask(Request::CompareRuns {
                        concept: self.concept.clone(),
                        runs: self.marked_runs(),
                    });
                }
            }
            RunsKey::Note => {
                if let Some(r) = self.selected_run() {
                    self.mode = Mode::Note(NoteForm::new(r));
                }
            }
            RunsKey::StepPrev => self.move_step(false),
            RunsKey::StepNext => self.move_step(true),
            RunsKey::Promote => {
                if self.selected_run().is_some() {
                    self.mode = Mode::ConfirmPromote;
                }
            }
            RunsKey::Export => {
                if self.selected_run().is_some() {
                    self.mode = Mode::Export(0);
                }
            }
            RunsKey::Sweep => return Outcome::Ask(Request::OpenSweepForm),
            RunsKey::Cancel => {
                let Some(run) = self.selected_run().map(|r| r.id.clone()) else {
                    return Outcome::Stay;
                };
                match self.slurm_of(&run) {
                    Some(c) if c.queued => self.mode = Mode::ConfirmCancel,
                    Some(c) => {
                        self.status = format!(
                            "run {run}'s Slurm task {}_{} is no longer queued ({})",
                            c.job, c.index, c.label
                        )
                    }
                    None => {
                        self.status = format!(
                            "run {run} has no Slurm task (only runs of a sweep submitted with --slurm do)"
                        )
                    }
                }
            }
            RunsKey::Refresh => {
                return Outcome::Ask(Request::RefreshRuns(self.concept.clone()));
            }
        }
        Outcome::Stay
    }

    /// The bottom line: the current mode's question or the table's key hints.
    fn footer(&self, keymap: &Keymap) -> String {
        let k = |a| keymap.runs.key(a);
        let f = |a| keymap.form.key(a);
        match &self.mode {
            Mode::Table if !self.status.is_empty() => self.status.clone(),
            Mode::Table => {
                let hints = format!(
                "{} sort · {} order · {} filter · {} mark · {} compare · {} note · {}/{} step · {} promote · {} export · {} sweep · {} back",
                k(RunsKey::Sort),
                k(RunsKey::Reverse),
                k(RunsKey::Filter),
                k(RunsKey::Mark),
                k(RunsKey::Compare),
                k(RunsKey::Note),
                k(RunsKey::StepPrev),
                k(RunsKey::StepNext),
                k(RunsKey::Promote),
                k(RunsKey::Export),
                k(RunsKey::Sweep),
                k(RunsKey::Close),
            );
                // Cancel only means something while a task of ours is queued.
                if self.slurm.iter().any(|c| c.queued) {
                    format!("{hints} · {} cancel Slurm task", k(RunsKey::Cancel))
                } else {
                    hints
                }
            }
            Mode::Filter => format!(
                "filter: {}_   ({} keeps, {} clears)",
                self.filter,
                f(FormKey::Submit),
                f(FormKey::Cancel)
            ),
            Mode::Note(_) => String::new(),
            Mode::ConfirmPromote => format!(
                "Make {} of run {} <{}>'s active pair? {} yes / {} no",
                self.target_label(),
                self.selected_run().map_or("?", |r| r.id.as_str()),
                self.concept,
                keymap.confirm.key(ConfirmKey::Yes),
                keymap.confirm.key(ConfirmKey::No),
            ),
            Mode::ConfirmCancel => {
                let c = self.selected_run().and_then(|r| self.slurm_of(&r.id));
                format!(
                    "Cancel Slurm task {} of run {} (scancel; it stops with a checkpoint)? {} yes / {} no",
                    c.map_or("?".into(), |c| format!("{}_{}", c.job, c.index)),
                    self.selected_run().map_or("?", |r| r.id.as_str()),
                    keymap.confirm.key(ConfirmKey::Yes),
                    keymap.confirm.key(ConfirmKey::No),
                )
            }
            Mode::Export(i) => format!(
                "Export {} of run {} as: {}   ({} next format, {} writes, {} cancels)",
                self.target_label(),
                self.selected_run().map_or("?", |r| r.id.as_str()),
                EXPORT_FORMATS
                    .iter()
                    .enumerate()
                    .map(|(j, n)| if j == *i {
                        format!("[{n}]")
                    } else {
                        n.to_string()
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                f(FormKey::NextField),
                f(FormKey::Submit),
                f(FormKey::Cancel),
            ),
        }
    }

    pub fn draw(&self, app: &App, f: &mut Frame) {
        let area = f.area();
        f.render_widget(Clear, area);
        let column = RunColumn::NAMES[self.sort % RunColumn::NAMES.len()];
        let title = format!(
            "Runs <{}> · sorted by {column} {}{}",
            self.concept,
            if self.descending { "↓" } else { "↑" },
            if self.filter.is_empty() {
                String::new()
            } else {
                format!(" · filter \"{}\"", self.filter)
            }
        );
        let block = popup_block(app, &title);
        let inner = block.inner(area);
        f.render_widget(block, area);
        let sweeps_h = self.sweeps.len().min(4) as u16;
        let note_h = if matches!(self.mode, Mode::Note(_)) {
            4
        } else {
            0
        };
        let [table_area, sweeps_area, note_area, footer] = Layout::vertical([
            Constraint::Min(3),
            Constraint::Length(sweeps_h),
            Constraint::Length(note_h),
            Constraint::Length(1),
        ])
        .areas(inner);

        let visible = self.visible();
        match &self.runs {
            None => f.render_widget(
                Paragraph::new("reading runs…").style(app.theme.muted()),
                table_area,
            ),
            Some(all) if all.is_empty() => f.render_widget(
                Paragraph::new(format!(
                    "<{}> has no runs yet: train it ({} on the workbench) or run a sweep ({}).",
                    self.concept,
                    app.key(crate::tui::keymap::Action::Train),
                    app.keymap.runs.key(RunsKey::Sweep)
                ))
                .style(app.theme.muted()),
                table_area,
            ),
            Some(_) => self.draw_table(app, &visible, table_area, f),
        }
        let sweep_lines: Vec<Line> = self
            .sweeps
            .iter()
            .map(|s| Line::from(Span::styled(s.clone(), app.theme.muted())))
            .collect();
        f.render_widget(Paragraph::new(sweep_lines), sweeps_area);
        if let Mode::Note(form) = &self.mode {
            form.draw(app, note_area, f);
        }
        f.render_widget(
            Paragraph::new(Span::styled(self.footer(&app.keymap), app.theme.muted())),
            footer,
        );
    }

    fn draw_table(
        &self,
        app: &App,
        runs: &[&RunSummary],
        area: ratatui::layout::Rect,
        f: &mut Frame,
    ) {
        let num = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.4}"));
        let clip = runs.iter().any(|r| r.eval.is_some());
        let slurm = runs.iter().any(|r| self.slurm_of(&r.id).is_some());
        let mut header = vec![
            " ",
            "run",
            "started (UTC)",
            "method",
            "options",
            "steps",
            "loss",
            "smoothed",
            "status",
        ];
        if slurm {
            header.push("slurm");
        }
        if clip {
            header.extend(["CLIP-I", "CLIP-T"]);
        }
        header.extend(["tags", "note"]);
        let rows: Vec<Row> = runs
            .iter()
            .map(|r| {
                let mark = if self.marked.contains(&r.id) {
                    "*"
                } else {
                    " "
                };
                let method = match &r.preset {
                    Some(p) => format!("{} ({p})", r.method),
                    None => r.method.clone(),
                };
                let mut cells = vec![
                    mark.to_string(),
                    r.id.clone(),
                    r.started.map_or_else(|| "-".into(), format_utc),
                    method,
                    r.changed_text(),
                    r.progress(),
                    num(r.loss),
                    num(r.smoothed_loss),
                    r.state.label().to_string(),
                ];
                if slurm {
                    cells.push(
                        self.slurm_of(&r.id)
                            .map_or("-".into(), |c| format!("{} {}_{}", c.label, c.job, c.index)),
                    );
                }
                if clip {
                    let s =
                        |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.3}"));
                    cells.push(s(r.eval.as_ref().map(|e| e.fidelity)));
                    cells.push(s(r.eval.as_ref().map(|e| e.text_alignment)));
                }
                cells.push(r.tags.join(" "));
                cells.push(r.note.lines().next().unwrap_or("").to_string());
                Row::new(cells.into_iter().map(Cell::from))
            })
            .collect();
        let width = |cells: Vec<usize>, min: usize| -> u16 {
            cells.into_iter().max().unwrap_or(0).max(min) as u16
        };
        let mut widths = vec![
            Constraint::Length(1),
            Constraint::Length(width(runs.iter().map(|r| r.id.len()).collect(), 3)),
            Constraint::Length(16),
            Constraint::Max(26),
            Constraint::Fill(3),
            Constraint::Length(width(runs.iter().map(|r| r.progress().len()).collect(), 5)),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
        ];
        if slurm {
            let cells = runs
                .iter()
                .filter_map(|r| self.slurm_of(&r.id))
                .map(|c| c.label.len() + c.job.len() + 4)
                .collect();
            widths.push(Constraint::Length(width(cells, 5)));
        }
        if clip {
            widths.extend([Constraint::Length(6), Constraint::Length(6)]);
        }
        widths.extend([Constraint::Max(16), Constraint::Fill(2)]);
        let table = Table::new(rows, widths)
            .header(Row::new(header).style(app.theme.accent()))
            .row_highlight_style(app.theme.selected())
            .highlight_symbol("> ")
            .highlight_spacing(ratatui::widgets::HighlightSpacing::Always)
            .column_spacing(1);
        let mut state = TableState::default().with_selected(Some(self.selected));
        f.render_stateful_widget(table, area, &mut state);
    }
}

/// A typed character (not a control chord).
pub(crate) fn typed(key: &KeyEvent) -> Option<char> {
    match key.code {
        KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => Some(c),
        _ => None,
    }
}

/// Whether every word of the filter appears (case-insensitively) in the
/// run's id, status, tags, note, method or changed options.
pub fn matches_filter(r: &RunSummary, filter: &str) -> bool {
    let hay = format!(
        "{} {} {} {} {} {}",
        r.id,
        r.state.label(),
        r.tags.join(" "),
        r.note,
        r.method,
        r.changed_text()
    )
    .to_lowercase();
    filter
        .to_lowercase()
        .split_whitespace()
        .all(|w| hay.contains(w))
}
