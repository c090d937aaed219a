//! `tongban completions SHELL` and `tongban man`: shell completions and
//! manual pages generated from the command-line definition itself (clap's
//! `clap_complete` and `clap_mangen`), so they never fall behind it.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, CommandFactory};

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for. Install e.g. with
    /// `tongban completions bash > /etc/bash_completion.d/tongban`,
    /// `tongban completions zsh > "${fpath[1]}/_tongban"` or
    /// `tongban completions fish > ~/.config/fish/completions/tongban.fish`.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// Write one page per command and subcommand (`tongban.1`,
    /// `tongban-config-check.1`, …) into this directory instead of the
    /// top-level page to stdout.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut command = crate::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "tongban", &mut out);
    out
}

/// The top-level manual page, in roff.
pub fn man_page() -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(crate::Cli::command())
        .render(&mut out)
        .context("rendering the manual page")?;
    Ok(out)
}

/// Writes a page for the command and each subcommand into `dir` (created if
/// missing); returns the files written, sorted.
pub fn write_man_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(crate::Cli::command(), dir)
        .with_context(|| format!("writing manual pages into {}", dir.display()))?;
    let mut pages = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let is_page = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("tongban") && n.ends_with(".1"));
        if is_page {
            pages.push(path);
        }
    }
    pages.sort();
    Ok(pages)
}

pub fn run_completions(args: &CompletionsArgs) -> anyhow::Result<()> {
    std::io::stdout()
        .write_all(&completions(args.shell))
        .context("writing to stdout")
}

pub fn run_man(args: &ManArgs) -> anyhow::Result<()> {
    match &args.dir {
        None => std::io::stdout()
            .write_all(&man_page()?)
            .context("writing to stdout"),
        Some(dir) => {
            for page in write_man_pages(dir)? {
                println!("{}", page.display());
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_know_every_subcommand() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let script = String::from_utf8(completions(shell)).unwrap();
            for sub in [
                "serve",
                "lookup",
                "config",
                "policy",
                "explain",
                "completions",
                "man",
            ] {
                assert!(script.contains(sub), "{shell}: no {sub}");
            }
            // Options of nested subcommands too.
            let option = match shell {
                clap_complete::Shell::Fish => "-l evidence",
                _ => "--evidence",
            };
            assert!(script.contains(option), "{shell}");
        }
    }

    #[test]
    fn bash_completion_parses() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tongban.bash");
        std::fs::write(&file, completions(clap_complete::Shell::Bash)).unwrap();
        let status = std::process::Command::new("bash")
            .arg("-n")
            .arg(&file)
            .status()
            .unwrap();
        assert!(status.success());
        // And defines the completion function when sourced.
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("source {} && complete -p tongban", file.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("tongban"));
    }

    #[test]
    fn man_pages_are_roff_and_cover_subcommands() {
        let page = String::from_utf8(man_page().unwrap()).unwrap();
        assert!(
            page.starts_with(".ie") || page.contains(".TH tongban"),
            "{page}"
        );
        assert!(page.contains(".TH tongban 1"), "{page}");
        for sub in ["serve", "config", "policy", "completions", "man"] {
            assert!(page.contains(sub), "no {sub}");
        }
        let dir = tempfile::tempdir().unwrap();
        let pages = write_man_pages(dir.path()).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "tongban.1",
            "tongban-config-check.1",
            "tongban-policy-explain.1",
        ] {
            assert!(names.iter().any(|n| n == want), "{names:?}");
        }
        let explain = std::fs::read_to_string(dir.path().join("tongban-policy-explain.1")).unwrap();
        assert!(explain.contains("caller"), "{explain}");
    }
}
