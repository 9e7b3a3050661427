//! The `tidy` check of the gateway's place among the parts: it never imports the control plane
//! (`control` uses `gateway`, never the reverse), and the `baton gateway` command only parses
//! its arguments and calls [`super::run`].

/// How a gateway file would name the control plane, assembled so this file does not trip its
/// own check.
fn control_paths() -> Vec<String> {
    ["crate::", "super::super::", "baton::"]
        .iter()
        .map(|prefix| format!("{prefix}{}", "control"))
        .collect()
}

/// Every `.rs` file under `dir`, recursively, with its path.
fn rust_files(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a readable source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|x| x == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn tidy_nothing_under_gateway_imports_the_control_plane() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gateway");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(
        files.len() > 20,
        "the gateway's files were found: {files:?}"
    );
    for path in files {
        let text = std::fs::read_to_string(&path).expect("a readable source file");
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for word in control_paths() {
                assert!(
                    !code.contains(&word),
                    "{}:{}: `{word}`: the gateway must not depend on the control plane; define a hook it calls (see `assembly::ControlHooks`) and let `control` implement it",
                    path.display(),
                    number + 1
                );
            }
        }
    }
}

#[test]
fn tidy_the_gateway_command_only_parses_arguments_and_calls_gateway_run() {
    let main = include_str!("../main.rs");
    let start = main
        .find("Command::Gateway(args) =>")
        .expect("the gateway command's arm in main.rs");
    let arm = &main[start..];
    let arm = &arm[..arm.find("\n        }\n").expect("the arm's end")];
    assert!(arm.contains("gateway::run("), "{arm}");
    let lines = arm.lines().count();
    assert!(
        lines <= crate::constants::MAIN_GATEWAY_ARM_LINES_MAX,
        "the gateway command in main.rs has {lines} lines; assemble in `gateway::run`:\n{arm}"
    );
    // Nothing of the assembly itself is left in main.rs.
    for part in [
        "Acceptor",
        "Core::open",
        "driver::run",
        "Plane::open",
        "Sessions",
    ] {
        assert!(!main.contains(part), "main.rs assembles `{part}`");
    }
}
