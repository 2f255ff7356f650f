//! The resource catalog: which upstream records exist and which of their fields a partner may
//! ever see. It is configuration, not code, so a new resource needs no release.

use super::{FieldSet, Scope};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogError {
    #[error("resources.{0}: resource names are lowercase identifiers ([a-z][a-z0-9_]*)")]
    BadResourceName(String),
    #[error("resources.{0}.fields.{1}: field names are lowercase identifiers ([a-z][a-z0-9_]*)")]
    BadFieldName(String, String),
    #[error("resources.{0}.{1}: `{2}` is not a JSON pointer (it must start with `/`)")]
    BadPointer(String, String, String),
    #[error("resources.{0}.{1}: must contain `{2}` exactly once and start with `/`")]
    BadPath(String, &'static str, &'static str),
    #[error("resources.{0}: a resource needs at least one field")]
    NoFields(String),
    #[error("the catalog has no resources")]
    Empty,
    #[error("`{0}` is not a field of the catalog")]
    UnknownScope(Scope),
}

/// One resource as written in the config file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    pub item_path: String,
    pub list_path: String,
    pub owner_pointer: String,
    #[serde(default = "default_id_pointer")]
    pub id_pointer: String,
    pub fields: BTreeMap<String, FieldConfig>,
}

fn default_id_pointer() -> String {
    "/id".to_owned()
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FieldConfig {
    pub pointer: String,
    pub label: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// A field a partner may be granted, with the words the customer sees for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub scope: Scope,
    /// `scope` as text (`claims:status`), made once: every call names its disclosed fields
    /// by it, in the log and in metrics.
    pub scope_name: String,
    pub pointer: String,
    pub label: String,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub name: String,
    pub item_path: String,
    pub list_path: String,
    pub owner_pointer: String,
    pub id_pointer: String,
    pub fields: BTreeMap<String, Field>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    resources: BTreeMap<String, Resource>,
}

fn check_pointer(resource: &str, key: &str, pointer: &str) -> Result<(), CatalogError> {
    if pointer.starts_with('/') {
        Ok(())
    } else {
        Err(CatalogError::BadPointer(
            resource.to_owned(),
            key.to_owned(),
            pointer.to_owned(),
        ))
    }
}

fn check_path(
    resource: &str,
    key: &'static str,
    path: &str,
    placeholder: &'static str,
) -> Result<(), CatalogError> {
    if path.starts_with('/') && path.matches(placeholder).count() == 1 {
        Ok(())
    } else {
        Err(CatalogError::BadPath(resource.to_owned(), key, placeholder))
    }
}

impl Catalog {
    pub fn build(config: &BTreeMap<String, ResourceConfig>) -> Result<Self, CatalogError> {
        if config.is_empty() {
            return Err(CatalogError::Empty);
        }
        let mut resources = BTreeMap::new();
        for (name, rc) in config {
            check_path(name, "item_path", &rc.item_path, "{id}")?;
            check_path(name, "list_path", &rc.list_path, "{customer_id}")?;
            check_pointer(name, "owner_pointer", &rc.owner_pointer)?;
            check_pointer(name, "id_pointer", &rc.id_pointer)?;
            if rc.fields.is_empty() {
                return Err(CatalogError::NoFields(name.clone()));
            }
            let mut fields = BTreeMap::new();
            for (field_name, fc) in &rc.fields {
                let scope = Scope::new(name, field_name).map_err(|_| {
                    if Scope::new(name, "x").is_err() {
                        CatalogError::BadResourceName(name.clone())
                    } else {
                        CatalogError::BadFieldName(name.clone(), field_name.clone())
                    }
                })?;
                check_pointer(name, &format!("fields.{field_name}.pointer"), &fc.pointer)?;
                fields.insert(
                    field_name.clone(),
                    Field {
                        scope_name: scope.to_string(),
                        scope,
                        pointer: fc.pointer.clone(),
                        label: fc.label.clone(),
                        description: fc.description.clone(),
                    },
                );
            }
            resources.insert(
                name.clone(),
                Resource {
                    name: name.clone(),
                    item_path: rc.item_path.clone(),
                    list_path: rc.list_path.clone(),
                    owner_pointer: rc.owner_pointer.clone(),
                    id_pointer: rc.id_pointer.clone(),
                    fields,
                },
            );
        }
        Ok(Self { resources })
    }

    pub fn resource(&self, name: &str) -> Option<&Resource> {
        self.resources.get(name)
    }

    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.resources.values()
    }

    pub fn field(&self, scope: &Scope) -> Option<&Field> {
        self.resources
            .get(scope.resource())
            .and_then(|r| r.fields.get(scope.field()))
    }

    /// Fails on the first scope the catalog does not define.
    pub fn check(&self, set: &FieldSet) -> Result<(), CatalogError> {
        match set.iter().find(|scope| self.field(scope).is_none()) {
            Some(scope) => Err(CatalogError::UnknownScope(scope.clone())),
            None => Ok(()),
        }
    }

    /// Every scope the catalog defines, for the metadata's `scopes_supported`.
    pub fn all_scopes(&self) -> Vec<Scope> {
        self.resources
            .values()
            .flat_map(|r| r.fields.values().map(|f| f.scope.clone()))
            .collect()
    }
}

