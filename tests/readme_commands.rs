//! Every `baton ...` command the operator's documents show is one the binary accepts: a reader
//! who types a command from README (or a unit from `deploy/systemd/` runs one) and meets
//! "unrecognized subcommand" or "unexpected argument" has been misled. Each command line is
//! walked against the real binary's `--help`: every word that names a subcommand must lead to a
//! command that needs no further subcommand, and every `--flag` must be one that command lists.
//! Values and placeholders (`F`, `CHG-n`, `[--json]`'s brackets) are not checked, only names.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const README: &str = include_str!("../README.md");
const BENCHMARKS: &str = include_str!("../BENCHMARKS.md");
const UNITS: [(&str, &str); 3] = [
    (
        "deploy/systemd/baton.service",
        include_str!("../deploy/systemd/baton.service"),
    ),
    (
        "deploy/systemd/baton-gateway.service",
        include_str!("../deploy/systemd/baton-gateway.service"),
    ),
    (
        "deploy/systemd/baton-engine@.service",
        include_str!("../deploy/systemd/baton-engine@.service"),
    ),
];

/// What `baton PATH --help` says: the subcommands and the long flags it accepts.
#[derive(Default)]
struct Help {
    subcommands: BTreeSet<String>,
    flags: BTreeSet<String>,
}

/// Asks the binary for the help of each command path once.
#[derive(Default)]
struct Helps(BTreeMap<Vec<String>, Option<Help>>);

impl Helps {
    /// The help of `path`, or `None` when the binary refuses `baton PATH --help`.
    fn get(&mut self, path: &[String]) -> Option<&Help> {
        self.0
            .entry(path.to_vec())
            .or_insert_with(|| {
                let output = Command::new(env!("CARGO_BIN_EXE_baton"))
                    .args(path)
                    .arg("--help")
                    .env("NO_COLOR", "1")
                    .output()
                    .expect("run baton --help");
                output
                    .status
                    .success()
                    .then(|| parse_help(&String::from_utf8_lossy(&output.stdout)))
            })
            .as_ref()
    }
}

/// clap's help: subcommands are the first word of each line under `Commands:`, flags every
/// `--name` on an option line.
fn parse_help(text: &str) -> Help {
    let mut help = Help::default();
    let mut in_commands = false;
    for line in text.lines() {
        if !line.starts_with(' ') {
            in_commands = line.trim_end() == "Commands:";
            continue;
        }
        let trimmed = line.trim_start();
        if in_commands && line.starts_with("  ") && !line.starts_with("      ") {
            if let Some(name) = trimmed.split_whitespace().next()
                && name != "help"
            {
                help.subcommands.insert(name.to_owned());
            }
        } else if trimmed.starts_with('-') {
            for word in trimmed.split(|c: char| c.is_whitespace() || c == ',') {
                if let Some(flag) = word.strip_prefix("--") {
                    let flag = flag.split(['=', '<', '[']).next().unwrap_or_default();
                    if !flag.is_empty() {
                        help.flags.insert(flag.to_owned());
                    }
                }
            }
        }
    }
    help
}

/// `(where, command line after "baton")` for every command the documents show: README's and
/// BENCHMARKS.md's inline code and shell blocks, `cargo run --release -- ...` lines, and the
/// units' `ExecStart`.
fn shown_commands() -> Vec<(String, String)> {
    let mut commands = Vec::new();
    for (name, text) in [("README.md", README), ("BENCHMARKS.md", BENCHMARKS)] {
        let mut candidates: Vec<String> = Vec::new();
        // Inline code, with table rows' escaped pipes restored.
        for line in text.lines() {
            let line = line.replace("\\|", "|");
            candidates.extend(line.split('`').skip(1).step_by(2).map(str::to_owned));
        }
        // Shell blocks, with continuation lines joined.
        let mut in_block = false;
        let mut joined = String::new();
        for line in text.lines() {
            if line.starts_with("```") {
                in_block = !in_block;
                continue;
            }
            if in_block {
                match line.trim_end().strip_suffix('\\') {
                    Some(head) => joined.push_str(head),
                    None => {
                        joined.push_str(line);
                        candidates.push(std::mem::take(&mut joined));
                    }
                }
            }
        }
        // `cd DIR && sudo -u baton /usr/local/bin/baton ...` runs `baton ...`.
        let commands_in = |candidate: &str| -> Vec<String> {
            candidate
                .split("&&")
                .map(|part| {
                    let mut part = part.trim();
                    for prefix in ["sudo -u baton ", "sudo ", "/usr/local/bin/"] {
                        part = part.strip_prefix(prefix).unwrap_or(part);
                    }
                    part.strip_prefix("cargo run --release -- ")
                        .map(|rest| format!("baton {rest}"))
                        .unwrap_or_else(|| part.to_owned())
                })
                .collect()
        };
        for candidate in candidates.iter().flat_map(|c| commands_in(c)) {
            if let Some(rest) = candidate.strip_prefix("baton ") {
                let rest = rest.split(" # ").next().unwrap_or_default();
                // `baton ...` and `cargo run --release -- ARGS` stand for any command.
                if rest
                    .split_whitespace()
                    .all(|t| t == "..." || t.chars().all(|c| c.is_ascii_uppercase()))
                {
                    continue;
                }
                commands.push((format!("{name}: `{candidate}`"), rest.to_owned()));
            }
        }
    }
    for (name, unit) in UNITS {
        for line in unit.lines() {
            if let Some(exec) = line.strip_prefix("ExecStart=") {
                let rest = exec
                    .strip_prefix("/usr/local/bin/baton ")
                    .unwrap_or_else(|| panic!("{name}: ExecStart runs something else: {exec}"));
                commands.push((format!("{name}: {line}"), rest.replace("%i", "blue")));
            }
        }
    }
    commands
}

