//! The keymap's layers: what each key can do on the main screen and in each
//! popup. One section of the keymap file per layer (`[actions]` for the main
//! screen, `[help]`, `[palette]`, `[form]`, … for the popups), so a key means
//! one thing per layer and popups never match keys by hand.

/// One layer's actions: the section of the keymap file they live in, the
/// heading the help screen gives them, and their ids in the file.
pub trait LayerAction: Copy + Eq + 'static {
    /// The keymap file's section (`[actions]`, `[help]`, …).
    const SECTION: &'static str;
    /// The help screen's heading for the layer.
    const TITLE: &'static str;
    /// Every action, in the order help lists them.
    fn all() -> &'static [Self];
    /// The action's name in the keymap file.
    fn id(&self) -> &'static str;
}

macro_rules! layer {
    (
        $(#[$doc:meta])*
        $name:ident, $section:literal, $title:literal {
            $($(#[$vdoc:meta])* $variant:ident = $id:literal),+ $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn id(&self) -> &'static str {
                match self {
                    $($name::$variant => $id),+
                }
            }
        }

        impl LayerAction for $name {
            const SECTION: &'static str = $section;
            const TITLE: &'static str = $title;
            fn all() -> &'static [Self] {
                Self::ALL
            }
            fn id(&self) -> &'static str {
                $name::id(self)
            }
        }
    };
}

layer! {
    /// Everything the main screen can do from the keyboard (the palette lists them too).
    Action, "actions", "Main screen" {
        Help = "help",
        Palette = "palette",
        Quit = "quit",
        Suspend = "suspend",
        NextPane = "next_pane",
        PrevPane = "prev_pane",
        Up = "up",
        Down = "down",
        Left = "left",
        Right = "right",
        AddReference = "add_reference",
        NewConcept = "new_concept",
        Train = "train",
        Resume = "resume",
        Pause = "pause",
        Stop = "stop",
        SaveNow = "save_now",
        Generate = "generate",
        Reroll = "reroll",
        EditPrompt = "edit_prompt",
        NewPrompt = "new_prompt",
        ToggleWatch = "toggle_watch",
        Export = "export",
        Fullscreen = "fullscreen",
        Grid = "grid",
        History = "history",
        ChartScale = "chart_scale",
        LogLevel = "log_level",
        Eval = "eval",
        Runs = "runs",
        Sweep = "sweep",
    }
}

impl Action {
    /// Shown in the bottom command bar (the most used ones, in this order).
    pub const BAR: [Action; 9] = [
        Action::Help,
        Action::Palette,
        Action::Train,
        Action::Pause,
        Action::Stop,
        Action::Generate,
        Action::EditPrompt,
        Action::NewConcept,
        Action::Quit,
    ];
}

layer! {
    /// The help popup; any key it does not bind closes it too.
    HelpKey, "help", "Help" {
        Close = "close",
        ScrollUp = "scroll_up",
        ScrollDown = "scroll_down",
    }
}

layer! {
    /// The command palette; other characters type into its query.
    PaletteKey, "palette", "Command palette" {
        Close = "close",
        Run = "run",
        Up = "up",
        Down = "down",
        Delete = "delete",
    }
}

layer! {
    /// The forms (add a reference, new concept); other characters type into the field.
    FormKey, "form", "Forms (add reference, new concept)" {
        Submit = "submit",
        Cancel = "cancel",
        NextField = "next_field",
        PrevField = "prev_field",
        Delete = "delete",
    }
}

layer! {
    /// Quitting while a training run is going.
    ConfirmQuitKey, "confirm_quit", "Quit while training" {
        Stop = "stop",
        Keep = "keep",
        Cancel = "cancel",
    }
}

layer! {
    /// The evaluation popup; any key it does not bind closes it.
    EvalKey, "eval", "Evaluation" {
        Run = "run",
        Close = "close",
    }
}

layer! {
    /// An error message.
    ErrorKey, "error", "Error" {
        Dismiss = "dismiss",
    }
}

layer! {
    /// The full-screen sample.
    FullscreenKey, "fullscreen", "Full-screen sample" {
        Close = "close",
    }
}

layer! {
    /// The runs browser: the selected concept's runs as a table.
    RunsKey, "runs", "Runs browser" {
        Close = "close",
        Up = "up",
        Down = "down",
        Sort = "sort",
        Reverse = "reverse",
        Filter = "filter",
        Mark = "mark",
        Compare = "compare",
        Note = "note",
        StepPrev = "step_prev",
        StepNext = "step_next",
        Promote = "promote",
        Export = "export",
        Sweep = "sweep",
        Refresh = "refresh",
        Cancel = "cancel",
    }
}

layer! {
    /// Comparing marked runs: loss curves, samples at matching steps, option diff.
    CompareKey, "compare", "Run comparison" {
        Close = "close",
        PrevStep = "prev_step",
        NextStep = "next_step",
        Scale = "scale",
    }
}

layer! {
    /// A yes/no question (promoting a run to be the concept's pair).
    ConfirmKey, "confirm", "Confirm" {
        Yes = "yes",
        No = "no",
    }
}
