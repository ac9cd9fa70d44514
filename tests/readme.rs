//! The README's examples stay honest: every `sttpipe` command line in its
//! code blocks (and inline code that starts with `sttpipe `) names only
//! subcommands the built binary has and flags that subcommand's `--help`
//! lists; and `sttpipe(1)` names every flag of every subcommand's `--help`.

use std::collections::HashMap;
use std::process::Command;

use crate::util;

/// Subcommands a README line may name before they exist (a feature being
/// written on a branch), with why; their lines are not checked further.
/// Empty on main: every subcommand the README names must exist.
const UNMERGED: &[(&str, &str)] = &[];

/// What one command's `--help` says: its flags and whether each takes a
/// value, and its subcommands.
#[derive(Debug, Default)]
struct Help {
    /// `--long` and `-s` spellings → takes a value.
    flags: HashMap<String, bool>,
    subcommands: Vec<String>,
}

impl Help {
    fn parse(text: &str) -> Help {
        let mut help = Help::default();
        let mut in_commands = false;
        for line in text.lines() {
            if !line.starts_with(' ') {
                in_commands = line.trim_end() == "Commands:";
                continue;
            }
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            if in_commands {
                // Subcommands sit at the first indent; their wrapped
                // descriptions further in.
                if indent <= 4
                    && let Some(name) = trimmed.split_whitespace().next()
                {
                    help.subcommands.push(name.to_owned());
                }
                continue;
            }
            // Flags sit at indent 2 (with a short form) or 6; wrapped
            // descriptions, which may start with a flag's name, further in.
            if !trimmed.starts_with('-') || indent > 6 {
                continue;
            }
            // `-v, --verbose...`, `--format <FORMAT>`, `--input <PATH>  text`
            let spec = trimmed.split("  ").next().unwrap_or(trimmed);
            let takes_value = spec.contains('<');
            for part in spec.split(", ") {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                if name.starts_with('-') && name.len() > 1 {
                    help.flags.insert(name, takes_value);
                }
            }
        }
        help
    }
}

/// The built binary's help for each subcommand path, asked once.
#[derive(Default)]
struct Helps(HashMap<Vec<String>, Help>);

impl Helps {
    fn get(&mut self, path: &[String]) -> &Help {
        self.0.entry(path.to_vec()).or_insert_with(|| {
            let out = Command::new(util::binary())
                .args(path)
                .arg("--help")
                .output()
                .expect("run sttpipe --help");
            assert!(out.status.success(), "sttpipe {path:?} --help failed");
            Help::parse(&String::from_utf8_lossy(&out.stdout))
        })
    }
}

/// Shell words and operators of one command line: quotes respected, a
/// comment dropped, `| & ; < > ( )` as operator words of their own.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut started = false;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.push(c),
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    started = true;
                }
                '#' if !started => break,
                c if c.is_whitespace() => {
                    if started {
                        words.push(std::mem::take(&mut word));
                        started = false;
                    }
                }
                '|' | '&' | ';' | '<' | '>' | '(' | ')' => {
                    if started {
                        words.push(std::mem::take(&mut word));
                        started = false;
                    }
                    words.push(c.to_string());
                }
                c => {
                    word.push(c);
                    started = true;
                }
            },
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// The `sttpipe` command lines of a README: code blocks (with a `$ `
/// prompt in `console` blocks, only the prompted lines), continuation
/// lines joined; and inline code in the prose that names `sttpipe`, which
/// may also be a sentence (the demo's output), so only its flags are
/// checked.
fn command_lines(readme: &str) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut prose = String::new();
    let mut block: Option<String> = None;
    let mut pending = String::new();
    for line in readme.lines() {
        if let Some(fence) = line.trim_start().strip_prefix("```") {
            block = match block {
                None => Some(fence.trim().to_owned()),
                Some(_) => None,
            };
            continue;
        }
        let Some(lang) = &block else {
            prose.push_str(line);
            prose.push('\n');
            continue;
        };
        let line = if lang == "console" {
            match line.strip_prefix("$ ") {
                Some(command) => command,
                None => continue,
            }
        } else {
            line
        };
        match line.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line);
                lines.push(Line {
                    text: std::mem::take(&mut pending),
                    in_code_block: true,
                });
            }
        }
    }
    // Inline code may wrap onto the next line of its paragraph.
    let spans = prose.split('`').skip(1).step_by(2);
    lines.extend(
        spans
            .filter(|span| span.contains("sttpipe"))
            .map(|span| Line {
                text: span.replace('\n', " "),
                in_code_block: false,
            }),
    );
    lines
}

