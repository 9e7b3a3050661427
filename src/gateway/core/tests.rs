//! Tests of the core on virtual time, and the `tidy` check that keeps it sans-IO.

/// Every file of the core, by name, as compiled: a file added to the core without being listed
/// here is caught by the count in the test below.
const CORE_FILES: [(&str, &str); 8] = [
    ("mod.rs", include_str!("mod.rs")),
    ("api.rs", include_str!("api.rs")),
    ("sequencer.rs", include_str!("sequencer.rs")),
    ("outbox.rs", include_str!("outbox.rs")),
    ("shadow.rs", include_str!("shadow.rs")),
    ("router.rs", include_str!("router.rs")),
    ("switch.rs", include_str!("switch.rs")),
    ("status.rs", include_str!("status.rs")),
];

/// What the core must never do (invariant 10), as it would be spelled: read a clock, spawn,
/// sleep or await. Assembled so this file does not trip its own check.
fn forbidden() -> Vec<String> {
    [
        ["Instant", "::now"],
        ["Timestamp", "::now"],
        ["SystemTime", ""],
        ["tokio", "::"],
        ["spawn", "("],
        [".aw", "ait"],
        ["async", " fn"],
        ["thread::", "sleep"],
        ["crate::", "control"],
    ]
    .iter()
    .map(|[a, b]| format!("{a}{b}"))
    .collect()
}

#[test]
fn tidy_the_core_reads_no_clock_spawns_nothing_awaits_nothing_and_stays_small() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gateway/core");
    let on_disk = std::fs::read_dir(&dir)
        .expect("the core's directory")
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "rs"))
        })
        .count();
    // This file is the one not checked.
    assert_eq!(
        on_disk,
        CORE_FILES.len() + 1,
        "list every core file in CORE_FILES"
    );
    for (name, text) in CORE_FILES {
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for word in forbidden() {
                assert!(
                    !code.contains(&word),
                    "{name}:{}: `{word}` in the sans-IO core: take `now` from the caller, or ask the driver through a poll_* output",
                    number + 1
                );
            }
        }
        let lines = text.lines().count();
        assert!(
            lines <= crate::constants::CORE_FILE_LINES_MAX,
            "{name} has {lines} lines; split it by responsibility"
        );
    }
}
