//! Every configuration key README names exists: a reader who copies `[gateway] engine` into a
//! file gets an "unknown field" error at start, so the page must not name keys the loader
//! refuses. Keys are taken from README's inline `[section] key` mentions and from the key column
//! of each section's table.

use baton::config::Config;

const README: &str = include_str!("../README.md");

/// A config that parses without the key under test, so the only error is about that key.
const BASE: &str = "[gateway]\nlisten = \"127.0.0.1:0\"\nstore_dir = \"s\"\n";

/// `(section, key)` for every key README mentions.
fn mentioned_keys() -> Vec<(String, String)> {
    let mut keys = Vec::new();
    // Inline mentions: `[section] key`.
    for piece in README.split('`').skip(1).step_by(2) {
        if let Some(rest) = piece.strip_prefix('[')
            && let Some((section, key)) = rest.split_once("] ")
            && !section.starts_with('[')
            && !key.is_empty()
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            keys.push((section.to_owned(), key.to_owned()));
        }
    }
    // Tables: the first column under a section's heading (or the `[control.gates]` paragraph).
    let mut section: Option<String> = None;
    for line in README.lines() {
        if line.starts_with('#') {
            section = line
                .split('`')
                .nth(1)
                .and_then(|s| s.strip_prefix('['))
                .and_then(|s| s.strip_suffix(']'))
                .map(str::to_owned);
        } else if line.starts_with("`[control.gates]`") {
            section = Some("control.gates".to_owned());
        } else if let (Some(section), Some(row)) = (&section, line.strip_prefix("| `")) {
            let first_cell = row.split(" |").next().unwrap_or_default();
            for key in format!("`{first_cell}").split('`').skip(1).step_by(2) {
                if !key.starts_with('[') {
                    keys.push((section.clone(), key.to_owned()));
                }
            }
        }
    }
    keys
}

/// The config BASE with `key = 0` in `section`.
fn with_key(section: &str, key: &str) -> String {
    if section == "gateway" {
        BASE.replacen("[gateway]\n", &format!("[gateway]\n{key} = 0\n"), 1)
    } else {
        format!("{BASE}[{section}]\n{key} = 0\n")
    }
}

#[test]
fn every_key_readme_names_is_a_key_the_loader_knows() {
    let keys = mentioned_keys();
    // The tables alone hold dozens of keys: an extraction that finds few is broken.
    assert!(keys.len() > 30, "only found {keys:?}");
    assert!(keys.contains(&("gateway".into(), "engines".into())));
    assert!(keys.contains(&("defaults".into(), "HeartBtIntMin".into())));
    let mut unknown = Vec::new();
    for (section, key) in &keys {
        if let Err(error) = Config::parse(&with_key(section, key), "README") {
            let error = error.to_string();
            if error.contains("unknown field") {
                unknown.push(format!("[{section}] {key}: {error}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "README names keys the loader refuses:\n{unknown:#?}"
    );
}

#[test]
fn a_misnamed_key_is_caught() {
    let error = Config::parse(&with_key("gateway", "engine"), "README")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("unknown field"), "{error}");
}

#[test]
fn the_instruments_readme_lists_are_the_defaults_and_the_shipped_config() {
    // A reader trades the symbols README names: they must be what an engine without an
    // `[engine]` section and one on `deploy/baton.toml` actually list.
    let row = README
        .lines()
        .find(|line| line.starts_with("| `instruments` |"))
        .expect("README's [engine] table has an instruments row");
    let default_cell = row.split(" | ").nth(1).unwrap_or_default();
    let mut listed: Vec<String> = default_cell
        .split(',')
        .map(|symbol| symbol.trim().to_owned())
        .collect();
    listed.sort();
    let mut defaults: Vec<String> = baton::engine::EngineConfig::default()
        .instruments
        .into_iter()
        .map(|instrument| instrument.symbol)
        .collect();
    defaults.sort();
    let shipped = Config::parse(baton::config::DEFAULT_CONFIG, "deploy/baton.toml")
        .expect("the shipped config parses");
    let mut configured: Vec<String> = shipped
        .engine
        .instruments
        .iter()
        .map(|instrument| instrument.symbol.clone())
        .collect();
    configured.sort();
    assert_eq!(listed, defaults, "README's instruments row: {row}");
    assert_eq!(
        listed, configured,
        "deploy/baton.toml's [[engine.instruments]]"
    );
    for symbol in &listed {
        assert!(
            README.contains(&format!("`{symbol}`")),
            "README's opening does not name {symbol}"
        );
    }
}
