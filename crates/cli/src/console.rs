//! `tongban console`: helpers for the administrators' web console.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ConsoleCommand {
    /// Read a password from stdin (one line) and print its Argon2id hash for
    /// `[console.users]` in the exchange configuration.
    HashPassword {
        /// Print a ready `name = "hash"` line for this administrator.
        #[arg(long)]
        user: Option<String>,
    },
}

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;

pub fn run(command: ConsoleCommand) -> anyhow::Result<()> {
    match command {
        ConsoleCommand::HashPassword { user } => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprint!("password (input is shown): ");
                let _ = std::io::stderr().flush();
            }
            let hash = hash_from_reader(stdin.lock())?;
            match user {
                Some(name) => println!("{name} = \"{hash}\""),
                None => println!("{hash}"),
            }
        }
    }
    Ok(())
}

/// Hashes the first line of `input` (without its line ending).
pub fn hash_from_reader(mut input: impl BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    input.read_line(&mut line).context("reading the password")?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.chars().count() < MIN_PASSWORD_CHARS {
        bail!("the password must be at least {MIN_PASSWORD_CHARS} characters");
    }
    tongban_console::hash_password(password).map_err(|e| anyhow::anyhow!("hashing: {e}"))
}

/// The console of a local deployment (`tongban demo --serve`): signs in as
/// `admin` with a fresh random password, on 127.0.0.1:9465 or, if that is
/// taken, a free loopback port. Returns the server and the password.
pub async fn serve_for_local(
    local: &tongban_devkit::local::LocalDeployment,
) -> anyhow::Result<(tongban_console::ConsoleServer, String)> {
    let config = tongban_exchange::ExchangeConfig::load(&local.state_dir().join("exchange.toml"))?;
    let log = local
        .exchange()
        .audit_log()
        .context("the local exchange writes no audit log")?
        .clone();
    let password = tongban_console::auth::random_token()[..20].to_owned();
    let mut settings = tongban_console::ConsoleSettings::default();
    settings.users.insert(
        "admin".into(),
        tongban_console::hash_password(&password).map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let backend = tongban_console::ConsoleBackend {
        store: config
            .audit
            .open_store()
            .await
            .map_err(anyhow::Error::msg)?,
        pseudonymizer: config.audit.pseudonymizer().map_err(anyhow::Error::msg)?,
        log,
        keyring: crate::node::console_keyring(&config, &[])?,
    };
    let console = tongban_console::Console::new(settings, backend)?;
    let server = match tongban_console::ConsoleServer::bind(
        tongban_console::DEFAULT_CONSOLE_ADDR,
        console.clone(),
    )
    .await
    {
        Ok(server) => server,
        Err(_) => tongban_console::ConsoleServer::bind("127.0.0.1:0".parse()?, console).await?,
    };
    Ok((server, password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_the_first_line_only() {
        let hash = hash_from_reader("攀枝花 long password\r\nsecond line\n".as_bytes()).unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(tongban_console::verify_password(
            &hash,
            "攀枝花 long password"
        ));
        assert!(!tongban_console::verify_password(
            &hash,
            "攀枝花 long password\r"
        ));
    }

    #[test]
    fn refuses_short_or_empty_passwords() {
        assert!(hash_from_reader("short\n".as_bytes()).is_err());
        assert!(hash_from_reader("".as_bytes()).is_err());
    }
}
