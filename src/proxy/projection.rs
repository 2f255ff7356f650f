//! Builds a partner's answer from the granted fields only. Nothing of the upstream record is
//! copied wholesale: each value is picked by its field's JSON pointer, so a field the insurer
//! adds upstream can never leak.

use crate::domain::{Field, Resource};
use serde_json::{Map, Value};

/// One record reduced to its id and the granted fields that it has.
#[derive(Debug, Clone, PartialEq)]
pub struct Projected {
    pub id: String,
    pub body: Map<String, Value>,
    /// The scopes whose values are in `body`, in catalog order.
    pub disclosed: Vec<String>,
}

/// The record's id as text: ids are strings or integers, nothing else.
pub fn record_id(resource: &Resource, record: &Value) -> Option<String> {
    match record.pointer(&resource.id_pointer)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// True only when the owner pointer holds exactly this customer id (as a string).
pub fn is_owned_by(resource: &Resource, record: &Value, customer: &str) -> bool {
    matches!(record.pointer(&resource.owner_pointer), Some(Value::String(owner)) if owner == customer)
}

/// `None` when the record has no usable id: such a record cannot be named in the log.
pub fn project(resource: &Resource, fields: &[&Field], record: &Value) -> Option<Projected> {
    let id = record_id(resource, record)?;
    let mut body = Map::with_capacity(fields.len() + 1);
    body.insert("id".to_owned(), Value::String(id.clone()));
    let mut disclosed = Vec::with_capacity(fields.len());
    for field in fields {
        // Only scalars are disclosed: if the insurer ever nests data under a granted pointer,
        // the nested structure must not ride along. Absent, null and structured values are
        // neither returned nor logged as disclosed.
        if let Some(value @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) =
            record.pointer(&field.pointer)
        {
            body.insert(field.scope.field().to_owned(), value.clone());
            disclosed.push(field.scope.to_string());
        }
    }
    Some(Projected {
        id,
        body,
        disclosed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Catalog;
    use crate::domain::catalog::default_resources;
    use proptest::prelude::*;
    use serde_json::json;

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

    #[test]
    fn only_the_granted_fields_and_the_id_come_out() {
        let resource = claims();
        let fields = vec![&resource.fields["status"], &resource.fields["device_model"]];
        let p = project(&resource, &fields, &sample()).unwrap();
        assert_eq!(
            Value::Object(p.body),
            json!({"id": "C-1001", "status": "in_repair", "device_model": "iPhone 14 Pro"})
        );
        assert_eq!(p.disclosed, vec!["claims:status", "claims:device_model"]);
    }

    #[test]
    fn missing_values_are_neither_returned_nor_logged() {
        let resource = claims();
        let fields = vec![&resource.fields["repair_stage"]];
        let p = project(&resource, &fields, &sample()).unwrap();
        assert_eq!(Value::Object(p.body), json!({"id": "C-1001"}));
        assert!(p.disclosed.is_empty());
    }

    #[test]
    fn ownership_is_exact() {
        let resource = claims();
        assert!(is_owned_by(&resource, &sample(), "CU-1001"));
        assert!(!is_owned_by(&resource, &sample(), "CU-100"));
        assert!(!is_owned_by(
            &resource,
            &json!({"customer_id": ["CU-1001"]}),
            "CU-1001"
        ));
        assert!(!is_owned_by(&resource, &json!({}), "CU-1001"));
    }

    #[test]
    fn records_without_a_usable_id_are_refused() {
        let resource = claims();
        assert!(project(&resource, &[], &json!({"status": "x"})).is_none());
        assert!(project(&resource, &[], &json!({"id": {"nested": 1}})).is_none());
        assert_eq!(project(&resource, &[], &json!({"id": 7})).unwrap().id, "7");
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z0-9 ]{0,12}".prop_map(Value::String),
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
        /// names, and each value is exactly what the field's pointer selects.
        #[test]
        fn nothing_but_granted_fields_ever_leaves(mut record in arb_json(), id in "[A-Z]-[0-9]{1,4}") {
            if let Value::Object(map) = &mut record {
                map.insert("id".into(), Value::String(id));
            } else {
                record = json!({"id": id, "x": record});
            }
            let resource = claims();
            let fields = vec![&resource.fields["status"], &resource.fields["device_model"]];
            let p = project(&resource, &fields, &record).unwrap();
            for (key, value) in &p.body {
                prop_assert!(!value.is_object() && !value.is_array(), "structured value under {}", key);
                match key.as_str() {
                    "id" => {}
                    "status" => prop_assert_eq!(Some(value), record.pointer("/status")),
                    "device_model" => prop_assert_eq!(Some(value), record.pointer("/device/model")),
                    other => prop_assert!(false, "leaked key {}", other),
                }
            }
            prop_assert_eq!(p.body.len(), p.disclosed.len() + 1);
        }
    }
}
