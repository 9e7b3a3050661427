//! The rules-of-engagement page and the venue dictionary must describe the same messages and
//! fields: counterparties build against the page, the gateway validates against the
//! dictionary, and any difference is a Reject nobody expected. The page's message tables are
//! parsed and compared with the dictionary in both directions, so editing either alone fails
//! with a message naming the message and field that differ.

use baton::fix::dictionary::{Dictionary, FieldRef, MessageCategory};

/// The page as committed.
const PAGE: &str = include_str!("../fix-specs/rules-of-engagement.md");

/// The dictionary file as committed, for tests that edit it.
const DICTIONARY_XML: &str = include_str!("../fix-specs/FIX44.xml");

/// The header row that marks a message table.
const TABLE_HEADER: [&str; 5] = ["Tag", "Name", "Type", "Required", "Values"];

/// One row of a message table.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Row {
    /// Tag column.
    tag: u32,
    /// Name column.
    name: String,
    /// Type column, as written (FIX spelling, compared without case).
    type_name: String,
    /// Required column.
    required: bool,
    /// The code-font values of the Values column, in order.
    values: Vec<String>,
}

/// What a table describes, from the heading above it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Owner {
    /// `### Standard header`.
    Header,
    /// `### Standard trailer`.
    Trailer,
    /// `### Name (MsgType `X`)`, under `## Session messages` or `## Business messages`.
    Message {
        /// The FIX name in the heading.
        name: String,
        /// The MsgType in the heading.
        msg_type: String,
        /// From the `##` section; `None` outside the two message sections.
        category: Option<MessageCategory>,
    },
    /// `### Group NoXxx`: a repeating group's members, named by its NumInGroup field.
    Group {
        /// The NumInGroup field's name.
        name: String,
    },
}

/// One message table of the page.
#[derive(Clone, Debug)]
struct Table {
    /// What it describes.
    owner: Owner,
    /// Its rows, in page order.
    rows: Vec<Row>,
}

/// The text between backticks, in order: the values of a Values cell.
fn code_spans(cell: &str) -> Vec<String> {
    cell.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, span)| span.to_owned())
        .collect()
}

/// The cells of a `| a | b |` line.
fn cells(line: &str) -> Vec<&str> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(str::trim).collect()
}

/// Reads `Name (MsgType `X`)`.
fn message_heading(heading: &str) -> Option<(String, String)> {
    let (name, rest) = heading.split_once(" (MsgType `")?;
    let msg_type = rest.strip_suffix("`)")?;
    Some((name.trim().to_owned(), msg_type.to_owned()))
}

