//! Lists in chunks: `limit` and `continue`, as kube-apiserver serves a list from etcd.
//!
//! A list with `limit=N` answers at most N items, sorted by namespace and name, and when more
//! remain, `metadata.continue` (a token to send back) and, for a list without selectors,
//! `metadata.remainingItemCount`. Every chunk reports the resourceVersion of the first, so that
//! a client watches from there, as from an unchunked list. The token has upstream's shape,
//! unpadded URL-safe base64 (`RawURLEncoding`) of `{"v":"meta.k8s.io/v1","rv":N,"start":"KEY\u0000"}`, KEY being the last item's
//! `namespace/name`.
//!
//! What differs: etcd serves every chunk from the snapshot at that resourceVersion, and answers
//! 410 once it is compacted. The sandbox keeps no snapshots, so a later chunk shows the
//! objects as they are when it is asked for. An object changed between chunks appears in its
//! newer state and its change is delivered again by a watch from the list's resourceVersion;
//! one created between chunks before the position reached is missing from the list and
//! arrives by the watch as ADDED. An informer ends in the same state either way.
//!
//! As upstream, `limit` is ignored for `resourceVersion=0` (served from the watch cache), and
//! a malformed token is a 400.

use serde_json::{Value, json};

use crate::status::ApiError;

/// Where a chunked list resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continue {
    /// The resourceVersion of the list's first chunk.
    pub rv: u64,
    /// Namespace and name of the last item already served.
    pub after: (String, String),
}

impl Continue {
    pub fn token(&self) -> String {
        let doc = json!({"v": "meta.k8s.io/v1", "rv": self.rv, "start": format!("{}/{}\u{0}", self.after.0, self.after.1)});
        encode(doc.to_string().as_bytes())
    }

    pub fn parse(token: &str) -> Result<Continue, ApiError> {
        let invalid =
            |why: &str| ApiError::bad_request(format!("continue key is not valid: {why}"));
        let raw = decode(token).ok_or_else(|| invalid("not base64"))?;
        let doc: Value = serde_json::from_slice(&raw).map_err(|e| invalid(&e.to_string()))?;
        if doc.get("v").and_then(Value::as_str) != Some("meta.k8s.io/v1") {
            return Err(invalid(
                "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
            ));
        }
        let rv = doc
            .get("rv")
            .and_then(Value::as_u64)
            .filter(|rv| *rv > 0)
            .ok_or_else(|| invalid("incorrect encoded start resourceVersion"))?;
        let after = doc
            .get("start")
            .and_then(Value::as_str)
            .and_then(|s| s.strip_suffix('\u{0}'))
            .and_then(|s| s.split_once('/'))
            .filter(|(_, name)| !name.is_empty())
            .ok_or_else(|| invalid("continue key is empty"))?;
        Ok(Continue {
            rv,
            after: (after.0.to_string(), after.1.to_string()),
        })
    }
}

const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded URL-safe base64, as Go's `base64.RawURLEncoding`.
fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(URL_SAFE[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The reverse of [`encode`]; None if `text` is not unpadded URL-safe base64.
fn decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    for quad in text.as_bytes().chunks(4) {
        if quad.len() == 1 {
            return None;
        }
        let mut n = 0u32;
        for (i, b) in quad.iter().enumerate() {
            n |= (URL_SAFE.iter().position(|t| t == b)? as u32) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..quad.len()]);
    }
    Some(out)
}

