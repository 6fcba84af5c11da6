//! Configuration files: the server config (`serve --config`, one per machine)
//! and the process sync definitions (`apply`, declarative, stored in the
//! instance). Parsing and offline validation only; never touches the store.
//!
//! Errors name the file, the line and the problem, and validation reports
//! every problem it finds rather than stopping at the first.

pub mod server;
pub mod sync;

use std::fmt;

/// One problem found in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, when the problem can be pinned to one.
    pub line: Option<usize>,
    pub message: String,
}

/// Every problem found in one file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match problem.line {
                Some(line) => write!(f, "{}:{}: {}", self.file, line, problem.message)?,
                None => write!(f, "{}: {}", self.file, problem.message)?,
            }
        }
        Ok(())
    }
}

/// Converts a TOML parse error into a problem with its line.
fn toml_problem(text: &str, error: &toml::de::Error) -> Problem {
    let line = error.span().map(|span| line_of_offset(text, span.start));
    // toml's message repeats the source excerpt; keep its first line, which
    // says what is wrong.
    let message = error.message().lines().next().unwrap_or("").to_string();
    Problem {
        line,
        message: format!("invalid TOML: {message}"),
    }
}

/// 1-based line holding byte `offset`.
pub fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// Where things are in a TOML file made of `[[kind]]` blocks: the line of
/// each block's header and of each `key =` inside it. Good enough to point
/// an administrator at the right line without a span-keeping parser.
pub struct SourceLines {
    blocks: Vec<Block>,
}

/// One `[[kind]]` or `[table]` block of a file.
struct Block {
    kind: String,
    /// Position among the blocks of the same kind.
    index: usize,
    header_line: usize,
    /// Keys with their lines.
    keys: Vec<(String, usize)>,
}

impl SourceLines {
    pub fn scan(text: &str) -> SourceLines {
        let mut blocks: Vec<Block> = Vec::new();
        let mut counts: std::collections::HashMap<String, usize> = Default::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if let Some(kind) = line
                .strip_prefix("[[")
                .and_then(|rest| rest.split("]]").next())
            {
                let kind = kind.trim().to_string();
                let index = counts.entry(kind.clone()).or_default();
                blocks.push(Block {
                    kind,
                    index: *index,
                    header_line: i + 1,
                    keys: Vec::new(),
                });
                *index += 1;
            } else if let Some(name) = line
                .strip_prefix('[')
                .and_then(|rest| rest.split(']').next())
            {
                blocks.push(Block {
                    kind: name.trim().to_string(),
                    index: 0,
                    header_line: i + 1,
                    keys: Vec::new(),
                });
            } else if let Some((key, _)) = line.split_once('=') {
                if let Some(block) = blocks.last_mut() {
                    block.keys.push((key.trim().to_string(), i + 1));
                }
            }
        }
        SourceLines { blocks }
    }

    /// Line of `key` inside the `index`-th `[[kind]]` block, or of the block's
    /// header when the key is absent.
    pub fn line(&self, kind: &str, index: usize, key: &str) -> Option<usize> {
        let block = self
            .blocks
            .iter()
            .find(|b| b.kind == kind && b.index == index)?;
        Some(
            block
                .keys
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, line)| *line)
                .unwrap_or(block.header_line),
        )
    }
}
