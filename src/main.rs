//! harouterd: VRRP high availability for virtual routers. See README.md and
//! SPEC for what each command does.

use std::process::ExitCode;

use harouterd::{Exit, cli, cmd};

fn main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as = cli::invoked_as(args.first());
    if !args.is_empty() {
        args.remove(0);
    }
    let command = match cli::parse(&invoked_as, args) {
        Ok(command) => command,
        Err(cli::UsageError(message)) => {
            eprintln!("harouterd: {message}");
            return Exit::Usage.into();
        }
    };
    match command {
        cli::Command::Help(text) => cmd::print(text),
        cli::Command::Version => cmd::print(&format!("harouterd {}\n", env!("CARGO_PKG_VERSION"))),
        cli::Command::Check { config } => cmd::check::run(&config),
        cli::Command::Render { config, router, file, show_secrets } => {
            cmd::render::run(&config, router.as_deref(), file.as_deref(), show_secrets)
        }
        cli::Command::StateChange(args) => cmd::state_change::run(args),
        cli::Command::Run(args) => cmd::run::run(args),
        cli::Command::Status(args) => cmd::client::status(&args),
        cli::Command::Events(args) => cmd::client::events(&args),
    }
    .into()
}
