//! Builds a partner's answer from the granted fields only. Nothing of the upstream record is
//! copied wholesale: each value is picked by its field's JSON pointer, so a field the insurer
//! adds upstream can never leak.
//!
//! The record is not built into a `serde_json::Value` tree: the body is parsed once into a
//! borrowed [`RawValue`] (which validates it), then only the objects on the way to a granted
//! pointer are scanned — one pass over the top level for every pointer at once, the rest
//! skipped without allocating. Semantics are `Value::pointer`'s: the last of duplicate keys
//! wins, escaped keys match their unescaped text, array steps take canonical indices. Values
//! come out re-serialised exactly as a `Value` would write them, so answers (and ETags) are
//! byte-for-byte what a full parse gave.

use crate::domain::{Field, Resource};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// Parses an upstream body just enough to know it is JSON; nothing is copied.
pub fn parse(body: &[u8]) -> Option<&RawValue> {
    let text = std::str::from_utf8(body).ok()?;
    serde_json::from_str(text).ok()
}

/// Whether a parsed value is a JSON object.
pub fn is_object(value: &RawValue) -> bool {
    value.get().starts_with('{')
}

/// The elements of a JSON array, borrowed; `None` when it is not an array.
pub fn elements(value: &RawValue) -> Option<Vec<&RawValue>> {
    serde_json::from_str(value.get()).ok()
}

/// Marks which wanted keys an object key equals, without copying the key (serde hands an
/// escaped key over unescaped in a scratch buffer; a plain one is borrowed).
struct KeyMatch<'t> {
    wanted: &'t [Cow<'t, str>],
}

impl<'de> DeserializeSeed<'de> for KeyMatch<'_> {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyMatch<'_> {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<u64, E> {
        Ok(self
            .wanted
            .iter()
            .enumerate()
            .filter(|(_, w)| w.as_ref() == key)
            .fold(0, |mask, (i, _)| mask | 1 << i))
    }
}

/// One pass over an object: for each wanted key (at most 64), the last value under it.
struct Pick<'t, 'a> {
    wanted: &'t [Cow<'t, str>],
    found: &'t mut [Option<&'a RawValue>],
}

impl<'de: 'a, 'a> Visitor<'de> for Pick<'_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        while let Some(mask) = map.next_key_seed(KeyMatch {
            wanted: self.wanted,
        })? {
            if mask == 0 {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let value: &'de RawValue = map.next_value()?;
            for (i, slot) in self.found.iter_mut().enumerate() {
                if mask & (1 << i) != 0 {
                    *slot = Some(value);
                }
            }
        }
        Ok(())
    }
}

/// The element at `index` of an array.
struct Nth(usize);

impl<'de> Visitor<'de> for Nth {
    type Value = Option<&'de RawValue>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        for _ in 0..self.0 {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(None);
            }
        }
        let found = seq.next_element::<&RawValue>()?;
        // serde_json insists the rest of the array be read.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(found)
    }
}

/// A pointer token, unescaped as RFC 6901 says (`~1` is `/`, `~0` is `~`).
fn unescape(token: &str) -> Cow<'_, str> {
    if token.contains('~') {
        Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(token)
    }
}

/// An array index as `Value::pointer` accepts it: no sign, no leading zero.
fn index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

/// Finds several keys of one object in one pass; `None` when `value` is not an object.
fn pick_keys<'a>(
    value: &'a RawValue,
    wanted: &[Cow<'_, str>],
    found: &mut [Option<&'a RawValue>],
) -> Option<()> {
    if !is_object(value) {
        return None;
    }
    for (wanted, found) in wanted.chunks(64).zip(found.chunks_mut(64)) {
        let mut de = serde_json::Deserializer::from_str(value.get());
        (&mut de).deserialize_map(Pick { wanted, found }).ok()?;
    }
    Some(())
}

/// One step of a pointer below the top level.
fn step<'a>(value: &'a RawValue, token: &str) -> Option<&'a RawValue> {
    match value.get().as_bytes().first()? {
        b'{' => {
            let mut found = [None];
            pick_keys(value, &[unescape(token)], &mut found)?;
            found[0]
        }
        b'[' => {
            let mut de = serde_json::Deserializer::from_str(value.get());
            (&mut de).deserialize_seq(Nth(index(token)?)).ok()?
        }
        _ => None,
    }
}

