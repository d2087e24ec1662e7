//! Label and field selectors as the API server evaluates them, for the mock API servers: a mock that returns
//! every object whatever the selector hides the bugs a selector causes (issue 12: plans listed by role only).
//!
//! Label selectors (`k8s.io/apimachinery/pkg/labels`): comma-separated requirements, all of which must hold:
//! `k=v`, `k==v`, `k!=v` (also true when `k` is absent), `k in (a,b)`, `k notin (a,b)` (also true when absent),
//! `k` (exists), `!k` (absent). Field selectors: `path=v`, `path==v`, `path!=v` on a dotted JSON path
//! (`metadata.name`, `metadata.namespace`, `status.phase`, ...).

use std::collections::BTreeMap;

use serde_json::Value;

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

impl Req {
    fn matches(&self, l: &BTreeMap<String, String>) -> bool {
        match self {
            Req::Eq(k, v) => l.get(k) == Some(v),
            Req::Ne(k, v) => l.get(k) != Some(v),
            Req::In(k, vs) => l.get(k).is_some_and(|x| vs.contains(x)),
            Req::NotIn(k, vs) => l.get(k).is_none_or(|x| !vs.contains(x)),
            Req::Exists(k) => l.contains_key(k),
            Req::Absent(k) => !l.contains_key(k),
        }
    }
}

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn set(s: &str) -> Result<Vec<String>, String> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("set {s:?} must be in parentheses"))?;
    Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
}

/// Parses a label selector; an error for what the API server would reject with 400.
pub fn parse_labels(s: &str) -> Result<Vec<Req>, String> {
    split_top(s)
        .into_iter()
        .map(|r| {
            if let Some((k, v)) = r.split_once("!=") {
                return Ok(Req::Ne(k.trim().into(), v.trim().into()));
            }
            if let Some((k, v)) = r.split_once("==").or_else(|| r.split_once('=')) {
                return Ok(Req::Eq(k.trim().into(), v.trim().into()));
            }
            if let Some((k, v)) = r.split_once(" notin ") {
                return Ok(Req::NotIn(k.trim().into(), set(v)?));
            }
            if let Some((k, v)) = r.split_once(" in ") {
                return Ok(Req::In(k.trim().into(), set(v)?));
            }
            if let Some(k) = r.strip_prefix('!') {
                return Ok(Req::Absent(k.trim().into()));
            }
            if r.contains([' ', '(', ')']) {
                return Err(format!("unparsable label requirement {r:?}"));
            }
            Ok(Req::Exists(r))
        })
        .collect()
}

/// Whether `labels` satisfy `selector` (None: everything matches).
pub fn labels_match(selector: Option<&str>, labels: &BTreeMap<String, String>) -> bool {
    let Some(s) = selector else { return true };
    let reqs = parse_labels(s).unwrap_or_else(|e| panic!("label selector {s:?}: {e}"));
    reqs.iter().all(|r| r.matches(labels))
}

/// Whether the object (as JSON) satisfies the field selector (None: everything matches).
pub fn fields_match(selector: Option<&str>, obj: &Value) -> bool {
    let Some(s) = selector else { return true };
    split_top(s).iter().all(|r| {
        let (path, want, negate) = if let Some((k, v)) = r.split_once("!=") {
            (k, v, true)
        } else if let Some((k, v)) = r.split_once("==").or_else(|| r.split_once('=')) {
            (k, v, false)
        } else {
            panic!("field selector {s:?}: requirement {r:?} has no operator");
        };
        let got = path
            .trim()
            .split('.')
            .try_fold(obj, |v, seg| v.get(seg))
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default();
        (got == want.trim()) != negate
    })
}

/// Decodes one `application/x-www-form-urlencoded` component (what kube's query serializer writes).
pub fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// The decoded query parameter `name` of a request URI.
pub fn query_param(uri: &str, name: &str) -> Option<String> {
    let q = uri.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (url_decode(k) == name).then(|| url_decode(v))
    })
}

/// The labels of an object as JSON.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `obj` is listed by a request to `uri` (namespace from the path, label and field selectors).
pub fn listed(uri: &str, obj: &Value) -> bool {
    let path = uri.split('?').next().unwrap_or_default();
    let segs: Vec<&str> = path.split('/').collect();
    let ns_ok = match segs.iter().position(|s| *s == "namespaces") {
        Some(i) => obj["metadata"]["namespace"].as_str() == segs.get(i + 1).copied(),
        None => true,
    };
    ns_ok
        && labels_match(
            query_param(uri, "labelSelector").as_deref(),
            &labels_of(obj),
        )
        && fields_match(query_param(uri, "fieldSelector").as_deref(), obj)
}
