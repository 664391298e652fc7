//! One SQL text per statement, rendered for the service and the tenant scope.
//!
//! Templates write the org as `{org}`. In service scope it becomes `$1::uuid`
//! (the org the caller names). In tenant scope it becomes [`TENANT_ORG`], the
//! org of the user in `request.jwt.claims`, read through the user's own RLS
//! policy on `auth.users_extended`; `$1` is still declared (as a NULL uuid) so
//! both renderings take the same parameters.
//!
//! `{has_org}` is `true` in service scope and "the tenant user has an org" in
//! tenant scope. Statements that return a row even when nothing matched (counts,
//! metrics) filter on it, so that in tenant scope an empty result is the one
//! signal that the user may have no org (see `Store::rows`).

use std::borrow::Cow;
use std::sync::OnceLock;

/// The tenant user's org, evaluated once per statement.
pub(crate) const TENANT_ORG: &str =
    "(SELECT u.org_id FROM auth.users_extended u WHERE u.id = (SELECT auth.uid()))";

/// What running a statement does, which decides what a lost connection means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Reads only: a lost connection is [`crate::Error::Unavailable`] (retry).
    Read,
    /// Writes: a lost connection after the statement was sent is
    /// [`crate::Error::OutcomeUnknown`], `retry_safe` when the statement is
    /// idempotent (keyed: applying it twice is a no-op).
    Write {
        /// Whether repeating the statement with the same parameters is a no-op.
        retry_safe: bool,
    },
}

/// A statement template with its two renderings, built on first use.
pub(crate) struct ScopedSql {
    template: Cow<'static, str>,
    effect: Effect,
    service: OnceLock<String>,
    tenant: OnceLock<String>,
}

impl ScopedSql {
    /// A statement that only reads.
    pub(crate) const fn new(template: &'static str) -> ScopedSql {
        ScopedSql::with_effect(template, Effect::Read)
    }

    /// A statement that writes and is not idempotent.
    pub(crate) const fn write(template: &'static str) -> ScopedSql {
        ScopedSql::with_effect(template, Effect::Write { retry_safe: false })
    }

    /// A statement that writes and is idempotent (keyed).
    pub(crate) const fn idempotent(template: &'static str) -> ScopedSql {
        ScopedSql::with_effect(template, Effect::Write { retry_safe: true })
    }

    const fn with_effect(template: &'static str, effect: Effect) -> ScopedSql {
        ScopedSql {
            template: Cow::Borrowed(template),
            effect,
            service: OnceLock::new(),
            tenant: OnceLock::new(),
        }
    }

    /// What the statement does.
    pub(crate) fn effect(&self) -> Effect {
        self.effect
    }

    /// A template composed at run time (e.g. per filter shape).
    pub(crate) fn owned(template: String) -> ScopedSql {
        ScopedSql {
            template: Cow::Owned(template),
            effect: Effect::Read,
            service: OnceLock::new(),
            tenant: OnceLock::new(),
        }
    }

    /// The text for the service scope (`{org}` = `$1::uuid`).
    pub(crate) fn service(&self) -> &str {
        self.service.get_or_init(|| {
            self.template
                .replace("{org}", "$1::uuid")
                .replace("{has_org}", "true")
        })
    }

    /// The text for the tenant scope (`{org}` = the user's org).
    pub(crate) fn tenant(&self) -> &str {
        self.tenant.get_or_init(|| {
            self.template
                .replace("{has_org}", &format!("({TENANT_ORG}) IS NOT NULL"))
                .replace("{org}", TENANT_ORG)
        })
    }
}
