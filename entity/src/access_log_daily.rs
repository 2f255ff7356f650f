//! `access_log_daily`: calls per day (its start, UTC), partner (`''`: none) and outcome, the
//! hourly totals summed per day.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Eq)]
#[sea_orm(table_name = "access_log_daily")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub day: DateTimeUtc,
    #[sea_orm(primary_key, auto_increment = false)]
    pub client_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub outcome: String,
    pub n: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
