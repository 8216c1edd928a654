//! Test helpers: fixture text and fake cgroup trees in temporary directories.

use std::path::{Path, PathBuf};

/// The text of a fixture file under `cgroup/fixtures/`.
pub(crate) fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Copies every cgroup file of a fixture directory (not the proc-* captures) into `dest`.
pub(crate) fn copy_fixture_dir(name: &str, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let file_name = entry.file_name();
        let name = file_name.to_string_lossy();
        if !name.starts_with("proc-") && !name.starts_with("root-") && name != "uname-r" {
            std::fs::copy(entry.path(), dest.join(&*name)).unwrap();
        }
    }
}

/// A temporary directory tree standing in for /sys/fs/cgroup.
pub(crate) struct FakeTree {
    dir: tempfile::TempDir,
}

impl FakeTree {
    pub(crate) fn new() -> Self {
        FakeTree {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub(crate) fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations of fixture text, for the parsers' property tests.
// ---------------------------------------------------------------------------------------------

use crate::error::ParseError;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use std::cell::Cell;
use std::ops::Range;

/// Tokens on the edges of the kernel formats, substituted for a token of the text: u64 and u32
/// limits and one past them, one past `cpulist::MAX_CPU`, signs, zero, nothing, the v2
/// "unlimited", and floats that are not finite.
const EXTREMES: &[&str] = &[
    "18446744073709551615", // u64::MAX
    "18446744073709551616", // u64::MAX + 1
    "4294967295",           // u32::MAX
    "4294967296",           // u32::MAX + 1
    "8192",                 // cpulist::MAX_CPU + 1
    "-1",
    "0",
    "",
    "+1",
    "max",
    "NaN",
    "inf",
    "1e309",
];

/// Whitespace inserted anywhere, including the Unicode kind `split_whitespace` also splits on.
const WHITESPACE: &[&str] = &[" ", "\t", "\n", "\n\n", "\r", "\r\n", "\u{a0}"];

/// Characters a flipped character becomes (besides any Unicode character): the formats'
/// separators and digits.
const FLIPS: &[char] = &[
    ' ', '\t', '\n', ':', '=', '-', ',', '(', ')', '/', '\\', '.', '+', '0', '9', 'x',
];

/// How `Edit::ChangeCase` changes a token.
#[derive(Debug, Clone, Copy)]
enum Case {
    Upper,
    Lower,
    ToggleFirst,
}

/// A position as a fraction of whatever it indexes (like `proptest::sample::Index`, which cannot be
/// built in a test), so an edit never falls outside the text and shrinks towards its start.
#[derive(Debug, Clone, Copy)]
struct Index(u64);

impl Index {
    /// The position in a collection of `size` items; 0 if it is empty.
    fn index(self, size: usize) -> usize {
        self.split(size).0
    }

    /// The position in a collection of `size` items, and an index for choosing within it.
    fn split(self, size: usize) -> (usize, Index) {
        let scaled = size as u128 * u128::from(self.0);
        ((scaled >> 64) as usize, Index(scaled as u64))
    }

    /// The index that picks item `k` of `n` (the middle of its share).
    fn of(k: usize, n: usize) -> Index {
        Index((((2 * k as u128 + 1) << 64) / (2 * n as u128)) as u64)
    }

    /// The index that picks item `k` of `n` within item `outer` of `outer_n`.
    fn of2(outer: usize, outer_n: usize, k: usize, n: usize) -> Index {
        let inner = u128::from(Index::of(k, n).0);
        Index(((((outer as u128) << 64) + inner) / outer_n as u128) as u64)
    }
}

impl Arbitrary for Index {
    type Parameters = ();
    type Strategy = prop::strategy::Map<prop::num::u64::Any, fn(u64) -> Index>;

    fn arbitrary_with((): ()) -> Self::Strategy {
        any::<u64>().prop_map(Index)
    }
}

/// One random edit of a text.
#[derive(Debug, Clone)]
enum Edit {
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    /// Cut the text at a byte (moved back to a char boundary).
    Truncate(Index),
    /// Replace a token with another token of the same text.
    ReplaceToken(Index, Index),
    /// Replace a token with one of `EXTREMES`.
    ReplaceTokenWith(Index, &'static str),
    /// Replace a number (a token starting with a digit), if any, with one of `EXTREMES`.
    ReplaceNumberWith(Index, &'static str),
    /// Insert a token of the text at a byte position.
    InsertToken(Index, Index),
    InsertWhitespace(Index, &'static str),
    FlipChar(Index, char),
    ChangeCase(Index, Case),
}

fn edit() -> impl Strategy<Value = Edit> {
    let case = prop_oneof![
        Just(Case::Upper),
        Just(Case::Lower),
        Just(Case::ToggleFirst)
    ];
    let flip = prop_oneof![3 => prop::sample::select(FLIPS), 1 => any::<char>()];
    prop_oneof![
        any::<Index>().prop_map(Edit::DeleteLine),
        any::<Index>().prop_map(Edit::DuplicateLine),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::ReplaceToken(a, b)),
        (any::<Index>(), prop::sample::select(EXTREMES))
            .prop_map(|(a, s)| Edit::ReplaceTokenWith(a, s)),
        (any::<Index>(), prop::sample::select(EXTREMES))
            .prop_map(|(a, s)| Edit::ReplaceNumberWith(a, s)),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::InsertToken(a, b)),
        (any::<Index>(), prop::sample::select(WHITESPACE))
            .prop_map(|(a, s)| Edit::InsertWhitespace(a, s)),
        (any::<Index>(), flip).prop_map(|(a, c)| Edit::FlipChar(a, c)),
        (any::<Index>(), case).prop_map(|(a, c)| Edit::ChangeCase(a, c)),
    ]
}

/// Byte ranges of the tokens of a line starting at byte `start` of the text: maximal runs of
/// alphanumerics, '_' and '.' (so "MemTotal", "avg10", "0.00", "cpu0", "8" and "0" of "8:0" are
/// each one token). With `numbers`, maximal runs of digits and '.' starting with a digit instead
/// (the "10" of "avg10", the "0" of "cpu0").
fn tokens(line: &str, start: usize, numbers: bool) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut run = None;
    for (i, c) in line.char_indices().chain([(line.len(), ' ')]) {
        let inside = if numbers {
            c.is_ascii_digit() || (c == '.' && run.is_some())
        } else {
            c.is_alphanumeric() || c == '_' || c == '.'
        };
        match (inside, run) {
            (true, None) => run = Some(i),
            (false, Some(s)) => {
                out.push(start + s..start + i);
                run = None;
            }
            _ => {}
        }
    }
    out
}

/// The text's lines with the byte offset each starts at.
fn lines_at(text: &str) -> Vec<(usize, &str)> {
    let mut at = 0;
    text.split_inclusive('\n')
        .map(|line| {
            at += line.len();
            (at - line.len(), line)
        })
        .collect()
}

/// The token (or number) chosen by `at`: first a line, uniformly among the lines that have
/// one, then one of that line's (so a long line such as the `intr` line of /proc/stat does not
/// take nearly every edit).
fn pick_token(text: &str, at: Index, numbers: bool) -> Option<Range<usize>> {
    let per_line: Vec<Vec<Range<usize>>> = lines_at(text)
        .into_iter()
        .map(|(start, line)| tokens(line, start, numbers))
        .filter(|t| !t.is_empty())
        .collect();
    if per_line.is_empty() {
        return None;
    }
    let (line, rest) = at.split(per_line.len());
    let line = &per_line[line];
    Some(line[rest.index(line.len())].clone())
}

/// A char boundary of `text` chosen by `at`, anywhere from 0 to `text.len()` inclusive: first a
/// line, uniformly, then a byte of it (or the end of the text).
fn position(text: &str, at: Index) -> usize {
    let lines = lines_at(text);
    let (line, rest) = at.split(lines.len() + 1);
    let Some((start, line)) = lines.get(line) else {
        return text.len();
    };
    let mut p = start + rest.index(line.len());
    while !text.is_char_boundary(p) {
        p -= 1;
    }
    p
}

fn apply(text: &mut String, edit: &Edit) {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let token = |at: &Index| pick_token(text, *at, false).unwrap_or_default();
    let rebuilt = match edit {
        Edit::DeleteLine(_) | Edit::DuplicateLine(_) | Edit::SwapLines(..) if lines.is_empty() => {
            return
        }
        Edit::DeleteLine(i) => {
            let mut lines = lines.clone();
            lines.remove(i.index(lines.len()));
            lines.concat()
        }
        Edit::DuplicateLine(i) => {
            let mut lines = lines.clone();
            let n = i.index(lines.len());
            lines.insert(n, lines[n]);
            lines.concat()
        }
        Edit::SwapLines(a, b) => {
            let mut lines = lines.clone();
            let n = lines.len();
            lines.swap(a.index(n), b.index(n));
            lines.concat()
        }
        Edit::Truncate(at) => text[..position(text, *at)].to_string(),
        Edit::ReplaceToken(..)
        | Edit::ReplaceTokenWith(..)
        | Edit::ReplaceNumberWith(..)
        | Edit::InsertToken(..)
        | Edit::ChangeCase(..)
            if pick_token(text, Index(0), false).is_none() =>
        {
            return
        }
        Edit::ReplaceToken(a, b) => {
            let with = text[token(b)].to_string();
            let mut out = text.clone();
            out.replace_range(token(a), &with);
            out
        }
        Edit::ReplaceTokenWith(a, with) => {
            let mut out = text.clone();
            out.replace_range(token(a), with);
            out
        }
        Edit::ReplaceNumberWith(a, with) => {
            let Some(number) = pick_token(text, *a, true) else {
                return;
            };
            let mut out = text.clone();
            out.replace_range(number, with);
            out
        }
        Edit::InsertToken(at, b) => {
            let with = text[token(b)].to_string();
            let mut out = text.clone();
            out.insert_str(position(text, *at), &with);
            out
        }
        Edit::ChangeCase(a, case) => {
            let range = token(a);
            let old = &text[range.clone()];
            let new = match case {
                Case::Upper => old.to_uppercase(),
                Case::Lower => old.to_lowercase(),
                Case::ToggleFirst => {
                    let mut chars = old.chars();
                    let first = chars.next().unwrap_or_default();
                    let first: String = if first.is_uppercase() {
                        first.to_lowercase().collect()
                    } else {
                        first.to_uppercase().collect()
                    };
                    first + chars.as_str()
                }
            };
            let mut out = text.clone();
            out.replace_range(range, &new);
            out
        }
        Edit::InsertWhitespace(at, ws) => {
            let mut out = text.clone();
            out.insert_str(position(text, *at), ws);
            out
        }
        Edit::FlipChar(_, _) if text.is_empty() => return,
        Edit::FlipChar(at, c) => {
            let mut p = position(text, *at);
            if p == text.len() {
                p = text.char_indices().last().map_or(0, |(i, _)| i);
            }
            let len = text[p..].chars().next().map_or(0, char::len_utf8);
            let mut out = text.clone();
            out.replace_range(p..p + len, c.encode_utf8(&mut [0; 4]));
            out
        }
    };
    *text = rebuilt;
}

/// Texts made from `seeds` by one to three random edits: delete, duplicate or swap lines,
/// truncate at any byte, replace a token with another token of the text, replace a token or a
/// number with an extreme value (u64::MAX, u64::MAX + 1, -1, 0, empty, ...), insert a token or whitespace, flip a
/// character, change a token's case.
pub(crate) fn mutations_of(seeds: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (seeds, prop::collection::vec(edit(), 1..=3)).prop_map(|(mut text, edits)| {
        for edit in &edits {
            apply(&mut text, edit);
        }
        text
    })
}

/// Random edits (see [`mutations_of`]) of the named fixture files.
pub(crate) fn fixture_mutations(names: &[&str]) -> impl Strategy<Value = String> {
    let texts: Vec<String> = names.iter().map(|name| fixture(name)).collect();
    mutations_of(prop::sample::select(texts))
}

/// Number of generated inputs per property (fixed, with a fixed seed: the same inputs every run).
pub(crate) const CASES: u32 = 256;

/// Runs `property` on [`CASES`] inputs drawn from `inputs` with a fixed seed. A panic or a failed
/// `prop_assert!` fails the test with proptest's minimal failing input. `property` returns the
/// parser's verdict (`Ok(())` if it accepted the input); the test also fails unless some inputs
/// were accepted and some rejected, i.e. unless the inputs reach both the parser's success path
/// and its errors.
pub(crate) fn check_mutants<S: Strategy>(
    label: &str,
    inputs: S,
    property: impl Fn(S::Value) -> Result<Result<(), ParseError>, TestCaseError>,
) {
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let (ok, err) = (Cell::new(0u32), Cell::new(0u32));
    let result = runner.run(&inputs, |input| {
        let verdict = property(input)?;
        let counter = if verdict.is_ok() { &ok } else { &err };
        counter.set(counter.get() + 1);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{label}: {e}");
    }
    assert!(
        ok.get() > 0 && err.get() > 0,
        "{label}: {} inputs parsed, {} rejected: the mutations miss a path",
        ok.get(),
        err.get()
    );
}

/// [`check_mutants`] on mutations of the named fixtures, after checking that `property` holds
/// on every unmodified fixture and that the parser accepts it.
pub(crate) fn check_fixture_mutants(
    label: &str,
    names: &[&str],
    property: impl Fn(&str) -> Result<Result<(), ParseError>, TestCaseError>,
) {
    for name in names {
        match property(&fixture(name)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{label}: fixture {name} rejected: {e}"),
            Err(e) => panic!("{label}: property fails on fixture {name}: {e}"),
        }
    }
    check_mutants(label, fixture_mutations(names), |text| property(&text));
}

/// Whether `value` is written in decimal somewhere in `text`: a parsed number came from its
/// input, not from an overflow, a default or another field.
pub(crate) fn appears(text: &str, value: impl std::fmt::Display) -> bool {
    text.contains(&value.to_string())
}

/// The lines of `text` that are not blank, as the parsers skip them.
pub(crate) fn non_blank_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.trim().is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edited(text: &str, edit: Edit) -> String {
        let mut text = text.to_string();
        apply(&mut text, &edit);
        text
    }

    #[test]
    fn edits_do_what_they_say() {
        let text = "MemTotal: 8 kB\nsome avg10=0.00\n";
        // Lines: 15 and 16 bytes; tokens: MemTotal, 8, kB / some, avg10, 0.00.
        let i = Index::of;
        let in_line = Index::of2;
        assert_eq!(edited(text, Edit::DeleteLine(i(1, 2))), "MemTotal: 8 kB\n");
        assert_eq!(
            edited(text, Edit::DuplicateLine(i(0, 2))),
            "MemTotal: 8 kB\nMemTotal: 8 kB\nsome avg10=0.00\n"
        );
        assert_eq!(
            edited(text, Edit::SwapLines(i(0, 2), i(1, 2))),
            "some avg10=0.00\nMemTotal: 8 kB\n"
        );
        // Positions: a line of the two or the end of the text, then a byte of the line.
        assert_eq!(edited(text, Edit::Truncate(in_line(0, 3, 4, 15))), "MemT");
        assert_eq!(
            edited(text, Edit::Truncate(in_line(1, 3, 0, 16))),
            "MemTotal: 8 kB\n"
        );
        assert_eq!(edited(text, Edit::Truncate(in_line(2, 3, 0, 1))), text);
        assert_eq!(
            edited(
                text,
                Edit::ReplaceToken(in_line(0, 2, 1, 3), in_line(1, 2, 1, 3))
            ),
            "MemTotal: avg10 kB\nsome avg10=0.00\n"
        );
        assert_eq!(
            edited(
                text,
                Edit::ReplaceTokenWith(in_line(1, 2, 2, 3), "18446744073709551616")
            ),
            "MemTotal: 8 kB\nsome avg10=18446744073709551616\n"
        );
        // Numbers: 8 / 10, 0.00.
        assert_eq!(
            edited(text, Edit::ReplaceNumberWith(in_line(1, 2, 0, 2), "-1")),
            "MemTotal: 8 kB\nsome avg-1=0.00\n"
        );
        assert_eq!(
            edited(
                text,
                Edit::InsertToken(in_line(0, 3, 0, 15), in_line(1, 2, 0, 3))
            ),
            format!("some{text}")
        );
        assert_eq!(
            edited(text, Edit::InsertWhitespace(in_line(2, 3, 0, 1), "\t")),
            format!("{text}\t")
        );
        assert_eq!(
            edited(text, Edit::FlipChar(in_line(0, 3, 8, 15), '=')),
            "MemTotal= 8 kB\nsome avg10=0.00\n"
        );
        assert_eq!(
            edited(text, Edit::ChangeCase(in_line(0, 2, 0, 3), Case::Lower)),
            "memtotal: 8 kB\nsome avg10=0.00\n"
        );
        assert_eq!(
            edited(
                text,
                Edit::ChangeCase(in_line(1, 2, 0, 3), Case::ToggleFirst)
            ),
            "MemTotal: 8 kB\nSome avg10=0.00\n"
        );
        for edit in [
            Edit::DeleteLine(i(0, 1)),
            Edit::ReplaceToken(i(0, 1), i(0, 1)),
            Edit::ReplaceNumberWith(i(0, 1), "0"),
            Edit::FlipChar(i(0, 1), 'x'),
            Edit::Truncate(i(0, 1)),
        ] {
            assert_eq!(edited("", edit), "");
        }
        // A flip at the end of the text replaces its last character, even a multi-byte one;
        // positions inside a character move back to its start.
        assert_eq!(edited("aé", Edit::FlipChar(i(1, 2), 'x')), "ax");
        assert_eq!(edited("aé", Edit::Truncate(in_line(0, 2, 2, 3))), "a");
    }
}