/// `Value::pointer` for several pointers of one record: the top level is scanned once.
fn resolve<'a>(record: &'a RawValue, pointers: &[&str]) -> Option<Vec<Option<&'a RawValue>>> {
    let mut firsts = Vec::with_capacity(pointers.len());
    for pointer in pointers {
        // Catalog pointers start with `/` (checked when the catalog is built).
        let first = pointer
            .strip_prefix('/')?
            .split('/')
            .next()
            .unwrap_or_default();
        firsts.push(unescape(first));
    }
    let mut found = vec![None; pointers.len()];
    pick_keys(record, &firsts, &mut found)?;
    for (pointer, slot) in pointers.iter().zip(found.iter_mut()) {
        let rest = pointer
            .strip_prefix('/')
            .unwrap_or_default()
            .split('/')
            .skip(1);
        for token in rest {
            *slot = slot.and_then(|value| step(value, token));
        }
    }
    Some(found)
}

/// A scalar as a `Value` would hold it; structured values and `null` are none.
enum Scalar<'a> {
    String(Cow<'a, str>),
    Number(serde_json::Number),
    Bool(bool),
}

fn scalar(value: &RawValue) -> Option<Scalar<'_>> {
    let text = value.get();
    match text.as_bytes().first()? {
        b'"' => match serde_json::from_str::<&str>(text) {
            Ok(s) => Some(Scalar::String(Cow::Borrowed(s))),
            // Escapes in the value: it has to be unescaped into a copy.
            Err(_) => serde_json::from_str::<String>(text)
                .ok()
                .map(|s| Scalar::String(Cow::Owned(s))),
        },
        b't' | b'f' => serde_json::from_str(text).ok().map(Scalar::Bool),
        b'-' | b'0'..=b'9' => serde_json::from_str(text).ok().map(Scalar::Number),
        _ => None,
    }
}

impl Scalar<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail, and these are plain scalars.
        let _ = match self {
            Scalar::String(s) => serde_json::to_writer(&mut *out, s.as_ref()),
            Scalar::Number(n) => serde_json::to_writer(&mut *out, n),
            Scalar::Bool(b) => serde_json::to_writer(&mut *out, b),
        };
    }
}