/// A command line found in the README.
#[derive(Debug)]
struct Line {
    text: String,
    /// In a code block, not inline in the prose.
    in_code_block: bool,
}

/// `sttpipe`, `sttpipe serve`, ...
fn named(path: &[String]) -> String {
    std::iter::once("sttpipe")
        .chain(path.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What is wrong with the `sttpipe` invocations of `line`.
fn problems(line: &Line, helps: &mut Helps) -> Vec<String> {
    let words = shell_words(&line.text);
    let text = &line.text;
    let mut found = Vec::new();
    let is_operator = |w: &str| matches!(w, "|" | "&" | ";" | "<" | ">" | "(" | ")");
    for (at, _) in words.iter().enumerate().filter(|(_, w)| *w == "sttpipe") {
        let args: Vec<&str> = words[at + 1..]
            .iter()
            .map(String::as_str)
            .take_while(|w| !is_operator(w))
            .collect();
        let mut path: Vec<String> = Vec::new();
        let mut positionals = 0;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let help = helps.get(&path);
            if arg.starts_with('-') && arg != "-" {
                let name = arg.split('=').next().unwrap_or(arg);
                match help.flags.get(name) {
                    None => found.push(format!("`{text}`: `{}` has no {name}", named(&path))),
                    Some(true) if !arg.contains('=') => {
                        args.next();
                    }
                    Some(_) => {}
                }
                continue;
            }
            positionals += 1;
            // The first plain word where a subcommand may stand is one;
            // FILE operands have a dot or a slash.
            let looks_like_name = arg.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
            let may_be_subcommand = positionals == 1 && !help.subcommands.is_empty();
            if !(may_be_subcommand && looks_like_name) {
                continue;
            }
            if help.subcommands.iter().any(|s| s == arg) {
                path.push(arg.to_owned());
                positionals = 0;
            } else if !line.in_code_block
                || (path.is_empty() && UNMERGED.iter().any(|(name, _)| *name == arg))
            {
                break;
            } else {
                found.push(format!(
                    "`{text}`: `{}` has no subcommand {arg}",
                    named(&path)
                ));
                break;
            }
        }
    }
    found
}

#[test]
fn readme_commands_use_only_flags_and_subcommands_that_exist() {
    let readme = include_str!("../README.md");
    let lines = command_lines(readme);
    assert!(
        lines.iter().filter(|l| l.text.contains("sttpipe")).count() >= 10,
        "found too few command lines: {lines:#?}"
    );
    let mut helps = Helps::default();
    let found: Vec<String> = lines
        .iter()
        .flat_map(|line| problems(line, &mut helps))
        .collect();
    assert!(found.is_empty(), "README.md:\n{}", found.join("\n"));
}

#[test]
fn the_readme_check_catches_a_wrong_flag_or_subcommand() {
    let readme = "Run `sttpipe serve --no-such-knob`, or:\n\n\
        ```sh\nffmpeg -i a.mp3 - | sttpipe --format text --made-up \\\n    talk.mp3\n\
        sttpipe statuz\n```\n\n```console\n$ sttpipe --engine local --frobnicate x.wav\n\
        {\"type\":\"start\"}\n```\n";
    let mut helps = Helps::default();
    let found: Vec<String> = command_lines(readme)
        .iter()
        .flat_map(|line| problems(line, &mut helps))
        .collect();
    let expect = [
        "has no --no-such-knob",
        "has no --made-up",
        "has no subcommand statuz",
        "has no --frobnicate",
    ];
    for wanted in expect {
        assert!(
            found.iter().any(|p| p.contains(wanted)),
            "{wanted:?} not reported: {found:#?}"
        );
    }
    assert_eq!(found.len(), expect.len(), "{found:#?}");
}

#[test]
fn man_page_names_every_flag_of_every_subcommand() {
    let page = include_str!("../man/sttpipe.1");
    let mut helps = Helps::default();
    let mut missing = Vec::new();
    let mut todo: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(path) = todo.pop() {
        let help = helps.get(&path);
        for sub in help.subcommands.iter().filter(|s| *s != "help") {
            let mut next = path.clone();
            next.push(sub.clone());
            todo.push(next);
        }
        for flag in help.flags.keys().filter(|f| f.starts_with("--")) {
            if !page.contains(&flag.replace('-', "\\-")) {
                missing.push(format!("sttpipe {} {flag}", path.join(" ")));
            }
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "man/sttpipe.1 does not name: {missing:#?}"
    );
}
