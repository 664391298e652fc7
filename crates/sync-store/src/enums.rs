//! Rust mirrors of the four PostgreSQL enums of migration 0024.
//!
//! Each variant's label is written once below and used by the postgres-types
//! derive, serde, `Display` and `FromStr`. Statements of this crate send labels as
//! text (`$n::text::sync_action`) and read them back as `::text`, so a label added
//! to the database by a later migration surfaces as [`crate::Error::UnknownLabel`]
//! naming it, never as a panic.

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
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            postgres_types::ToSql, postgres_types::FromSql,
            serde::Serialize, serde::Deserialize,
        )]
        #[postgres(name = $pg)]
        pub enum $name {
            $(
                $(#[$vmeta])*
                #[postgres(name = $label)]
                #[serde(rename = $label)]
                $variant,
            )+
        }

        impl $name {
            /// Name of the PostgreSQL enum type.
            pub const PG_TYPE: &'static str = $pg;
            /// Every variant, in the database's label order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The PostgreSQL label of this variant.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
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
    };
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

/// Parses a label read from the database as `::text`.
pub(crate) fn parse_label<T: FromStr<Err = UnknownLabel>>(
    operation: &'static str,
    label: &str,
) -> crate::Result<T> {
    label.parse::<T>().map_err(|e| crate::Error::UnknownLabel {
        operation,
        type_name: e.type_name,
        label: e.label,
    })
}
