//! Pairwise pseudonymous subjects: each partner sees the same customer under a different `sub`.

use super::{ClientId, CustomerId};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// `sub` for `customer` as seen by `client`.
///
/// The customer account id is a random UUID that is never disclosed, so the hash cannot be
/// reversed or correlated across partners; it also reveals nothing of the upstream customer
/// number or any personal data.
pub fn pairwise_subject(client: &ClientId, customer: &CustomerId) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"keyhole-pairwise-sub-v1\0");
    hasher.update(client.as_str().as_bytes());
    hasher.update(b"\0");
    hasher.update(customer.to_string().as_bytes());
    URL_SAFE_NO_PAD.encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_customer_looks_different_to_each_partner() {
        let customer = CustomerId::random();
        let a = pairwise_subject(&ClientId::parse("fone-shop").unwrap(), &customer);
        let b = pairwise_subject(&ClientId::parse("fixpoint").unwrap(), &customer);
        assert_ne!(a, b);
    }

    #[test]
    fn the_subject_is_stable_and_discloses_no_id() {
        let customer = CustomerId::random();
        let client = ClientId::parse("fone-shop").unwrap();
        let sub = pairwise_subject(&client, &customer);
        assert_eq!(sub, pairwise_subject(&client, &customer));
        assert!(!sub.contains(&customer.to_string()));
        assert_ne!(sub, pairwise_subject(&client, &CustomerId::random()));
    }
}