/// Every message table of the page. A table with the message-table header under a heading that
/// is not a message, header or trailer heading is an error, as is a malformed row: the page
/// must stay machine-readable.
fn parse(page: &str) -> Result<Vec<Table>, String> {
    let mut tables: Vec<Table> = Vec::new();
    let mut category: Option<MessageCategory> = None;
    let mut owner: Option<Owner> = None;
    let mut heading = String::new();
    let mut in_table = false;
    for (number, line) in page.lines().enumerate() {
        let line_number = number + 1;
        if let Some(section) = line.strip_prefix("## ") {
            category = match section.trim() {
                "Session messages" => Some(MessageCategory::Admin),
                "Business messages" => Some(MessageCategory::App),
                _ => None,
            };
            owner = None;
            in_table = false;
            continue;
        }
        if let Some(title) = line.strip_prefix("### ") {
            heading = title.trim().to_owned();
            owner = match heading.as_str() {
                "Standard header" => Some(Owner::Header),
                "Standard trailer" => Some(Owner::Trailer),
                other if other.starts_with("Group ") => Some(Owner::Group {
                    name: other["Group ".len()..].trim().to_owned(),
                }),
                other => message_heading(other).map(|(name, msg_type)| Owner::Message {
                    name,
                    msg_type,
                    category,
                }),
            };
            in_table = false;
            continue;
        }
        if !line.trim_start().starts_with('|') {
            in_table = false;
            continue;
        }
        let row = cells(line);
        if row == TABLE_HEADER {
            let Some(owner) = owner.clone() else {
                return Err(format!(
                    "line {line_number}: message table under \"{heading}\", which is not a message, group, header or trailer heading"
                ));
            };
            if tables.iter().any(|t| t.owner == owner) {
                return Err(format!(
                    "line {line_number}: second table under \"{heading}\""
                ));
            }
            tables.push(Table {
                owner,
                rows: Vec::new(),
            });
            in_table = true;
            continue;
        }
        if !in_table
            || row
                .iter()
                .all(|cell| cell.chars().all(|c| c == '-' || c == ':'))
        {
            continue;
        }
        let [tag, name, type_name, required, values] = row[..] else {
            return Err(format!(
                "line {line_number}: expected 5 cells, found {}",
                row.len()
            ));
        };
        let tag: u32 = tag
            .parse()
            .map_err(|_| format!("line {line_number}: Tag \"{tag}\" is not a number"))?;
        let required = match required {
            "Y" => true,
            "N" => false,
            other => {
                return Err(format!(
                    "line {line_number}: Required \"{other}\" is not Y or N"
                ));
            }
        };
        if let Some(table) = tables.last_mut() {
            if table.rows.iter().any(|r| r.tag == tag) {
                return Err(format!(
                    "line {line_number}: tag {tag} listed twice under \"{heading}\""
                ));
            }
            table.rows.push(Row {
                tag,
                name: name.to_owned(),
                type_name: type_name.to_owned(),
                required,
                values: code_spans(values),
            });
        }
    }
    Ok(tables)
}

/// Compares one set of fields (a message body, the header or the trailer) in both directions.
fn compare_fields(
    dictionary: &Dictionary,
    context: &str,
    refs: &[FieldRef],
    rows: &[Row],
    out: &mut Vec<String>,
) {
    for field_ref in refs {
        let tag = field_ref.tag();
        let name = dictionary.field_name(tag).unwrap_or("?");
        let Some(row) = rows.iter().find(|r| r.tag == tag) else {
            out.push(format!(
                "{context}: field {tag} {name} is in the dictionary but not in the page's table"
            ));
            continue;
        };
        if row.required != field_ref.is_required() {
            out.push(format!(
                "{context}: field {tag} {name}: Required is {} in the dictionary, {} on the page",
                yes_no(field_ref.is_required()),
                yes_no(row.required)
            ));
        }
    }
    for row in rows {
        if !refs.iter().any(|f| f.tag() == row.tag) {
            out.push(format!(
                "{context}: field {} {} is on the page but not in the dictionary's definition",
                row.tag, row.name
            ));
        }
        let Some(field) = dictionary.field(row.tag) else {
            out.push(format!(
                "{context}: field {} {} is not defined in the dictionary at all",
                row.tag, row.name
            ));
            continue;
        };
        if field.name() != row.name {
            out.push(format!(
                "{context}: field {}: named {} in the dictionary, {} on the page",
                row.tag,
                field.name(),
                row.name
            ));
        }
        if !field
            .field_type()
            .name()
            .eq_ignore_ascii_case(&row.type_name)
        {
            out.push(format!(
                "{context}: field {} {}: type {} in the dictionary, {} on the page",
                row.tag,
                row.name,
                field.field_type().name(),
                row.type_name
            ));
        }
        let values: Vec<&str> = field.values().iter().map(|v| v.value()).collect();
        if values != row.values {
            out.push(format!(
                "{context}: field {} {}: values {:?} in the dictionary, {:?} on the page",
                row.tag, row.name, values, row.values
            ));
        }
    }
}

fn yes_no(flag: bool) -> &'static str {
    if flag { "Y" } else { "N" }
}

