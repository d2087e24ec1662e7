//! Helpers for the packaging tests (`tests/`): where the repository's shipped files are, and a JSON → Lua
//! table converter so the Argo CD health check (Lua) can be run on objects the Rust types produced.

use std::path::PathBuf;

pub mod samples;

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Lua expression that builds the same value as `v` (objects → tables with string keys, arrays → sequences,
/// null → nil). Argo CD hands the health script the object decoded the same way.
pub fn lua_literal(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A Lua string literal: every byte outside printable ASCII as a three-digit decimal escape (three digits, so a
/// following digit is not read as part of it), which both Lua 5.1 and 5.4 read.
fn lua_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for b in s.bytes() {
        match b {
            b'"' | b'\\' => out.push_str(&format!("\\{}", b as char)),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lua_literal_escapes_and_nests() {
        let v = serde_json::json!({"a": [1, "x\"y\n"], "b": null, "c": true});
        assert_eq!(
            lua_literal(&v),
            r#"{["a"] = {1, "x\"y\010"}, ["b"] = nil, ["c"] = true}"#
        );
    }
}
