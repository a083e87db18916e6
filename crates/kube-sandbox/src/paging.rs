//! Lists in chunks: `limit` and `continue`, as kube-apiserver serves a list from etcd.
//!
//! A list with `limit=N` answers at most N items, sorted by namespace and name, and when more
//! remain, `metadata.continue` (a token to send back) and, for a list without selectors,
//! `metadata.remainingItemCount`. Every chunk reports the resourceVersion of the first, so that
//! a client watches from there, as from an unchunked list. The token has upstream's shape:
//! unpadded URL-safe base64 (`RawURLEncoding`) of
//! `{"v":"meta.k8s.io/v1","rv":N,"start":"KEY\u0000"}`, KEY being the last item's
//! `namespace/name`. A chunk reads the store from where the last one ended and clones only
//! what it returns ([`Store::list_chunk`]).
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

use crate::resources::ResourceDef;
use crate::status::ApiError;
use crate::store::Store;

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

/// The chunk of the objects of `def` in `ns` that `filter` keeps which `limit` and `from`
/// ask for. Without `count_rest` (a list with selectors, whose remaining count is not
/// reported), the count in [`Chunk::next`] is only 1: the chunk stops at the first object
/// left, so that it does not read the rest of the list again.
pub fn chunk(
    store: &Store,
    def: &ResourceDef,
    ns: Option<&str>,
    limit: Option<usize>,
    from: Option<&Continue>,
    count_rest: bool,
    filter: impl Fn(&Value) -> bool,
) -> Chunk {
    let limit = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
    let after = from.map(|c| &c.after);
    let (items, now, remaining) = store.list_chunk(def, ns, after, limit, count_rest, filter);
    let rv = from.map_or(now, |c| c.rv);
    let next = (remaining > 0).then(|| {
        let after = items.last().map(key_of).unwrap_or_default();
        (Continue { rv, after }.token(), remaining)
    });
    Chunk { items, rv, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::resources::Registry;

    /// A store with ConfigMaps `ns/name` for each of `objects` (namespaces created).
    fn store_with(objects: &[(&str, &str)]) -> (Store, ResourceDef) {
        let store = Store::open(Registry::new(false), 100, None, None);
        let nsdef = store.registry.find("", "v1", "namespaces").unwrap().clone();
        let cm = store.registry.find("", "v1", "configmaps").unwrap().clone();
        for (ns, name) in objects {
            let _ = store.create(&nsdef, None, json!({"metadata": {"name": ns}}), false);
            store
                .create(&cm, Some(ns), json!({"metadata": {"name": name}}), false)
                .expect("created");
        }
        (store, cm)
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
        let all: Vec<(&str, String)> = (0..7).map(|i| ("a", format!("o{i}"))).collect();
        let all: Vec<(&str, &str)> = all.iter().map(|(n, o)| (*n, o.as_str())).collect();
        let (store, cm) = store_with(&all);
        let rv = store.current_rv();
        let first = chunk(&store, &cm, Some("a"), Some(3), None, true, |_| true);
        assert_eq!(names(&first.items), ["a/o0", "a/o1", "a/o2"]);
        assert_eq!(first.rv, rv);
        let (token, remaining) = first.next.expect("more");
        assert_eq!(remaining, 4);
        let from = Continue::parse(&token).expect("token");
        assert_eq!(
            from,
            Continue {
                rv,
                after: ("a".into(), "o2".into())
            }
        );

        // Later chunks report the first chunk's resourceVersion.
        let second = chunk(&store, &cm, Some("a"), Some(3), Some(&from), true, |_| true);
        assert_eq!(second.rv, rv);
        assert_eq!(names(&second.items), ["a/o3", "a/o4", "a/o5"]);
        let from = Continue::parse(&second.next.expect("more").0).expect("token");
        let last = chunk(&store, &cm, Some("a"), Some(3), Some(&from), true, |_| true);
        assert_eq!(names(&last.items), ["a/o6"]);
        assert!(last.next.is_none());
    }

    #[test]
    fn chunks_follow_the_store_order_of_namespace_then_name() {
        // "a-b/x" sorts before "a/z" as text, after it as (namespace, name).
        let (store, cm) = store_with(&[("a", "z"), ("a-b", "x"), ("b", "y")]);
        let first = chunk(&store, &cm, None, Some(1), None, true, |_| true);
        assert_eq!(names(&first.items), ["a/z"]);
        let from = Continue::parse(&first.next.expect("more").0).expect("token");
        let second = chunk(&store, &cm, None, Some(1), Some(&from), true, |_| true);
        assert_eq!(names(&second.items), ["a-b/x"]);
        // One namespace: the chunk stops at its end.
        let only_a = chunk(&store, &cm, Some("a"), Some(5), None, true, |_| true);
        assert_eq!(names(&only_a.items), ["a/z"]);
        assert!(only_a.next.is_none());
    }

    #[test]
    fn no_limit_or_a_large_one_gives_everything() {
        let (store, cm) = store_with(&[("a", "o0"), ("a", "o1"), ("a", "o2")]);
        for limit in [None, Some(0), Some(3), Some(9)] {
            let c = chunk(&store, &cm, Some("a"), limit, None, true, |_| true);
            assert_eq!(c.items.len(), 3, "{limit:?}");
            assert!(c.next.is_none(), "{limit:?}");
        }
    }

    #[test]
    fn the_remaining_count_counts_only_what_the_filter_keeps() {
        let (store, cm) = store_with(&[("a", "o0"), ("a", "o1"), ("a", "p2"), ("a", "o3")]);
        let o = |v: &Value| key_of(v).1.starts_with('o');
        let c = chunk(&store, &cm, Some("a"), Some(1), None, true, o);
        assert_eq!(names(&c.items), ["a/o0"]);
        assert_eq!(c.next.expect("more").1, 2);
        // Not counted: only whether any is left.
        let c = chunk(&store, &cm, Some("a"), Some(1), None, false, o);
        assert_eq!(c.next.expect("more").1, 1);
        let c = chunk(&store, &cm, Some("a"), Some(2), None, false, o);
        assert_eq!(c.next.expect("more").1, 1);
        let c = chunk(&store, &cm, Some("a"), Some(3), None, false, o);
        assert!(c.next.is_none());
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