/// Every difference between the page's tables and the dictionary, one line each.
fn differences(dictionary: &Dictionary, tables: &[Table]) -> Vec<String> {
    let mut out = Vec::new();
    let mut listed_tags: Vec<u32> = Vec::new();
    for (owner, context, refs) in [
        (Owner::Header, "standard header", dictionary.header()),
        (Owner::Trailer, "standard trailer", dictionary.trailer()),
    ] {
        match tables.iter().find(|t| t.owner == owner) {
            Some(table) => compare_fields(dictionary, context, refs, &table.rows, &mut out),
            None => out.push(format!("the page has no {context} table")),
        }
    }
    for message in dictionary.messages() {
        let table = tables.iter().find(|t| {
            matches!(&t.owner, Owner::Message { msg_type, .. } if msg_type == message.msg_type())
        });
        let context = format!("{} (MsgType {})", message.name(), message.msg_type());
        let Some(table) = table else {
            out.push(format!(
                "{context} is in the dictionary but has no table on the page"
            ));
            continue;
        };
        if let Owner::Message { name, category, .. } = &table.owner {
            if name != message.name() {
                out.push(format!("{context}: the page calls it {name}"));
            }
            if *category != Some(message.category()) {
                out.push(format!(
                    "{context}: category {:?} in the dictionary, {:?} on the page (by its ## section)",
                    message.category(),
                    category
                ));
            }
        }
        compare_fields(
            dictionary,
            &context,
            message.fields(),
            &table.rows,
            &mut out,
        );
        for group in message.groups() {
            let context = format!("{context}: group {}", group.name());
            let Some(table) = tables
                .iter()
                .find(|t| matches!(&t.owner, Owner::Group { name } if name == group.name()))
            else {
                out.push(format!("{context} has no table on the page"));
                continue;
            };
            compare_fields(dictionary, &context, group.members(), &table.rows, &mut out);
            // Unlike a message body, an instance's order is checked (reason 15), so the page
            // must give it.
            let page_order: Vec<u32> = table.rows.iter().map(|r| r.tag).collect();
            let order: Vec<u32> = group.members().iter().map(|m| m.tag()).collect();
            if page_order != order {
                out.push(format!(
                    "{context}: member order {order:?} in the dictionary, {page_order:?} on the page"
                ));
            }
        }
    }
    for table in tables {
        listed_tags.extend(table.rows.iter().map(|r| r.tag));
        if let Owner::Group { name } = &table.owner
            && !dictionary
                .messages()
                .any(|m| m.groups().iter().any(|g| g.name() == name))
        {
            out.push(format!(
                "group {name} has a table on the page but is in no message of the dictionary"
            ));
        }
        if let Owner::Message { name, msg_type, .. } = &table.owner
            && !dictionary.is_defined_msg_type(msg_type.as_bytes())
        {
            out.push(format!(
                "{name} (MsgType {msg_type}) has a table on the page but is not in the dictionary"
            ));
        }
    }
    for field in dictionary.fields() {
        if !listed_tags.contains(&field.number()) {
            out.push(format!(
                "field {} {} is defined in the dictionary but no table on the page lists it",
                field.number(),
                field.name()
            ));
        }
    }
    out
}

fn page_differences(page: &str, dictionary: &Dictionary) -> Vec<String> {
    match parse(page) {
        Ok(tables) => differences(dictionary, &tables),
        Err(error) => vec![error],
    }
}

/// The page with exactly one edit.
fn edited(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "edit anchor must be unique: {from}"
    );
    text.replacen(from, to, 1)
}

#[test]
fn page_tables_match_the_dictionary() {
    let tables = parse(PAGE).unwrap_or_else(|error| panic!("rules-of-engagement.md: {error}"));
    let messages = tables
        .iter()
        .filter(|t| matches!(t.owner, Owner::Message { .. }))
        .count();
    assert_eq!(messages, Dictionary::venue().messages().len());
    let differences = differences(Dictionary::venue(), &tables);
    assert!(
        differences.is_empty(),
        "rules-of-engagement.md and FIX44.xml differ:\n  {}",
        differences.join("\n  ")
    );
}