/// The record's id as text: ids are strings or integers, nothing else.
fn id_of(value: Option<&RawValue>) -> Option<String> {
    match scalar(value?)? {
        Scalar::String(s) if !s.is_empty() => Some(s.into_owned()),
        Scalar::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

fn owned_by(value: Option<&RawValue>, customer: &str) -> bool {
    value
        .and_then(scalar)
        .is_some_and(|s| matches!(s, Scalar::String(owner) if owner == customer))
}

/// The record's id as text, or `None` when it has no usable one.
pub fn record_id(resource: &Resource, record: &RawValue) -> Option<String> {
    id_of(resolve(record, &[&resource.id_pointer])?.pop().flatten())
}

/// True only when the owner pointer holds exactly this customer id (as a string).
pub fn is_owned_by(resource: &Resource, record: &RawValue, customer: &str) -> bool {
    resolve(record, &[&resource.owner_pointer])
        .and_then(|mut found| found.pop().flatten())
        .is_some_and(|owner| owned_by(Some(owner), customer))
}

/// Why a record gave no projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unprojected {
    /// Not an object, or without a usable id: a broken upstream.
    Broken,
    /// Another customer's record.
    NotOwned,
}

/// Checks the owner and writes the record, reduced to its id and the granted fields that it
/// has, as a JSON object onto `out` (keys in sorted order, as a `Value` map writes them).
/// Returns the id; sets `disclosed[i]` for each `fields[i]` whose value went out. Only
/// scalars are disclosed: if the insurer ever nests data under a granted pointer, the nested
/// structure must not ride along; absent, null and structured values are neither returned
/// nor logged as disclosed.
pub fn project(
    resource: &Resource,
    fields: &[&Field],
    record: &RawValue,
    customer: &str,
    disclosed: &mut [bool],
    out: &mut Vec<u8>,
) -> Result<String, Unprojected> {
    let mut pointers = Vec::with_capacity(fields.len() + 2);
    pointers.push(resource.owner_pointer.as_str());
    pointers.push(resource.id_pointer.as_str());
    pointers.extend(fields.iter().map(|f| f.pointer.as_str()));
    let found = resolve(record, &pointers).ok_or(Unprojected::Broken)?;
    if !owned_by(found[0], customer) {
        return Err(Unprojected::NotOwned);
    }
    let id = id_of(found[1]).ok_or(Unprojected::Broken)?;
    let mut entries: Vec<(&str, Option<usize>, Scalar<'_>)> = Vec::with_capacity(fields.len() + 1);
    entries.push(("id", None, Scalar::String(Cow::Borrowed(id.as_str()))));
    for (i, (field, value)) in fields.iter().zip(&found[2..]).enumerate() {
        if let Some(value) = value.and_then(scalar) {
            entries.push((field.scope.field(), Some(i), value));
        }
    }
    // A map keeps one value per key, the last inserted, and writes keys in order.
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            std::mem::swap(later, earlier);
            true
        } else {
            false
        }
    });
    out.push(b'{');
    for (n, (key, field, value)) in entries.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, key);
        out.push(b':');
        value.write(out);
        if let Some(slot) = field.and_then(|i| disclosed.get_mut(i)) {
            *slot = true;
        }
    }
    out.push(b'}');
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Catalog;
    use crate::domain::catalog::default_resources;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn claims() -> Resource {
        Catalog::build(&default_resources())
            .unwrap()
            .resource("claims")
            .unwrap()
            .clone()
    }

    fn sample() -> Value {
        json!({
            "id": "C-1001", "customer_id": "CU-1001", "status": "in_repair",
            "status_updated_at": "2024-11-18T14:32:05Z", "claim_number": "HRM-1",
            "device": {"make": "Apple", "model": "iPhone 14 Pro", "imei": "356938035643809"},
            "settlement": {"amount": 289.0, "iban": "GB82WEST12345698765432"},
            "date_of_birth": "1980-02-03"
        })
    }

    fn raw(value: &Value) -> Box<RawValue> {
        RawValue::from_string(value.to_string()).unwrap()
    }

    /// Projects `record` for its own owner; the body as a `Value`, and the disclosed scopes.
    fn projected(
        resource: &Resource,
        fields: &[&Field],
        record: &Value,
    ) -> Result<(String, Value, Vec<String>), Unprojected> {
        let owner = record
            .pointer(&resource.owner_pointer)
            .and_then(Value::as_str)
            .unwrap_or("CU-1001")
            .to_owned();
        let record = raw(&record.clone());
        let mut disclosed = vec![false; fields.len()];
        let mut out = Vec::new();
        let id = project(resource, fields, &record, &owner, &mut disclosed, &mut out)?;
        let scopes = fields
            .iter()
            .zip(&disclosed)
            .filter(|(_, d)| **d)
            .map(|(f, _)| f.scope_name.clone())
            .collect();
        Ok((id, serde_json::from_slice(&out).unwrap(), scopes))
    }

    #[test]
    fn only_the_granted_fields_and_the_id_come_out() {
        let resource = claims();
        let fields = vec![&resource.fields["status"], &resource.fields["device_model"]];
        let (id, body, disclosed) = projected(&resource, &fields, &sample()).unwrap();
        assert_eq!(id, "C-1001");
        assert_eq!(
            body,
            json!({"id": "C-1001", "status": "in_repair", "device_model": "iPhone 14 Pro"})
        );
        assert_eq!(disclosed, vec!["claims:status", "claims:device_model"]);
    }

    #[test]
    fn the_answer_is_byte_for_byte_what_a_value_tree_wrote() {
        let resource = claims();
        let fields = vec![&resource.fields["status"], &resource.fields["device_model"]];
        // Escapes, odd number spellings, duplicate keys, non-ASCII: all as a `Value` has them.
        let text = r#"{"id":"C-1\u0030","customer_id":"CU-1001","st\u0061tus":"a\/b\u00e9",
            "status":"in \"repair\"","device":{"model":1.50E1,"model":"Ph\u00f6ne \ud83d\ude00"}}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        let mut map = serde_json::Map::new();
        map.insert("id".into(), json!("C-10"));
        for field in &fields {
            if let Some(v) = value.pointer(&field.pointer) {
                map.insert(field.scope.field().to_owned(), v.clone());
            }
        }
        let expected = serde_json::to_vec(&Value::Object(map)).unwrap();
        let record = RawValue::from_string(text.to_owned()).unwrap();
        let mut out = Vec::new();
        let mut disclosed = vec![false; 2];
        let id = project(
            &resource,
            &fields,
            &record,
            "CU-1001",
            &mut disclosed,
            &mut out,
        )
        .unwrap();
        assert_eq!(id, "C-10");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8(expected).unwrap()
        );
    }

    #[test]
    fn missing_values_are_neither_returned_nor_logged() {
        let resource = claims();
        let fields = vec![&resource.fields["repair_stage"]];
        let (_, body, disclosed) = projected(&resource, &fields, &sample()).unwrap();
        assert_eq!(body, json!({"id": "C-1001"}));
        assert!(disclosed.is_empty());
    }

    #[test]
    fn ownership_is_exact() {
        let resource = claims();
        assert!(is_owned_by(&resource, &raw(&sample()), "CU-1001"));
        assert!(!is_owned_by(&resource, &raw(&sample()), "CU-100"));
        assert!(!is_owned_by(
            &resource,
            &raw(&json!({"customer_id": ["CU-1001"]})),
            "CU-1001"
        ));
        assert!(!is_owned_by(&resource, &raw(&json!({})), "CU-1001"));
        assert!(!is_owned_by(&resource, &raw(&json!([1])), "CU-1001"));
        let mut out = Vec::new();
        assert_eq!(
            project(&resource, &[], &raw(&sample()), "CU-100", &mut [], &mut out),
            Err(Unprojected::NotOwned)
        );
    }

    #[test]
    fn records_without_a_usable_id_are_refused() {
        let resource = claims();
        let owned = |mut v: Value| {
            v["customer_id"] = json!("CU-1001");
            v
        };
        assert_eq!(
            projected(&resource, &[], &owned(json!({"status": "x"}))),
            Err(Unprojected::Broken)
        );
        assert_eq!(
            projected(&resource, &[], &owned(json!({"id": {"nested": 1}}))),
            Err(Unprojected::Broken)
        );
        assert_eq!(
            projected(&resource, &[], &owned(json!({"id": 7})))
                .unwrap()
                .0,
            "7"
        );
        assert_eq!(
            record_id(&resource, &raw(&json!({"id": 7}))).as_deref(),
            Some("7")
        );
        assert_eq!(record_id(&resource, &raw(&json!({"id": 7.5}))), None);
    }

    #[test]
    fn pointers_walk_arrays_as_value_pointer_does() {
        let record = raw(&json!({"a": [{"b": 1}, {"b": "two"}], "c~d/e": true}));
        let found = resolve(
            &record,
            &["/a/1/b", "/a/01/b", "/a/9/b", "/c~0d~1e", "/a/x"],
        )
        .unwrap();
        let texts: Vec<Option<&str>> = found.iter().map(|v| v.map(RawValue::get)).collect();
        assert_eq!(texts, vec![Some("\"two\""), None, None, Some("true"), None]);
        assert!(parse(b"{\"a\":").is_none());
        assert!(parse(b"[1, 2]").is_some_and(|v| !is_object(v)));
        assert_eq!(
            elements(parse(b" [1, {}] ").unwrap()).map(|e| e.len()),
            Some(2)
        );
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z0-9 \"\\\\é]{0,12}".prop_map(Value::String),
            Just(json!("356938035643809")),
            Just(json!("GB82WEST12345698765432")),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![
                            Just("status".to_owned()),
                            Just("iban".to_owned()),
                            Just("imei".to_owned()),
                            Just("device".to_owned()),
                            Just("model".to_owned()),
                            "[a-z_]{1,8}",
                        ],
                        inner
                    ),
                    0..6
                )
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever shape the upstream sends, the answer holds only `id` and granted field
        /// names, each value is exactly what the field's pointer selects, and the bytes are
        /// what serialising a `Value` map gave before.
        #[test]
        fn nothing_but_granted_fields_ever_leaves(mut record in arb_json(), id in "[A-Z]-[0-9]{1,4}") {
            if let Value::Object(map) = &mut record {
                map.insert("id".into(), Value::String(id.clone()));
                map.insert("customer_id".into(), json!("CU-1001"));
            } else {
                record = json!({"id": id, "customer_id": "CU-1001", "x": record});
            }
            let resource = claims();
            let fields = vec![&resource.fields["status"], &resource.fields["device_model"]];
            let (got_id, body, disclosed) = projected(&resource, &fields, &record).unwrap();
            prop_assert_eq!(&got_id, &id);
            let body = body.as_object().unwrap().clone();
            let mut expected = serde_json::Map::new();
            expected.insert("id".into(), Value::String(id));
            for (key, value) in &body {
                prop_assert!(!value.is_object() && !value.is_array(), "structured value under {}", key);
                match key.as_str() {
                    "id" => {}
                    "status" => prop_assert_eq!(Some(value), record.pointer("/status")),
                    "device_model" => prop_assert_eq!(Some(value), record.pointer("/device/model")),
                    other => prop_assert!(false, "leaked key {}", other),
                }
                expected.insert(key.clone(), value.clone());
            }
            prop_assert_eq!(body.len(), disclosed.len() + 1);
            let mut out = Vec::new();
            let mut d = vec![false; 2];
            project(&resource, &fields, &raw(&record), "CU-1001", &mut d, &mut out).unwrap();
            prop_assert_eq!(out, serde_json::to_vec(&Value::Object(expected)).unwrap());
        }
    }
}
