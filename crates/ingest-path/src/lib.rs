//! Paths relative to a copy root, as bytes.
//!
//! File names on Linux are bytes, not text: a name may hold invalid UTF-8, newlines or
//! backslashes, and every one of them must be copied exactly. `RelPath` keeps the bytes and
//! gives two textual forms:
//! - [`RelPath::to_escaped`], lossless: valid UTF-8 as itself, a backslash as `\\`, any byte that
//!   is not part of valid UTF-8 as `\xNN`. This is what plans and reports store (JSON strings must
//!   be UTF-8), and [`RelPath::from_escaped`] turns it back into the same bytes.
//! - [`std::fmt::Display`], for people: the escaped form with control characters also escaped
//!   (`\n`, `\t`, `\xNN`), so a name with a newline cannot forge a line of output.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A normalised relative path: components separated by `/`, none empty, `.` or `..`.
/// The empty path is the root.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RelPath(Vec<u8>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RelPathError {
    #[error("path {0:?} is absolute; a relative path is expected")]
    Absolute(String),
    #[error("path {0:?} has an empty, '.' or '..' component")]
    BadComponent(String),
    #[error("path {0:?} has a bad escape at byte {1}: only \\\\ and \\xNN are valid")]
    BadEscape(String, usize),
}

impl RelPath {
    pub fn root() -> Self {
        RelPath(Vec::new())
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks and wraps raw bytes.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<Self, RelPathError> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Ok(RelPath(bytes));
        }
        if bytes[0] == b'/' {
            return Err(RelPathError::Absolute(escape(&bytes, false)));
        }
        if bytes
            .split(|&b| b == b'/')
            .any(|c| c.is_empty() || c == b"." || c == b"..")
        {
            return Err(RelPathError::BadComponent(escape(&bytes, false)));
        }
        Ok(RelPath(bytes))
    }

    pub fn from_escaped(text: &str) -> Result<Self, RelPathError> {
        Self::from_bytes(unescape(text)?)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }

    pub fn into_os_string(self) -> OsString {
        OsString::from_vec(self.0)
    }

    /// This path with one more component. `name` must be a single valid component.
    pub fn join(&self, name: &[u8]) -> RelPath {
        debug_assert!(!name.is_empty() && !name.contains(&b'/') && name != b"." && name != b"..");
        let mut v = Vec::with_capacity(self.0.len() + 1 + name.len());
        v.extend_from_slice(&self.0);
        if !v.is_empty() {
            v.push(b'/');
        }
        v.extend_from_slice(name);
        RelPath(v)
    }

    /// The components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|&b| b == b'/').filter(|c| !c.is_empty())
    }

    /// The last component (empty for the root).
    pub fn file_name(&self) -> &[u8] {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// The parent (the root's parent is the root).
    pub fn parent(&self) -> RelPath {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => RelPath(self.0[..i].to_vec()),
            None => RelPath::root(),
        }
    }

    /// True when `self` is `other` or below it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.len() > other.0.len()
                && self.0.starts_with(&other.0)
                && self.0[other.0.len()] == b'/')
    }

    /// Lossless text form (see the module docs).
    pub fn to_escaped(&self) -> String {
        escape(&self.0, false)
    }
}

/// Escapes bytes for text: lossless; with `controls`, control characters are escaped too.
pub fn escape(bytes: &[u8], controls: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' if controls => out.push_str("\\n"),
                '\t' if controls => out.push_str("\\t"),
                '\r' if controls => out.push_str("\\r"),
                c if controls && c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Reverses [`escape`] (both forms: `\n`, `\t`, `\r` are accepted too).
pub fn unescape(text: &str) -> Result<Vec<u8>, RelPathError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let bad = || RelPathError::BadEscape(text.to_string(), i);
        match bytes.get(i + 1) {
            Some(b'\\') => out.push(b'\\'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'r') => out.push(b'\r'),
            Some(b'x') => {
                let hex = text.get(i + 2..i + 4).ok_or_else(bad)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 2;
            }
            _ => return Err(bad()),
        }
        i += 2;
    }
    Ok(out)
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str(".")
        } else {
            f.write_str(&escape(&self.0, true))
        }
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelPath({:?})", self.to_escaped())
    }
}

impl Serialize for RelPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_escaped())
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        RelPath::from_escaped(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_form_round_trips_every_byte() {
        let mut name: Vec<u8> = (1u8..=255).filter(|&b| b != b'/').collect();
        name.extend_from_slice("ü\\x41\n".as_bytes());
        let p = RelPath::from_bytes([b"dir/".as_slice(), &name].concat()).unwrap();
        let text = p.to_escaped();
        assert_eq!(RelPath::from_escaped(&text).unwrap(), p);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<RelPath>(&json).unwrap(), p);
    }

    #[test]
    fn display_escapes_controls_and_invalid_utf8() {
        let p = RelPath::from_bytes(b"a\nb/\xffc d\\".to_vec()).unwrap();
        assert_eq!(p.to_string(), "a\\nb/\\xffc d\\\\");
        assert_eq!(RelPath::from_escaped(&p.to_string()).unwrap(), p);
    }

    #[test]
    fn rejects_absolute_and_dot_components() {
        assert!(matches!(
            RelPath::from_bytes(b"/a".to_vec()),
            Err(RelPathError::Absolute(_))
        ));
        for bad in [&b"a//b"[..], b"a/./b", b"../a", b"a/", b"."] {
            assert!(
                matches!(
                    RelPath::from_bytes(bad.to_vec()),
                    Err(RelPathError::BadComponent(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            RelPath::from_escaped("a\\q"),
            Err(RelPathError::BadEscape(_, 1))
        ));
        assert!(matches!(
            RelPath::from_escaped("a\\x4"),
            Err(RelPathError::BadEscape(_, 1))
        ));
    }

    #[test]
    fn parent_join_and_prefix() {
        let p = RelPath::root().join(b"a").join(b"bc");
        assert_eq!(p.as_bytes(), b"a/bc");
        assert_eq!(p.parent().as_bytes(), b"a");
        assert_eq!(p.file_name(), b"bc");
        assert!(p.starts_with(&RelPath::from_bytes(b"a".to_vec()).unwrap()));
        assert!(!p.starts_with(&RelPath::from_bytes(b"a/b".to_vec()).unwrap()));
        assert!(p.starts_with(&RelPath::root()));
        assert_eq!(p.components().collect::<Vec<_>>(), vec![&b"a"[..], b"bc"]);
    }
}