#[test]
fn page_edit_alone_is_reported_with_the_field() {
    let page = edited(
        PAGE,
        "| 54 | Side | char | Y | `1` Buy, `2` Sell |\n| 60 | TransactTime | UTCTimestamp | Y | When you created the order |",
        "| 54 | Side | char | N | `1` Buy, `2` Sell |\n| 60 | TransactTime | UTCTimestamp | Y | When you created the order |",
    );
    assert_eq!(
        page_differences(&page, Dictionary::venue()),
        [
            "NewOrderSingle (MsgType D): field 54 Side: Required is Y in the dictionary, N on the page"
        ]
    );
    let page = edited(
        PAGE,
        "`3` Immediate or cancel, `4` Fill or kill |\n| 58 | Text",
        "`3` Immediate or cancel |\n| 58 | Text",
    );
    assert_eq!(
        page_differences(&page, Dictionary::venue()),
        [
            r#"NewOrderSingle (MsgType D): field 59 TimeInForce: values ["0", "3", "4"] in the dictionary, ["0", "3"] on the page"#
        ]
    );
}

#[test]
fn dictionary_edit_alone_is_reported_with_the_field() {
    let xml = edited(
        DICTIONARY_XML,
        r#"<field name="OrdType" required="Y"/>
      <field name="Price" required="N"/>
      <field name="TimeInForce" required="N"/>
      <field name="Text" required="N"/>"#,
        r#"<field name="OrdType" required="Y"/>
      <field name="Price" required="N"/>
      <field name="TimeInForce" required="N"/>
      <field name="Text" required="N"/>
      <field name="HeartBtInt" required="N"/>"#,
    );
    let dictionary = Dictionary::from_xml(&xml).expect("edited dictionary loads");
    assert_eq!(
        page_differences(PAGE, &dictionary),
        [
            "NewOrderSingle (MsgType D): field 108 HeartBtInt is in the dictionary but not in the page's table"
        ]
    );
    let xml = edited(
        DICTIONARY_XML,
        r#"<field number="31" name="LastPx" type="PRICE"/>"#,
        r#"<field number="31" name="LastPx" type="FLOAT"/>"#,
    );
    let dictionary = Dictionary::from_xml(&xml).expect("edited dictionary loads");
    assert_eq!(
        page_differences(PAGE, &dictionary),
        [
            "ExecutionReport (MsgType 8): field 31 LastPx: type FLOAT in the dictionary, Price on the page"
        ]
    );
}

#[test]
fn missing_or_extra_messages_and_fields_are_reported_both_ways() {
    // A row only on the page.
    let page = edited(
        PAGE,
        "| 58 | Text | String | N | Why the session ends |",
        "| 58 | Text | String | N | Why the session ends |\n| 112 | TestReqID | String | N | |",
    );
    assert_eq!(
        page_differences(&page, Dictionary::venue()),
        [
            "Logout (MsgType 5): field 112 TestReqID is on the page but not in the dictionary's definition"
        ]
    );
    // A message only on the page.
    let page = format!(
        "{PAGE}\n## Business messages\n\n### OrderStatusRequest (MsgType `H`)\n\n| Tag | Name | Type | Required | Values |\n|---|---|---|---|---|\n| 11 | ClOrdID | String | Y | |\n"
    );
    assert_eq!(
        page_differences(&page, Dictionary::venue()),
        ["OrderStatusRequest (MsgType H) has a table on the page but is not in the dictionary"]
    );
    // A message only in the dictionary.
    let start = PAGE
        .find("### Heartbeat (MsgType `0`)")
        .expect("Heartbeat section");
    let end = PAGE
        .find("### TestRequest (MsgType `1`)")
        .expect("TestRequest section");
    let page = format!("{}{}", &PAGE[..start], &PAGE[end..]);
    assert_eq!(
        page_differences(&page, Dictionary::venue()),
        ["Heartbeat (MsgType 0) is in the dictionary but has no table on the page"]
    );
    // A heading the parser cannot read is an error, not a silently skipped table.
    let page = edited(PAGE, "### Heartbeat (MsgType `0`)", "### Heartbeat");
    let differences = page_differences(&page, Dictionary::venue());
    assert!(
        differences.len() == 1 && differences[0].contains("under \"Heartbeat\""),
        "{differences:?}"
    );
}

