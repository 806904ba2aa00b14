//! A ring buffer of log lines fed by `tracing`, shown in the logs pane, so
//! nothing is ever printed to the terminal behind the UI.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

const CAPACITY: usize = 2000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: Level,
    pub time: String,
    pub text: String,
}

/// Shared between the tracing layer (any thread) and the UI.
#[derive(Debug, Clone, Default)]
pub struct LogBuffer {
    lines: Arc<Mutex<VecDeque<LogLine>>>,
    /// A frozen clock for reproducible screens (snapshot tests).
    fixed_time: Option<&'static str>,
}

impl LogBuffer {
    pub fn with_fixed_time(time: &'static str) -> Self {
        Self {
            fixed_time: Some(time),
            ..Self::default()
        }
    }

    pub fn push(&self, level: Level, text: impl Into<String>) {
        let line = LogLine {
            level,
            time: self.fixed_time.map_or_else(clock, String::from),
            text: text.into(),
        };
        if let Ok(mut l) = self.lines.lock() {
            l.push_back(line);
            while l.len() > CAPACITY {
                l.pop_front();
            }
        }
    }

    /// The last `n` lines at or above `min` severity (ERROR is most severe).
    pub fn tail(&self, min: Level, n: usize) -> Vec<LogLine> {
        let Ok(l) = self.lines.lock() else {
            return Vec::new();
        };
        let mut out: Vec<LogLine> = l
            .iter()
            .rev()
            .filter(|x| x.level <= min)
            .take(n)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    pub fn len(&self) -> usize {
        self.lines.lock().map(|l| l.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        % 86400;
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

/// The `tracing` layer that writes into a [`LogBuffer`].
pub struct BufferLayer {
    pub buffer: LogBuffer,
}

struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for BufferLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut v = MessageVisitor(String::new());
        event.record(&mut v);
        self.buffer.push(*event.metadata().level(), v.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn tracing_events_land_in_the_buffer_and_filter_by_level() {
        let buffer = LogBuffer::default();
        let subscriber = tracing_subscriber::registry().with(BufferLayer {
            buffer: buffer.clone(),
        });
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("engine ready");
            tracing::warn!(file = "x.toml", "invalid prompt file");
            tracing::debug!("noise");
        });
        assert_eq!(buffer.len(), 3);
        let warn = buffer.tail(Level::WARN, 10);
        assert_eq!(warn.len(), 1);
        assert_eq!(warn[0].text, "invalid prompt file file=x.toml");
        assert_eq!(buffer.tail(Level::INFO, 10).len(), 2);
    }
}
