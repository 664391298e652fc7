//! Rust mirrors of the four PostgreSQL enums of migration 0024.
//!
//! Each variant's label is written once below and used by the postgres-types
//! derive, serde, `Display` and `FromStr`. Statements of this crate send labels as
//! text (`$n::text::sync_action`) and read them back as `::text`. A label the
//! database has and this build does not (a later migration's, or an adopted
//! database's own, e.g. `sync_error`, `partial`, `skipped`) reads as the
//! `Other(label)` variant: reading a row never fails on a label.

use std::fmt;
use std::str::FromStr;

/// A label that is not one of an enum's labels (from [`FromStr`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{label:?} is not a {type_name} label known to this build (known: {known})")]
pub struct UnknownLabel {
    /// The PostgreSQL enum, e.g. `sync_action`.
    pub type_name: &'static str,
    /// The label that was not recognised.
    pub label: String,
    /// The known labels, comma-separated.
    pub known: String,
}

macro_rules! pg_enum {
    (
        $(#[$meta:meta])*
        $name:ident = $pg:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $label:literal, )+
        }
    ) => {
        $(#[$meta])*
        ///
        /// A label the database has but this build does not know (e.g. one an
        /// adopted database's own 0024 added) reads as `Other(label)`: reading a
        /// row never fails on a label. `Other` is never produced by [`FromStr`]
        /// (caller input stays strict) and never written by this crate.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $name {
            $(
                $(#[$vmeta])*
                $variant,
            )+
            /// A label of the database's enum that this build does not know,
            /// as stored (interned: see [`from_db_label`](Self::from_db_label)).
            /// The empty label stands for SQL NULL in a nullable column of an
            /// adopted database (PostgreSQL refuses empty enum labels).
            Other(&'static str),
        }

        impl $name {
            /// Name of the PostgreSQL enum type.
            pub const PG_TYPE: &'static str = $pg;
            /// Every known variant, in the database's label order (no `Other`).
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The PostgreSQL label of this variant (`Other`: the stored label).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                    $name::Other(label) => label,
                }
            }

            /// Whether this is a label this build knows (not `Other`).
            pub const fn is_known(self) -> bool {
                !matches!(self, $name::Other(_))
            }

            /// The value of a label read from the database: a known variant, or
            /// `Other(label)` for any other label. Never fails.
            pub fn from_db_label(label: &str) -> $name {
                match label {
                    $($label => $name::$variant,)+
                    other => $name::Other(intern(other)),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownLabel;
            /// Known labels only: caller input naming a label this build does not
            /// know is refused.
            fn from_str(s: &str) -> Result<Self, UnknownLabel> {
                match s {
                    $($label => Ok($name::$variant),)+
                    other => Err(UnknownLabel {
                        type_name: $pg,
                        label: other.to_owned(),
                        known: [$($label),+].join(", "),
                    }),
                }
            }
        }

        /// Decodes a value of the enum type `$pg` (binary format: the label):
        /// a label this build does not know decodes as `Other(label)`.
        impl<'a> postgres_types::FromSql<'a> for $name {
            fn from_sql(
                _ty: &postgres_types::Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                Ok($name::from_db_label(std::str::from_utf8(raw)?))
            }

            fn accepts(ty: &postgres_types::Type) -> bool {
                ty.name() == $pg && matches!(ty.kind(), postgres_types::Kind::Enum(_))
            }
        }

        /// Sends the label as a value of the enum type `$pg`.
        impl postgres_types::ToSql for $name {
            fn to_sql(
                &self,
                _ty: &postgres_types::Type,
                out: &mut bytes::BytesMut,
            ) -> Result<postgres_types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
                out.extend_from_slice(self.as_str().as_bytes());
                Ok(postgres_types::IsNull::No)
            }

            fn accepts(ty: &postgres_types::Type) -> bool {
                ty.name() == $pg && matches!(ty.kind(), postgres_types::Kind::Enum(_))
            }

            postgres_types::to_sql_checked!();
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let label = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                label.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Most distinct unknown labels kept; PostgreSQL labels are at most 63 bytes,
/// and only an enum's owner can add labels, so a real database stays far below.
const MAX_INTERNED: usize = 4096;

/// Stands for any unknown label once [`MAX_INTERNED`] are held.
pub(crate) const OVERFLOW_LABEL: &str = "<unknown>";

/// A `'static` copy of `label`, made once per distinct label (bounded).
fn intern(label: &str) -> &'static str {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    static INTERNED: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut set = INTERNED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(found) = set.get(label) {
        return found;
    }
    if set.len() >= MAX_INTERNED || label.len() > 255 {
        return OVERFLOW_LABEL;
    }
    let leaked: &'static str = Box::leak(label.to_owned().into_boxed_str());
    set.insert(leaked);
    leaked
}

pg_enum! {
    /// `sync_type`: the source system a sync reads from.
    SyncType = "sync_type" {
        /// WooCommerce.
        Woocommerce = "woocommerce",
        /// Odoo.
        Odoo = "odoo",
        /// Shopify.
        Shopify = "shopify",
        /// Anything else.
        Custom = "custom",
    }
}

pg_enum! {
    /// `sync_action`: what happened (an activity-log entry's kind).
    SyncAction = "sync_action" {
        /// A delta preview was computed and cached.
        PreviewDelta = "preview_delta",
        /// A cached preview was dropped before expiry.
        PreviewInvalidate = "preview_invalidate",
        /// Written by the database when a sync_progress row is inserted.
        SyncStart = "sync_start",
        /// A worker's checkpoint (e.g. a finished batch).
        SyncProgress = "sync_progress",
        /// Written by the database when a sync completes.
        SyncComplete = "sync_complete",
        /// Written by the database when a sync is marked failed.
        SyncFail = "sync_fail",
        /// Written by the database when a sync is cancelled.
        SyncCancel = "sync_cancel",
        /// A failed sync or batch is retried.
        SyncRetry = "sync_retry",
        /// A record was created in the target.
        RecordCreate = "record_create",
        /// A record was updated in the target.
        RecordUpdate = "record_update",
        /// A record was deleted in the target.
        RecordDelete = "record_delete",
        /// A record was left unchanged on purpose.
        RecordSkip = "record_skip",
        /// Source and target changed the same record.
        ConflictDetected = "conflict_detected",
        /// Expired previews were removed.
        CacheCleanup = "cache_cleanup",
    }
}

pg_enum! {
    /// `sync_entity_type`: what kind of record is synced.
    SyncEntityType = "sync_entity_type" {
        /// Customers.
        Customer = "customer",
        /// Products.
        Product = "product",
        /// Orders.
        Order = "order",
        /// Invoices.
        Invoice = "invoice",
        /// Product variants.
        ProductVariant = "product_variant",
        /// Categories.
        Category = "category",
        /// Inventory levels.
        Inventory = "inventory",
        /// Price lists.
        PriceList = "price_list",
        /// Payments.
        Payment = "payment",
        /// Refunds.
        Refund = "refund",
        /// Credit notes.
        CreditNote = "credit_note",
        /// Shipments.
        Shipment = "shipment",
        /// Suppliers.
        Supplier = "supplier",
        /// Purchase orders.
        PurchaseOrder = "purchase_order",
        /// Tax rates.
        TaxRate = "tax_rate",
        /// Coupons.
        Coupon = "coupon",
    }
}

pg_enum! {
    /// `sync_status_type`: lifecycle state of a sync or of one logged step.
    SyncStatus = "sync_status_type" {
        /// Not started yet.
        Pending = "pending",
        /// Running.
        InProgress = "in_progress",
        /// Finished without failures.
        Completed = "completed",
        /// Failed.
        Failed = "failed",
        /// Finished, but some items failed.
        CompletedWithErrors = "completed_with_errors",
        /// Cancelled.
        Cancelled = "cancelled",
    }
}

/// Reads a label read from the database as `::text`: unknown labels become
/// `Other(label)`, so this never fails (the `Result` keeps call sites unchanged).
pub(crate) fn parse_label<T: DbLabel>(_operation: &'static str, label: &str) -> crate::Result<T> {
    Ok(T::from_db(label))
}

/// The enums' [`from_db_label`](SyncAction::from_db_label), for generic callers.
pub(crate) trait DbLabel {
    fn from_db(label: &str) -> Self;
}

macro_rules! db_label {
    ($($t:ident),+) => {$(
        impl DbLabel for $t {
            fn from_db(label: &str) -> Self {
                $t::from_db_label(label)
            }
        }
    )+};
}
db_label!(SyncType, SyncAction, SyncEntityType, SyncStatus);
