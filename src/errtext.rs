//! One line for an error and its causes, as the CLI and the workbench print
//! them. Many of our error types put their cause in their own message
//! (`"{path}: {source}"`) and also report it as their source, so a plain
//! `{:#}` says the cause twice; here a cause already said is left out.

/// `outer: cause: deeper cause`, each cause once.
pub fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: {source}")]
    struct Outer {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn a_cause_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::from(Outer {
            path: "a.toml".into(),
            source: io,
        });
        assert_eq!(format!("{e:#}"), "a.toml: no such file: no such file");
        assert_eq!(chain(&e), "a.toml: no such file");
        // Context that does not repeat its cause keeps every part.
        let e = anyhow::anyhow!("disk full").context("writing b.png");
        assert_eq!(chain(&e), "writing b.png: disk full");
    }
}
