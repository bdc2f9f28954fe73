//! Man pages and shell completions generated from a binary's clap definition, never written
//! by hand: every binary answers the hidden `generate-docs --out DIR` with
//! `DIR/man/<name>[-<sub>...].1` (one page per command and subcommand, `clap_mangen`) and
//! `DIR/completions/{bash,zsh,fish}/...` (`clap_complete`). The Debian packages ship them
//! (`scripts/build-debs` runs it before `cargo deb`). kioskd, kioskctl and hq-ingest share
//! it through the `cli-docs` feature of this crate (they share no other crate with a CLI).

use std::path::{Path, PathBuf};

use clap::{Arg, ArgMatches, Command, CommandFactory, FromArgMatches};

/// The hidden subcommand.
pub const GENERATE_DOCS: &str = "generate-docs";

/// Parse the command line of `C`, first serving the hidden `generate-docs` (then exits).
pub fn parse<C: CommandFactory + FromArgMatches>() -> C {
    let matches = with_generator(C::command()).get_matches();
    serve_generator(C::command(), &matches);
    C::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn with_generator(cmd: Command) -> Command {
    cmd.subcommand(
        Command::new(GENERATE_DOCS)
            .hide(true)
            .about("Write man pages and shell completions (for packaging)")
            .arg(
                Arg::new("out")
                    .long("out")
                    .required(true)
                    .value_parser(clap::value_parser!(PathBuf)),
            ),
    )
}

fn serve_generator(cmd: Command, matches: &ArgMatches) {
    if let Some((GENERATE_DOCS, m)) = matches.subcommand() {
        let out = m.get_one::<PathBuf>("out").expect("required");
        match generate(cmd, out) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("generate-docs: {e}");
                std::process::exit(1);
            }
        }
    }
}

/// Write the man pages and completions of `cmd` under `out`; returns the files written.
pub fn generate(cmd: Command, out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut cmd = cmd;
    cmd.build();
    let name = cmd.get_name().to_owned();
    let mut files = Vec::new();
    let man = out.join("man");
    std::fs::create_dir_all(&man)?;
    man_pages(&cmd, &name, &man, &mut files)?;
    for (shell, dir, file) in [
        (clap_complete::Shell::Bash, "bash", name.clone()),
        (clap_complete::Shell::Zsh, "zsh", format!("_{name}")),
        (clap_complete::Shell::Fish, "fish", format!("{name}.fish")),
    ] {
        let dir = out.join("completions").join(dir);
        std::fs::create_dir_all(&dir)?;
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), &name, &mut buf);
        let path = dir.join(file);
        std::fs::write(&path, buf)?;
        files.push(path);
    }
    Ok(files)
}

/// One page per command: `kioskctl.1`, `kioskctl-token.1`, `kioskctl-token-init.1`, ...
fn man_pages(
    cmd: &Command,
    page: &str,
    dir: &Path,
    files: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    // clap names are `&'static str` (no `string` feature); this runs once per process.
    let name: &'static str = Box::leak(page.to_owned().into_boxed_str());
    clap_mangen::Man::new(cmd.clone().name(name)).render(&mut buf)?;
    let path = dir.join(format!("{page}.1"));
    std::fs::write(&path, buf)?;
    files.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        man_pages(sub, &format!("{page}-{}", sub.get_name()), dir, files)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    #[command(name = "demo", about = "A demo")]
    struct Demo {
        #[command(subcommand)]
        cmd: Sub,
    }

    #[derive(clap::Subcommand)]
    enum Sub {
        /// Does one thing.
        One {
            /// A flag.
            #[arg(long)]
            flag: bool,
        },
    }

    #[test]
    fn pages_for_every_subcommand_and_three_shells() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(Demo::command(), dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "man/demo.1",
                "man/demo-one.1",
                "completions/bash/demo",
                "completions/zsh/_demo",
                "completions/fish/demo.fish"
            ]
        );
        let page = std::fs::read_to_string(dir.path().join("man/demo-one.1")).unwrap();
        assert!(page.contains(".TH demo-one 1"), "{page}");
        assert!(page.contains("\\-\\-flag"), "{page}");
        let bash = std::fs::read_to_string(dir.path().join("completions/bash/demo")).unwrap();
        assert!(bash.contains("--flag"), "{bash}");
        assert!(!bash.contains(GENERATE_DOCS));
    }
}
