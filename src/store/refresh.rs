//! Refresh tokens: stored as hashes, rotated on every use, forming a chain per grant.

use super::{Store, StoreError};
use crate::domain::GrantId;
use chrono::{DateTime, Utc};
use entity::{grants, refresh_tokens};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    TransactionTrait,
};

#[derive(Debug, Clone)]
pub struct RefreshRecord {
    pub id: String,
    pub grant_id: GrantId,
    /// The token this one was rotated from; `None` for the one a code exchange issued.
    pub parent_id: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// DPoP: the thumbprint of the key a refresh must prove; `None` for an unbound token.
    pub jkt: Option<String>,
}

impl TryFrom<refresh_tokens::Model> for RefreshRecord {
    type Error = StoreError;

    fn try_from(m: refresh_tokens::Model) -> Result<Self, StoreError> {
        Ok(Self {
            grant_id: GrantId::parse(&m.grant_id).map_err(StoreError::corrupt)?,
            id: m.id,
            parent_id: m.parent_id,
            expires_at: m.expires_at,
            used_at: m.used_at,
            revoked_at: m.revoked_at,
            jkt: m.dpop_jkt,
        })
    }
}

/// The outcome of trying to spend a refresh token.
#[derive(Debug)]
pub enum RefreshOutcome {
    /// This call spent it; the caller issues the successor.
    Spent(RefreshRecord),
    /// It was spent or revoked before: a replay, or a retry inside the grace window.
    AlreadySpent(RefreshRecord),
    Unknown,
}

/// A refresh token to store, and what it was issued for.
#[derive(Debug)]
pub struct NewRefreshToken<'a> {
    pub grant_id: GrantId,
    pub token_hash: String,
    pub issued_for: IssuedFor<'a>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// DPoP: the key the token is bound to.
    pub jkt: Option<String>,
}

/// What a new refresh token was issued for.
#[derive(Debug, Clone, Copy)]
pub enum IssuedFor<'a> {
    /// The grant's authorization code: the first token of the chain.
    Code,
    /// The spent token it replaces.
    Refresh(&'a RefreshRecord),
}

/// An answer kept for a retry: sealed (the store cannot read it) and until when it may be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedAnswer {
    pub sealed: Vec<u8>,
    pub until: DateTime<Utc>,
}

/// The facts that tell a retry of a spent refresh token or code from a reuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// When it was spent; `None` when it was given back after a failed issue.
    pub spent_at: Option<DateTime<Utc>>,
    /// The token (or, for a code, the grant) was revoked.
    pub revoked: bool,
    pub successor: Successor,
    /// The first use's answer, while it is kept.
    pub answer: Option<SealedAnswer>,
}

/// The refresh token a spent token or code was exchanged for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Successor {
    /// None stored yet: the first use is still issuing (or failed).
    NotYet,
    /// Stored and not used: the spent one is the just-rotated token.
    Live,
    /// Used or revoked: the spent one is older than the just-rotated token.
    Spent,
}

impl Successor {
    fn of(token: Option<refresh_tokens::Model>) -> Self {
        match token {
            None => Self::NotYet,
            Some(t) if t.used_at.is_none() && t.revoked_at.is_none() => Self::Live,
            Some(_) => Self::Spent,
        }
    }
}

/// `reissue_sealed` and `reissue_until` (or the code's) set to nothing.
fn no_answer() -> Option<Vec<u8>> {
    None
}

