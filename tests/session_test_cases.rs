//! `fix-specs/session-test-cases.md` maps every FIX session test case to the tests that prove
//! the venue's behaviour. This keeps it honest: every case is on the page, every case that
//! applies names at least one test, and every test it names exists (a renamed or deleted test
//! fails here, naming the case).

/// The page as committed.
const PAGE: &str = include_str!("../fix-specs/session-test-cases.md");

/// The files a test name may point into, by the prefix the page uses.
const SOURCES: &[(&str, &str)] = &[
    ("session_tests", include_str!("../src/fix/session_tests.rs")),
    ("gateway_tcp", include_str!("gateway_tcp.rs")),
    ("session_tcp", include_str!("session_tcp.rs")),
];

/// Every case of the FIX session-level test cases, as the page's first column spells it.
const CASES: &[&str] = &[
    "1B", "1S a", "1S b", "1S c", "1S d", "1S e", "2a", "2b", "2c", "2d", "2e", "2f", "2g", "2h",
    "2i", "2j", "2k", "2l", "2m", "2n", "2o", "2p", "2q", "2r", "2s", "2t", "3a", "3b", "3c", "4a",
    "4b", "5", "6", "7", "8", "9", "10a", "10b", "10c", "10d", "10e", "11a", "11b", "11c", "12",
    "13a", "13b", "14a", "14b", "14c", "14d", "14e", "14f", "14g", "14h", "14i, 14j", "15", "16",
    "17", "18", "19a", "19b", "20",
];

/// One row of the table: (case, what the venue does, test names).
fn rows(page: &str) -> Vec<(String, String, Vec<String>)> {
    page.lines()
        .filter(|line| line.starts_with('|'))
        .map(|line| {
            line.trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect::<Vec<_>>()
        })
        .filter(|cells| cells.len() == 4 && cells[0] != "Case" && !cells[0].starts_with("---"))
        .map(|cells| {
            let tests = cells[3]
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect();
            (cells[0].to_owned(), cells[2].to_owned(), tests)
        })
        .collect()
}

/// What is wrong with the page: missing or unknown cases, cases without tests, dangling names.
fn problems(page: &str) -> Vec<String> {
    let rows = rows(page);
    let mut found = Vec::new();
    for case in CASES {
        if !rows.iter().any(|(c, _, _)| c == case) {
            found.push(format!("case {case} is missing"));
        }
    }
    for (case, behaviour, tests) in &rows {
        if !CASES.contains(&case.as_str()) {
            found.push(format!("case {case} is not a FIX session test case"));
        }
        if tests.is_empty() && !behaviour.starts_with("Not applicable") {
            found.push(format!("case {case} applies but names no test"));
        }
        for test in tests {
            let Some((file, name)) = test.split_once("::") else {
                found.push(format!("case {case}: {test:?} is not file::function"));
                continue;
            };
            let Some((_, source)) = SOURCES.iter().find(|(prefix, _)| *prefix == file) else {
                found.push(format!("case {case}: no test file {file:?}"));
                continue;
            };
            if !source.contains(&format!("#[test]\nfn {name}(")) {
                found.push(format!("case {case}: no test {name} in {file}"));
            }
        }
    }
    found
}

#[test]
fn every_case_is_listed_and_every_named_test_exists() {
    let found = problems(PAGE);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn a_renamed_test_or_a_dropped_case_is_reported() {
    let renamed = PAGE.replace(
        "session_tests::poss_dup_duplicate_is_ignored",
        "session_tests::poss_dup_duplicate_is_dropped",
    );
    assert_eq!(
        problems(&renamed),
        ["case 2e: no test poss_dup_duplicate_is_dropped in session_tests"]
    );
    let dropped: String = PAGE
        .lines()
        .filter(|line| !line.starts_with("| 7 |"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(problems(&dropped), ["case 7 is missing"]);
    let untested = PAGE.replace(
        "`session_tests::reject_from_the_counterparty_takes_its_number`",
        "—",
    );
    assert_eq!(problems(&untested), ["case 7 applies but names no test"]);
}
