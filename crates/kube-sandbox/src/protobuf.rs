//! Decoding Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) into
//! the JSON the rest of the sandbox works with.
//!
//! client-go 1.32's generated typed clients send built-in objects as protobuf, so
//! `kubectl create deployment|namespace|configmap|secret|service ...` POST protobuf (they
//! accept JSON back). Responses are always JSON. The envelope is `k8s\0` + `runtime.Unknown`
//! {typeMeta{apiVersion, kind}, raw}; `raw` is the object, decoded with the field-number table in
//! `protobuf_schema.rs` (from k8s.io/api's generated.proto) for the kinds and nested types
//! those commands write. Go's proto2 marshalling always emits non-pointer fields, so zero scalars
//! are dropped (as JSON's omitempty would) except for fields marked [`C::Ptr`] (Go
//! pointers, where presence matters: `replicas: 0`). Fields not in the table are skipped.
//! An unknown kind is answered 415, so a client can retry with JSON.

use serde_json::{Map, Value, json};

use super::protobuf_schema::{C, Fields, SCHEMA, T};
use C::*;
use T::*;

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.i).ok_or("truncated varint")?;
            self.i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = usize::try_from(self.varint()?).map_err(|_| "length overflow")?;
        let end = self
            .i
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or("truncated field")?;
        let s = &self.b[self.i..end];
        self.i = end;
        Ok(s)
    }

    fn skip(&mut self, wire: u64) -> Result<(), String> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.advance(8),
            2 => self.bytes().map(|_| ()),
            5 => self.advance(4),
            w => Err(format!("unsupported wire type {w}")),
        }
    }

    fn advance(&mut self, n: usize) -> Result<(), String> {
        if self.i + n > self.b.len() {
            return Err("truncated field".into());
        }
        self.i += n;
        Ok(())
    }

    /// Next (field number, wire type), or None at the end.
    fn tag(&mut self) -> Result<Option<(u32, u64)>, String> {
        if self.i >= self.b.len() {
            return Ok(None);
        }
        let t = self.varint()?;
        Ok(Some(((t >> 3) as u32, t & 7)))
    }
}

fn fields_of(msg: &str) -> Result<Fields, String> {
    SCHEMA
        .iter()
        .find(|(n, _)| *n == msg)
        .map(|(_, f)| *f)
        .ok_or_else(|| format!("no protobuf schema for {msg}"))
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8 in string field".to_string())
}

/// key=1, value=2 entries of a map field.
fn map_entry(b: &[u8]) -> Result<(String, Vec<u8>), String> {
    let mut r = Reader { b, i: 0 };
    let (mut k, mut v) = (String::new(), Vec::new());
    while let Some((f, w)) = r.tag()? {
        match (f, w) {
            (1, 2) => k = utf8(r.bytes()?)?,
            (2, 2) => v = r.bytes()?.to_vec(),
            _ => r.skip(w)?,
        }
    }
    Ok((k, v))
}

fn special(ty: T, b: &[u8]) -> Result<Value, String> {
    let mut r = Reader { b, i: 0 };
    let mut vals: [u64; 3] = [0; 3];
    let mut s = String::new();
    while let Some((f, w)) = r.tag()? {
        match (ty, f, w) {
            (Time, 1 | 2, 0) | (IntOrStr, 1 | 2, 0) => vals[f as usize] = r.varint()?,
            (IntOrStr, 3, 2) | (Qty, 1, 2) => s = utf8(r.bytes()?)?,
            _ => r.skip(w)?,
        }
    }
    Ok(match ty {
        Time if vals[1] == 0 => Value::Null,
        Time => {
            let ts = jiff::Timestamp::from_second(vals[1] as i64).map_err(|e| e.to_string())?;
            json!(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        }
        IntOrStr if vals[1] == 1 => json!(s),
        IntOrStr => json!(vals[2] as i32),
        _ => json!(s),
    })
}

fn zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::Array(a) => a.is_empty(),
        Value::Object(_) => false,
    }
}

fn message(msg: &str, b: &[u8]) -> Result<Map<String, Value>, String> {
    let fields = fields_of(msg)?;
    let mut out = Map::new();
    let mut r = Reader { b, i: 0 };
    let mut present: Vec<&str> = Vec::new();
    while let Some((num, wire)) = r.tag()? {
        let Some(&(_, name, ty, card)) = fields.iter().find(|f| f.0 == num) else {
            r.skip(wire)?;
            continue;
        };
        let v = match (ty, wire) {
            (Int, 0) => json!(r.varint()? as i64),
            (Bool, 0) => json!(r.varint()? != 0),
            (Str, 2) => json!(utf8(r.bytes()?)?),
            (Msg(m), 2) => Value::Object(message(m, r.bytes()?)?),
            (Inline(m), 2) => {
                out.extend(message(m, r.bytes()?)?);
                continue;
            }
            (MapStr | MapQty | MapBytes, 2) => {
                let (k, raw) = map_entry(r.bytes()?)?;
                let v = match ty {
                    MapStr => json!(utf8(&raw)?),
                    MapQty => special(Qty, &raw)?,
                    _ => json!(super::tls::base64(&raw)),
                };
                if let Some(m) = out.entry(name).or_insert_with(|| json!({})).as_object_mut() {
                    m.insert(k, v);
                }
                continue;
            }
            (Time | IntOrStr | Qty, 2) => special(ty, r.bytes()?)?,
            (_, w) => return Err(format!("{msg}.{name}: unexpected wire type {w}")),
        };
        if card == Rep {
            if let Some(a) = out.entry(name).or_insert_with(|| json!([])).as_array_mut() {
                a.push(v);
            }
        } else {
            present.push(name);
            out.insert(name.to_string(), v);
        }
    }
    // omitempty for non-pointer fields.
    for &(_, name, _, card) in fields {
        if card == One && out.get(name).is_some_and(zero) {
            out.remove(name);
        }
    }
    Ok(out)
}

/// Decode a `k8s\0`-prefixed protobuf body into a JSON object with apiVersion and kind.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(b"k8s\0")
        .ok_or("not a Kubernetes protobuf body")?;
    let mut r = Reader { b: rest, i: 0 };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    while let Some((f, w)) = r.tag()? {
        match (f, w) {
            (1, 2) => {
                let mut tm = Reader {
                    b: r.bytes()?,
                    i: 0,
                };
                while let Some((f, w)) = tm.tag()? {
                    match (f, w) {
                        (1, 2) => api_version = utf8(tm.bytes()?)?,
                        (2, 2) => kind = utf8(tm.bytes()?)?,
                        _ => tm.skip(w)?,
                    }
                }
            }
            (2, 2) => raw = r.bytes()?,
            _ => r.skip(w)?,
        }
    }
    let mut obj = message(&kind, raw)?;
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![((num << 3) | 2) as u8, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_a_namespace_envelope() {
        let meta = field(1, b"team-a");
        let ns = field(1, &meta);
        let tm = [field(1, b"v1"), field(2, b"Namespace")].concat();
        let body = [b"k8s\0".to_vec(), field(1, &tm), field(2, &ns)].concat();
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
        );
    }
}