/// What is wrong with `baton LINE` for the binary, if anything.
fn check(helps: &mut Helps, line: &str) -> Result<(), String> {
    let mut path: Vec<String> = Vec::new();
    // Whether the line has more than command names: `baton ctl` alone names the group in prose.
    let mut arguments = false;
    if helps.get(&path).is_none() {
        return Err("`baton --help` fails".to_owned());
    }
    for token in line.split_whitespace() {
        let token = token.trim_matches(|c| matches!(c, '[' | ']' | '(' | ')' | '"' | ','));
        if token == "--" {
            // What follows are the arguments of the program `baton launch` runs.
            break;
        }
        if let Some(flag) = token.strip_prefix("--") {
            let flag = flag.split('=').next().unwrap_or_default();
            let help = helps.get(&path).expect("checked on entry");
            if !help.flags.contains(flag) {
                return Err(format!(
                    "`baton {} --help` has no --{flag} (it has {:?})",
                    path.join(" "),
                    help.flags
                ));
            }
            arguments = true;
            continue;
        }
        // `approve|close`: every alternative must be a subcommand; walk on with the first.
        let alternatives: Vec<&str> = token.split('|').filter(|a| !a.is_empty()).collect();
        let subcommands = &helps.get(&path).expect("checked on entry").subcommands;
        if !alternatives.is_empty() && alternatives.iter().all(|a| subcommands.contains(*a)) {
            for alternative in &alternatives[1..] {
                let mut other = path.clone();
                other.push((*alternative).to_owned());
                if helps.get(&other).is_none() {
                    return Err(format!("`baton {} --help` fails", other.join(" ")));
                }
            }
            path.push(alternatives[0].to_owned());
            if helps.get(&path).is_none() {
                return Err(format!("`baton {} --help` fails", path.join(" ")));
            }
            continue;
        }
        // Anything else is a value or a placeholder.
        arguments = true;
    }
    let help = helps.get(&path).expect("checked on entry");
    if arguments && !help.subcommands.is_empty() {
        return Err(format!(
            "`baton {}` needs a subcommand, one of {:?}",
            path.join(" "),
            help.subcommands
        ));
    }
    Ok(())
}

#[test]
fn every_command_the_documents_show_is_accepted_by_the_binary() {
    let commands = shown_commands();
    // README's command table alone has over twenty: an extraction that finds few is broken.
    assert!(commands.len() > 40, "only found {commands:#?}");
    for expected in [
        "ctl [--operator NAME] stage",
        "engine --config /etc/baton",
        "audit verify --config /etc/baton/baton.toml",
    ] {
        assert!(
            commands.iter().any(|(_, line)| line.contains(expected)),
            "no command containing {expected:?} in {commands:#?}"
        );
    }
    let mut helps = Helps::default();
    let wrong: Vec<String> = commands
        .iter()
        .filter_map(|(place, line)| {
            check(&mut helps, line)
                .err()
                .map(|why| format!("{place}: {why}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "commands the binary does not accept as shown:\n{wrong:#?}"
    );
}

#[test]
fn a_misspelt_flag_or_subcommand_is_caught() {
    let mut helps = Helps::default();
    assert_eq!(check(&mut helps, "ctl --operator alice status"), Ok(()));
    assert_eq!(check(&mut helps, "ctl change approve|close CHG-1"), Ok(()));
    assert!(check(&mut helps, "ctl --operator alice stauts").is_err());
    assert!(check(&mut helps, "ctl change approve|clos CHG-1").is_err());
    assert!(check(&mut helps, "gateway --listn 127.0.0.1:0").is_err());
    assert!(check(&mut helps, "engine --name blue --snapshot-fmt 1").is_err());
}

#[test]
fn every_repository_file_the_documents_name_exists() {
    // A page that points a reader to notes the repository does not hold sends them nowhere.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut named = 0;
    let mut missing = Vec::new();
    for (name, text) in [("README.md", README), ("BENCHMARKS.md", BENCHMARKS)] {
        let links = text
            .split("](")
            .skip(1)
            .filter_map(|rest| rest.split(')').next());
        let spans = text.split('`').skip(1).step_by(2);
        for path in links.chain(spans) {
            let path = path.split('#').next().unwrap_or_default();
            let in_repository = [
                "deploy/",
                "docs/",
                "fix-specs/",
                "src/",
                "tests/",
                "benches/",
            ]
            .iter()
            .any(|top| path.starts_with(top));
            // `docs/bench/<run>/...` is a pattern, `src/a.rs:12` a place: not single paths.
            if !in_repository || path.contains(['<', '*', ' ', ':']) {
                continue;
            }
            named += 1;
            if !root.join(path).exists() {
                missing.push(format!("{name}: {path}"));
            }
        }
    }
    assert!(named > 10, "only {named} paths found");
    assert!(
        missing.is_empty(),
        "named but not in the repository: {missing:#?}"
    );
}