/// The catalog of Harmony's claims API, used when the config names no resources.
///
/// Only fields a partner may reasonably need are listed: the IMEI, the IBAN, payout details and
/// the customer's personal data are absent, so no consent can ever cover them.
pub fn default_resources() -> BTreeMap<String, ResourceConfig> {
    let field = |pointer: &str, label: &str, description: &str| FieldConfig {
        pointer: pointer.to_owned(),
        label: label.to_owned(),
        description: Some(description.to_owned()),
    };
    let fields = BTreeMap::from([
        (
            "status".to_owned(),
            field(
                "/status",
                "Claim status",
                "Where your claim stands: received, being assessed, approved, in repair, paid or rejected.",
            ),
        ),
        (
            "status_updated_at".to_owned(),
            field(
                "/status_updated_at",
                "When the status last changed",
                "The date and time your claim's status last changed.",
            ),
        ),
        (
            "claim_number".to_owned(),
            field(
                "/claim_number",
                "Claim number",
                "The reference number of your claim, so the partner can tell claims apart.",
            ),
        ),
        (
            "device_model".to_owned(),
            field(
                "/device/model",
                "Device model",
                "The make and model of the insured device (not its serial or IMEI number).",
            ),
        ),
        (
            "repair_stage".to_owned(),
            field(
                "/repair/stage",
                "Repair progress",
                "How far the repair has got, for example waiting for parts.",
            ),
        ),
    ]);
    BTreeMap::from([(
        "claims".to_owned(),
        ResourceConfig {
            item_path: "/claims/{id}".to_owned(),
            list_path: "/customers/{customer_id}/claims".to_owned(),
            owner_pointer: "/customer_id".to_owned(),
            id_pointer: "/id".to_owned(),
            fields,
        },
    )])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_catalog_is_valid_and_has_no_sensitive_fields() {
        let catalog = Catalog::build(&default_resources()).unwrap();
        let scopes: Vec<String> = catalog.all_scopes().iter().map(|s| s.to_string()).collect();
        assert!(scopes.contains(&"claims:status".to_owned()));
        for sensitive in ["iban", "imei", "date_of_birth", "amount"] {
            assert!(!scopes.iter().any(|s| s.contains(sensitive)), "{sensitive}");
        }
    }

    #[test]
    fn a_second_resource_needs_only_config() {
        let mut resources = default_resources();
        resources.insert(
            "vehicle_orders".to_owned(),
            ResourceConfig {
                item_path: "/orders/{id}".to_owned(),
                list_path: "/customers/{customer_id}/orders".to_owned(),
                owner_pointer: "/owner".to_owned(),
                id_pointer: "/id".to_owned(),
                fields: BTreeMap::from([(
                    "stage".to_owned(),
                    FieldConfig {
                        pointer: "/stage".to_owned(),
                        label: "Order stage".to_owned(),
                        description: None,
                    },
                )]),
            },
        );
        let catalog = Catalog::build(&resources).unwrap();
        let set = FieldSet::parse("vehicle_orders:stage claims:status").unwrap();
        assert_eq!(catalog.check(&set), Ok(()));
    }

    #[test]
    fn unknown_scopes_and_bad_definitions_are_named() {
        let catalog = Catalog::build(&default_resources()).unwrap();
        let set = FieldSet::parse("claims:iban").unwrap();
        assert!(matches!(
            catalog.check(&set),
            Err(CatalogError::UnknownScope(_))
        ));

        let mut bad = default_resources();
        if let Some(r) = bad.get_mut("claims") {
            r.item_path = "/claims".to_owned();
        }
        let err = Catalog::build(&bad).unwrap_err();
        assert!(
            err.to_string().contains("resources.claims.item_path"),
            "{err}"
        );
    }
}
