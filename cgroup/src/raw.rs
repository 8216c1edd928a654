//! The edge between I/O and interpretation: [`RawFile`] is a kernel file's text as read, with
//! its path kept only to name it in errors. The per-version controller modules ([`crate::v1`],
//! [`crate::v2`]) read their files into raw structs here, then interpret them with pure
//! functions of the text (tested on fixture text, no I/O).

use crate::error::{Error, Result};
use crate::files::FileCache;
use crate::parse::ParseResult;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A kernel file's text, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFile {
    /// Where it was read from (named in parse errors).
    pub path: PathBuf,
    /// Its whole text.
    pub text: String,
}

impl RawFile {
    /// A raw file from text (tests, fixtures).
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        RawFile {
            path: path.into(),
            text: text.into(),
        }
    }

    /// Parses the text with `parse`, naming the file on failure.
    pub fn parse<'t, T>(&'t self, parse: impl FnOnce(&'t str) -> ParseResult<T>) -> Result<T> {
        parse(&self.text).map_err(|e| Error::parse(&self.path, e))
    }
}

/// Parses an optional file; `None` when it was absent.
pub(crate) fn parse_optional<'t, T>(
    file: Option<&'t RawFile>,
    parse: impl FnOnce(&'t str) -> ParseResult<T>,
) -> Result<Option<T>> {
    file.map(|f| f.parse(parse)).transpose()
}

/// The minimum of a limit over a cgroup's chain of limit files (the cgroup first, then its
/// ancestors; `None` entries are ancestors without the file, which set no limit). `parse` gives
/// `None` for "unlimited". `None` when no file in the chain sets a limit.
pub(crate) fn min_limit(
    chain: &[Option<RawFile>],
    parse: fn(&str) -> ParseResult<Option<u64>>,
) -> Result<Option<u64>> {
    let mut min: Option<u64> = None;
    for file in chain.iter().flatten() {
        if let Some(limit) = file.parse(parse)? {
            min = Some(min.map_or(limit, |m| m.min(limit)));
        }
    }
    Ok(min)
}

/// The cgroup's own limit: the first file of its chain; `None` when it has none or "unlimited".
pub(crate) fn own_limit(
    chain: &[Option<RawFile>],
    parse: fn(&str) -> ParseResult<Option<u64>>,
) -> Result<Option<u64>> {
    match chain.first() {
        Some(Some(file)) => file.parse(parse),
        _ => Ok(None),
    }
}

/// Ancestors' files as read once in one collection (by path; `None` where absent): the limit
/// files of a parent are the same for all of its children, so a collection of many siblings
/// reads them once, not once per child. Shared by the collection's threads; lives for one
/// collection only, never across two.
pub(crate) type Shared = Mutex<HashMap<PathBuf, Option<RawFile>>>;

/// Reads files through the collector's kept descriptors, noting whether a file that may be
/// absent was (which can also mean its cgroup was removed during the read).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Edge<'a> {
    files: &'a FileCache,
    absent: &'a Cell<bool>,
    /// Where ancestors' files read in this collection are kept; `None`: read them every time.
    shared: Option<&'a Shared>,
    /// A file of the cgroup that this collection read already, taken instead of read again.
    given: Option<&'a RefCell<Option<RawFile>>>,
}

impl<'a> Edge<'a> {
    /// Reads through `files`; `absent` is set when an optional file was not there.
    pub(crate) fn new(files: &'a FileCache, absent: &'a Cell<bool>) -> Self {
        Edge {
            files,
            absent,
            shared: None,
            given: None,
        }
    }

    /// Takes the file in `given` (read earlier in the same collection) when asked for its path.
    pub(crate) fn given(self, given: &'a RefCell<Option<RawFile>>) -> Self {
        Edge {
            given: Some(given),
            ..self
        }
    }

    /// Reads ancestors' files ([`Edge::ancestor`]) once into `shared`, then from there.
    pub(crate) fn sharing(self, shared: &'a Shared) -> Self {
        Edge {
            shared: Some(shared),
            ..self
        }
    }

    /// Reads `dir/name`; absent is `Vanished`.
    pub(crate) fn read(&self, dir: &Path, name: &str) -> Result<RawFile> {
        let path = dir.join(name);
        if let Some(given) = self.given {
            let mut given = given.borrow_mut();
            if given
                .as_ref()
                .is_some_and(|file| file.path.as_os_str() == path.as_os_str())
            {
                if let Some(file) = given.take() {
                    return Ok(file);
                }
            }
        }
        let text = self.files.read(&path)?;
        Ok(RawFile { path, text })
    }

    /// Reads `dir/name`, which the kernel may not have (a feature of later versions, swap
    /// accounting turned off); `None` when absent.
    pub(crate) fn optional(&self, dir: &Path, name: &str) -> Result<Option<RawFile>> {
        match self.read(dir, name) {
            Ok(file) => Ok(Some(file)),
            Err(Error::Vanished { .. }) => {
                self.absent.set(true);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads `dir/name` of an ancestor of the cgroup being read, like [`Edge::optional`], but
    /// only once in a collection when the edge is [`Edge::sharing`].
    pub(crate) fn ancestor(&self, dir: &Path, name: &str) -> Result<Option<RawFile>> {
        let Some(shared) = self.shared else {
            return self.optional(dir, name);
        };
        let path = dir.join(name);
        // Held while a file not yet known is read (once per ancestor's file in a collection),
        // so that no other thread reads it too.
        let mut known = shared.lock().unwrap_or_else(|e| e.into_inner());
        let file = match known.get(&path) {
            Some(file) => file.clone(),
            None => {
                let file = self.optional(dir, name)?;
                known.insert(path, file.clone());
                file
            }
        };
        drop(known);
        if file.is_none() {
            self.absent.set(true);
        }
        Ok(file)
    }

    /// Reads file `name` in each of `dirs` (a cgroup, then its ancestors); `None` where
    /// absent (an ancestor that does not enable the controller sets no limit).
    pub(crate) fn chain(&self, dirs: &[PathBuf], name: &str) -> Result<Vec<Option<RawFile>>> {
        dirs.iter()
            .enumerate()
            .map(|(i, dir)| match i {
                0 => self.optional(dir, name),
                _ => self.ancestor(dir, name),
            })
            .collect()
    }
}
