use std::process::ExitCode;

fn main() -> ExitCode {
    dreamartist::cli::main()
}