impl Store {
    /// Stores a new refresh token and, in the same transaction, the answer it is part of
    /// (sealed, for a retry of the spent token or code inside the grace window) — so a
    /// successor is never visible without its answer. The answer kept for the use before is
    /// dropped: that token or code is no longer the just-rotated one.
    pub async fn insert_refresh_token(
        &self,
        new: NewRefreshToken<'_>,
        answer: Option<SealedAnswer>,
    ) -> Result<(), StoreError> {
        let parent_id = match new.issued_for {
            IssuedFor::Code => None,
            IssuedFor::Refresh(parent) => Some(parent.id.clone()),
        };
        let txn = self.db.begin().await?;
        refresh_tokens::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            grant_id: Set(new.grant_id.to_string()),
            token_hash: Set(new.token_hash),
            parent_id: Set(parent_id),
            created_at: Set(new.created_at),
            expires_at: Set(new.expires_at),
            used_at: Set(None),
            revoked_at: Set(None),
            reissue_sealed: Set(None),
            reissue_until: Set(None),
            dpop_jkt: Set(new.jkt),
        }
        .insert(&txn)
        .await?;
        if let Some(answer) = answer {
            keep_answer(&txn, new.grant_id, new.issued_for, answer).await?;
        }
        if let IssuedFor::Refresh(parent) = new.issued_for {
            drop_previous_answer(&txn, new.grant_id, parent).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    pub async fn refresh_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<RefreshRecord>, StoreError> {
        refresh_tokens::Entity::find()
            .filter(refresh_tokens::Column::TokenHash.eq(token_hash))
            .one(&self.db)
            .await?
            .map(RefreshRecord::try_from)
            .transpose()
    }

    /// Marks the token spent with a conditional update, so of two concurrent uses exactly one
    /// succeeds and the other is told it was spent.
    pub async fn spend_refresh_token(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<RefreshOutcome, StoreError> {
        let Some(record) = self.refresh_token(token_hash).await? else {
            return Ok(RefreshOutcome::Unknown);
        };
        if record.used_at.is_some() || record.revoked_at.is_some() {
            return Ok(RefreshOutcome::AlreadySpent(record));
        }
        let result = refresh_tokens::Entity::update_many()
            .col_expr(refresh_tokens::Column::UsedAt, Expr::value(now))
            .filter(refresh_tokens::Column::Id.eq(record.id.clone()))
            .filter(refresh_tokens::Column::UsedAt.is_null())
            .filter(refresh_tokens::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await?;
        if result.rows_affected == 1 {
            Ok(RefreshOutcome::Spent(record))
        } else {
            Ok(RefreshOutcome::AlreadySpent(record))
        }
    }

    /// Gives a spent refresh token back when nothing was issued for it (the next one could not
    /// be stored): the partner's retry must be a first use, not a reuse that revokes the grant.
    /// Only the spend made at `spent_at` is undone.
    pub async fn unspend_refresh_token(
        &self,
        id: &str,
        spent_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        refresh_tokens::Entity::update_many()
            .col_expr(
                refresh_tokens::Column::UsedAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(refresh_tokens::Column::Id.eq(id))
            .filter(refresh_tokens::Column::UsedAt.eq(spent_at))
            .filter(refresh_tokens::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// What became of a spent refresh token: its successor is read before the token's own
    /// row, because both are written in one transaction — a successor seen means its answer is
    /// seen too.
    pub async fn refresh_rotation(&self, id: &str) -> Result<Option<Rotation>, StoreError> {
        let successor = refresh_tokens::Entity::find()
            .filter(refresh_tokens::Column::ParentId.eq(id))
            .one(&self.db)
            .await?;
        let Some(token) = refresh_tokens::Entity::find_by_id(id).one(&self.db).await? else {
            return Ok(None);
        };
        Ok(Some(Rotation {
            spent_at: token.used_at,
            revoked: token.revoked_at.is_some(),
            successor: Successor::of(successor),
            answer: answer_of(token.reissue_sealed, token.reissue_until),
        }))
    }

    /// What became of a grant's spent code; the same order of reads as for a refresh token.
    pub async fn code_rotation(&self, grant: GrantId) -> Result<Option<Rotation>, StoreError> {
        let successor = refresh_tokens::Entity::find()
            .filter(refresh_tokens::Column::GrantId.eq(grant.to_string()))
            .filter(refresh_tokens::Column::ParentId.is_null())
            .one(&self.db)
            .await?;
        let Some(grant) = grants::Entity::find_by_id(grant.to_string())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(Rotation {
            spent_at: grant.code_redeemed_at,
            revoked: grant.status != "active",
            successor: Successor::of(successor),
            answer: answer_of(grant.code_reissue_sealed, grant.code_reissue_until),
        }))
    }

    /// Clears every kept answer whose window has ended. Returns how many were cleared.
    pub async fn forget_answers(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let tokens = refresh_tokens::Entity::update_many()
            .col_expr(
                refresh_tokens::Column::ReissueSealed,
                Expr::value(no_answer()),
            )
            .col_expr(
                refresh_tokens::Column::ReissueUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(refresh_tokens::Column::ReissueUntil.lte(now))
            .exec(&self.db)
            .await?;
        let codes = grants::Entity::update_many()
            .col_expr(grants::Column::CodeReissueSealed, Expr::value(no_answer()))
            .col_expr(
                grants::Column::CodeReissueUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(grants::Column::CodeReissueUntil.lte(now))
            .exec(&self.db)
            .await?;
        Ok(tokens.rows_affected + codes.rows_affected)
    }
}

fn answer_of(sealed: Option<Vec<u8>>, until: Option<DateTime<Utc>>) -> Option<SealedAnswer> {
    Some(SealedAnswer {
        sealed: sealed?,
        until: until?,
    })
}

/// Keeps the answer on the spent token's row, or on the grant's for a code.
async fn keep_answer(
    db: &impl ConnectionTrait,
    grant: GrantId,
    issued_for: IssuedFor<'_>,
    answer: SealedAnswer,
) -> Result<(), StoreError> {
    match issued_for {
        IssuedFor::Code => {
            grants::Entity::update_many()
                .col_expr(
                    grants::Column::CodeReissueSealed,
                    Expr::value(Some(answer.sealed)),
                )
                .col_expr(
                    grants::Column::CodeReissueUntil,
                    Expr::value(Some(answer.until)),
                )
                .filter(grants::Column::Id.eq(grant.to_string()))
                .exec(db)
                .await?;
        }
        IssuedFor::Refresh(parent) => {
            refresh_tokens::Entity::update_many()
                .col_expr(
                    refresh_tokens::Column::ReissueSealed,
                    Expr::value(Some(answer.sealed)),
                )
                .col_expr(
                    refresh_tokens::Column::ReissueUntil,
                    Expr::value(Some(answer.until)),
                )
                .filter(refresh_tokens::Column::Id.eq(parent.id.clone()))
                .exec(db)
                .await?;
        }
    }
    Ok(())
}

/// Drops the answer kept for the use before `parent`'s: its grandparent token's, or the code's
/// when `parent` was the first token of the chain.
async fn drop_previous_answer(
    db: &impl ConnectionTrait,
    grant: GrantId,
    parent: &RefreshRecord,
) -> Result<(), StoreError> {
    match &parent.parent_id {
        Some(grandparent) => {
            refresh_tokens::Entity::update_many()
                .col_expr(
                    refresh_tokens::Column::ReissueSealed,
                    Expr::value(no_answer()),
                )
                .col_expr(
                    refresh_tokens::Column::ReissueUntil,
                    Expr::value(Option::<DateTime<Utc>>::None),
                )
                .filter(refresh_tokens::Column::Id.eq(grandparent.clone()))
                .filter(refresh_tokens::Column::ReissueSealed.is_not_null())
                .exec(db)
                .await?;
        }
        None => {
            grants::Entity::update_many()
                .col_expr(grants::Column::CodeReissueSealed, Expr::value(no_answer()))
                .col_expr(
                    grants::Column::CodeReissueUntil,
                    Expr::value(Option::<DateTime<Utc>>::None),
                )
                .filter(grants::Column::Id.eq(grant.to_string()))
                .filter(grants::Column::CodeReissueSealed.is_not_null())
                .exec(db)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClientId, FieldSet, UpstreamCustomerId};
    use crate::store::testing::store;
    use crate::store::{NewPartner, PartnerRates, RevokedBy};

    /// Fone Shop (registered here) and a grant of Alice's to it.
    async fn grant(store: &Store, now: DateTime<Utc>) -> GrantId {
        let client = ClientId::parse("fone-shop").unwrap();
        store
            .insert_partner(
                NewPartner {
                    client_id: client,
                    name: "Fone Shop".into(),
                    secret_hash: "x".into(),
                    keys: None,
                    fapi: Default::default(),
                    redirect_uris: vec!["https://fone.example/cb".into()],
                    fields: FieldSet::parse("claims:status").unwrap(),
                    rates: PartnerRates::default(),
                },
                now,
            )
            .await
            .unwrap();
        grant_of(store, "CU-1", "a@example.com", now).await
    }

    /// A grant to Fone Shop (registered already) of a new customer's.
    async fn grant_of(store: &Store, upstream: &str, email: &str, now: DateTime<Utc>) -> GrantId {
        let customer = store
            .insert_customer(
                &UpstreamCustomerId::parse(upstream).unwrap(),
                email,
                "h".into(),
                now,
            )
            .await
            .unwrap();
        store
            .insert_grant(
                customer.id,
                &ClientId::parse("fone-shop").unwrap(),
                &FieldSet::parse("claims:status").unwrap(),
                now,
                now + chrono::Duration::days(1),
            )
            .await
            .unwrap()
            .id
    }

    fn answer(byte: u8, until: DateTime<Utc>) -> SealedAnswer {
        SealedAnswer {
            sealed: vec![byte; 8],
            until,
        }
    }

    async fn insert(
        store: &Store,
        grant: GrantId,
        hash: &str,
        issued_for: IssuedFor<'_>,
        now: DateTime<Utc>,
        kept: Option<SealedAnswer>,
    ) -> RefreshRecord {
        store
            .insert_refresh_token(
                NewRefreshToken {
                    grant_id: grant,
                    token_hash: hash.into(),
                    issued_for,
                    created_at: now,
                    expires_at: now + chrono::Duration::days(1),
                    jkt: None,
                },
                kept,
            )
            .await
            .unwrap();
        store.refresh_token(hash).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn a_code_is_spent_once_by_a_conditional_update_and_given_back_only_by_its_spender() {
        let (store, _dir) = store().await;
        let now = Utc::now();
        let grant = grant(&store, now).await;
        assert!(store.spend_code(grant, now).await.unwrap());
        assert!(!store.spend_code(grant, now).await.unwrap(), "spent once");
        let later = now + chrono::Duration::seconds(1);
        assert!(!store.spend_code(grant, later).await.unwrap());
        assert_eq!(
            store.grant(grant).await.unwrap().unwrap().code_redeemed_at,
            Some(now)
        );

        // Only the spend made at `now` is undone, and only once.
        store.unspend_code(grant, later).await.unwrap();
        assert!(!store.spend_code(grant, later).await.unwrap());
        store.unspend_code(grant, now).await.unwrap();
        assert!(store.spend_code(grant, later).await.unwrap());
    }

    #[tokio::test]
    async fn racing_code_spends_have_exactly_one_winner() {
        let (store, _dir) = store().await;
        let now = Utc::now();
        let grant = grant(&store, now).await;
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.spend_code(grant, now).await.unwrap() })
            })
            .collect();
        let mut won = 0;
        for racer in racers {
            if racer.await.unwrap() {
                won += 1;
            }
        }
        assert_eq!(won, 1);
    }

    #[tokio::test]
    async fn a_rotation_keeps_the_answer_only_for_the_just_spent_secret() {
        let (store, _dir) = store().await;
        let now = Utc::now();
        let until = now + chrono::Duration::seconds(5);
        let grant = grant(&store, now).await;
        assert_eq!(
            store.code_rotation(grant).await.unwrap().unwrap().successor,
            Successor::NotYet
        );

        // The code is exchanged for t0; its answer is kept on the grant.
        assert!(store.spend_code(grant, now).await.unwrap());
        let t0 = insert(
            &store,
            grant,
            "h0",
            IssuedFor::Code,
            now,
            Some(answer(0, until)),
        )
        .await;
        let code = store.code_rotation(grant).await.unwrap().unwrap();
        assert_eq!(code.spent_at, Some(now));
        assert_eq!(code.successor, Successor::Live);
        assert_eq!(code.answer, Some(answer(0, until)));

        // t0 is rotated to t1: t0 keeps t1's answer, the code's is dropped, and the code's
        // successor is spent (a code retry now is reuse).
        assert!(matches!(
            store.spend_refresh_token("h0", now).await.unwrap(),
            RefreshOutcome::Spent(_)
        ));
        let t1 = insert(
            &store,
            grant,
            "h1",
            IssuedFor::Refresh(&t0),
            now,
            Some(answer(1, until)),
        )
        .await;
        let code = store.code_rotation(grant).await.unwrap().unwrap();
        assert_eq!((code.successor, code.answer), (Successor::Spent, None));
        let rotated = store.refresh_rotation(&t0.id).await.unwrap().unwrap();
        assert_eq!(rotated.successor, Successor::Live);
        assert_eq!(rotated.answer, Some(answer(1, until)));
        assert_eq!(
            store.refresh_rotation(&t1.id).await.unwrap().unwrap(),
            Rotation {
                spent_at: None,
                revoked: false,
                successor: Successor::NotYet,
                answer: None,
            }
        );

        // t1 is rotated to t2: t0's answer goes, t1 keeps t2's.
        assert!(matches!(
            store.spend_refresh_token("h1", now).await.unwrap(),
            RefreshOutcome::Spent(_)
        ));
        insert(
            &store,
            grant,
            "h2",
            IssuedFor::Refresh(&t1),
            now,
            Some(answer(2, until)),
        )
        .await;
        let grandparent = store.refresh_rotation(&t0.id).await.unwrap().unwrap();
        assert_eq!(
            (grandparent.successor, grandparent.answer),
            (Successor::Spent, None)
        );
        assert_eq!(
            store
                .refresh_rotation(&t1.id)
                .await
                .unwrap()
                .unwrap()
                .answer,
            Some(answer(2, until))
        );

        // Revocation clears every kept answer and marks the rotation revoked.
        assert!(
            store
                .revoke_grant(grant, RevokedBy::Customer, now)
                .await
                .unwrap()
        );
        let revoked = store.refresh_rotation(&t1.id).await.unwrap().unwrap();
        assert!(revoked.revoked);
        assert_eq!(revoked.answer, None);
        assert!(store.code_rotation(grant).await.unwrap().unwrap().revoked);
    }

    #[tokio::test]
    async fn answers_are_forgotten_once_their_window_ended() {
        let (store, _dir) = store().await;
        let now = Utc::now();
        let until = now + chrono::Duration::seconds(5);
        let grant = grant(&store, now).await;
        assert!(store.spend_code(grant, now).await.unwrap());
        let t0 = insert(
            &store,
            grant,
            "h0",
            IssuedFor::Code,
            now,
            Some(answer(0, until)),
        )
        .await;
        store.spend_refresh_token("h0", now).await.unwrap();
        insert(
            &store,
            grant,
            "h1",
            IssuedFor::Refresh(&t0),
            now,
            Some(answer(1, until + chrono::Duration::seconds(10))),
        )
        .await;
        // The code's answer was dropped by the rotation; t0's lasts 10 s longer.
        assert_eq!(store.forget_answers(until).await.unwrap(), 0);
        let later = until + chrono::Duration::seconds(10);
        assert_eq!(store.forget_answers(later).await.unwrap(), 1);
        assert_eq!(
            store
                .refresh_rotation(&t0.id)
                .await
                .unwrap()
                .unwrap()
                .answer,
            None
        );

        // A code answer past its window goes too.
        let other = grant_of(&store, "CU-2", "b@example.com", now).await;
        assert!(store.spend_code(other, now).await.unwrap());
        insert(
            &store,
            other,
            "h9",
            IssuedFor::Code,
            now,
            Some(answer(9, until)),
        )
        .await;
        assert_eq!(store.forget_answers(until).await.unwrap(), 1);
        assert_eq!(
            store.code_rotation(other).await.unwrap().unwrap().answer,
            None
        );
    }
}