#[test]
fn message_under_the_wrong_section_is_reported() {
    let page = edited(PAGE, "## Business messages", "## More session messages");
    let differences = page_differences(&page, Dictionary::venue());
    assert!(
        differences.contains(&"NewOrderSingle (MsgType D): category App in the dictionary, None on the page (by its ## section)".to_owned()),
        "{differences:?}"
    );
}

#[test]
fn malformed_rows_are_refused() {
    let page = edited(
        PAGE,
        "| 112 | TestReqID | String | Y | Any identifier; echoed in the answering Heartbeat |",
        "| 112 | TestReqID | String | Yes | Any identifier; echoed in the answering Heartbeat |",
    );
    assert!(parse(&page).is_err_and(|e| e.contains("Required \"Yes\"")));
    let page = edited(PAGE, "| 7 | BeginSeqNo |", "| seven | BeginSeqNo |");
    assert!(parse(&page).is_err_and(|e| e.contains("Tag \"seven\"")));
}

#[test]
fn group_edits_are_reported_on_either_side() {
    // The page swaps two members: the order is part of the rule.
    let page = edited(
        PAGE,
        "| 447 | PartyIDSource | char | Y | `D` Proprietary code, `G` MIC, `N` LEI, `P` Short code |\n| 452 | PartyRole",
        "| 452 | PartyRole",
    );
    let page = edited(
        &page,
        "| 2376 | PartyRoleQualifier",
        "| 447 | PartyIDSource | char | Y | `D` Proprietary code, `G` MIC, `N` LEI, `P` Short code |\n| 2376 | PartyRoleQualifier",
    );
    let differences = page_differences(&page, Dictionary::venue());
    assert!(
        !differences.is_empty()
            && differences
                .iter()
                .all(|d| d.contains("group NoPartyIDs: member order")),
        "{differences:?}"
    );
    // The dictionary makes a member optional.
    let xml = edited(
        DICTIONARY_XML,
        r#"<field name="PartySubIDType" required="Y"/>"#,
        r#"<field name="PartySubIDType" required="N"/>"#,
    );
    let dictionary = Dictionary::from_xml(&xml).expect("edited dictionary loads");
    let differences = page_differences(PAGE, &dictionary);
    assert!(
        differences.contains(&"NewOrderSingle (MsgType D): group NoPartySubIDs: field 803 PartySubIDType: Required is N in the dictionary, Y on the page".to_owned()),
        "{differences:?}"
    );
    // A group table without a group.
    let page = edited(PAGE, "### Group NoPartySubIDs", "### Group NoPartySubIDz");
    let differences = page_differences(&page, Dictionary::venue());
    assert!(
        differences.contains(
            &"group NoPartySubIDz has a table on the page but is in no message of the dictionary"
                .to_owned()
        ),
        "{differences:?}"
    );
}

#[test]
fn the_party_rules_state_the_echo_and_the_venue_limits() {
    // The dictionary puts Parties on ExecutionReports, so the table comparison above holds the
    // page to listing the echoed group there.
    let report = Dictionary::venue().message(b"8").expect("ExecutionReport");
    assert!(
        report
            .groups()
            .iter()
            .any(|group| group.name() == "NoPartyIDs"),
        "ExecutionReports carry the Parties group"
    );
    let rules = PAGE
        .split("### Parties\n")
        .nth(1)
        .and_then(|rest| rest.split("\n### ").next())
        .expect("a Parties section under Business rules");
    let rules = rules.split_whitespace().collect::<Vec<_>>().join(" ");
    for stated in [
        format!(
            "At most {} parties per message",
            baton::constants::PARTIES_MAX
        ),
        format!(
            "each PartyID (448) at most {} characters",
            baton::constants::PARTY_ID_LEN_MAX
        ),
        "Every ExecutionReport about the order".to_owned(),
        "An OrderCancelReplaceRequest with parties replaces the order's parties".to_owned(),
        "one without parties leaves the order's parties as they are".to_owned(),
        "the Canceled report carries the order's own".to_owned(),
    ] {
        assert!(
            rules.contains(&stated),
            "the Parties rules must say \"{stated}\":\n{rules}"
        );
    }
}