/// The namespace and name an item sorts by (the store's order).
pub fn key_of(obj: &Value) -> (String, String) {
    let meta = |f: &str| {
        obj.pointer(&format!("/metadata/{f}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (meta("namespace"), meta("name"))
}

/// One chunk of a list: its items, the resourceVersion to report, and the `continue` token
/// and remaining count when more items follow.
#[derive(Debug)]
pub struct Chunk {
    pub items: Vec<Value>,
    pub rv: u64,
    pub next: Option<(String, usize)>,
}

/// Cuts `items` (sorted by namespace and name, current at `rv`) into the chunk that `limit`
/// and `from` ask for.
pub fn chunk(items: Vec<Value>, rv: u64, limit: Option<usize>, from: Option<&Continue>) -> Chunk {
    let rv = from.map_or(rv, |c| c.rv);
    let mut items: Vec<Value> = match from {
        Some(c) => items
            .into_iter()
            .skip_while(|o| key_of(o) <= c.after)
            .collect(),
        None => items,
    };
    let Some(limit) = limit.filter(|l| *l > 0 && *l < items.len()) else {
        return Chunk {
            items,
            rv,
            next: None,
        };
    };
    let remaining = items.len() - limit;
    items.truncate(limit);
    let after = items.last().map(key_of).unwrap_or_default();
    let token = Continue { rv, after }.token();
    Chunk {
        items,
        rv,
        next: Some((token, remaining)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(ns: &str, name: &str) -> Value {
        json!({"metadata": {"namespace": ns, "name": name}})
    }

    fn names(items: &[Value]) -> Vec<String> {
        items
            .iter()
            .map(key_of)
            .map(|(ns, name)| format!("{ns}/{name}"))
            .collect()
    }

    #[test]
    fn chunks_cover_the_list_once_in_order() {
        let all: Vec<Value> = (0..7).map(|i| obj("a", &format!("o{i}"))).collect();
        let first = chunk(all.clone(), 40, Some(3), None);
        assert_eq!(names(&first.items), ["a/o0", "a/o1", "a/o2"]);
        let (token, remaining) = first.next.expect("more");
        assert_eq!(remaining, 4);
        let from = Continue::parse(&token).expect("token");
        assert_eq!(
            from,
            Continue {
                rv: 40,
                after: ("a".into(), "o2".into())
            }
        );

        // Later chunks report the first chunk's resourceVersion.
        let second = chunk(all.clone(), 45, Some(3), Some(&from));
        assert_eq!(second.rv, 40);
        assert_eq!(names(&second.items), ["a/o3", "a/o4", "a/o5"]);
        let from = Continue::parse(&second.next.expect("more").0).expect("token");
        let last = chunk(all, 46, Some(3), Some(&from));
        assert_eq!(names(&last.items), ["a/o6"]);
        assert!(last.next.is_none());
    }

    #[test]
    fn chunks_follow_the_store_order_of_namespace_then_name() {
        // "a-b/x" sorts before "a/z" as text, after it as (namespace, name).
        let all = vec![obj("a", "z"), obj("a-b", "x")];
        let first = chunk(all.clone(), 9, Some(1), None);
        let from = Continue::parse(&first.next.expect("more").0).expect("token");
        assert_eq!(names(&chunk(all, 9, Some(1), Some(&from)).items), ["a-b/x"]);
    }

    #[test]
    fn no_limit_or_a_large_one_gives_everything() {
        let all: Vec<Value> = (0..3).map(|i| obj("a", &format!("o{i}"))).collect();
        assert_eq!(chunk(all.clone(), 5, None, None).items.len(), 3);
        assert!(chunk(all.clone(), 5, Some(3), None).next.is_none());
        assert!(chunk(all, 5, Some(0), None).next.is_none());
    }

    #[test]
    fn tokens_are_unpadded_url_safe_base64() {
        for text in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"\xfb\xff\xbf",
        ] {
            assert_eq!(decode(&encode(text)).as_deref(), Some(text));
        }
        // Go's RawURLEncoding of the same bytes.
        assert_eq!(encode(b"foob"), "Zm9vYg");
        assert_eq!(encode(b"\xfb\xff\xbf"), "-_-_");
        assert_eq!(decode("Z"), None);
    }

    #[test]
    fn a_malformed_token_is_a_bad_request() {
        for bad in [
            "",
            "!!!",
            "Zm9v=",
            &encode(b"{}"),
            &encode(b"not json"),
            &encode(br#"{"v":"meta.k8s.io/v1","rv":3,"start":"\u0000"}"#),
        ] {
            let e = Continue::parse(bad).expect_err(bad);
            assert_eq!(e.code, 400, "{bad}");
            assert!(
                e.message.starts_with("continue key is not valid"),
                "{}",
                e.message
            );
        }
    }
}
