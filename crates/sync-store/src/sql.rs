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

/// A statement template with its two renderings, built on first use.
pub(crate) struct ScopedSql {
    template: Cow<'static, str>,
    service: OnceLock<String>,
    tenant: OnceLock<String>,
}

impl ScopedSql {
    pub(crate) const fn new(template: &'static str) -> ScopedSql {
        ScopedSql {
            template: Cow::Borrowed(template),
            service: OnceLock::new(),
            tenant: OnceLock::new(),
        }
    }

    /// A template composed at run time (e.g. per filter shape).
    pub(crate) fn owned(template: String) -> ScopedSql {
        ScopedSql {
            template: Cow::Owned(template),
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
