//! The two forms a filter ships in, for running the same integration tests on both.
//!
//! - [`Form::Separate`]: each filter's WasmPlugin with its own module (`dist/<filter>.wasm`), as
//!   the plugins in `wasmplugins/` are.
//! - [`Form::Bundle`]: the same WasmPlugin (name, phase, selector, environment, failure policy)
//!   with the bundle's module (`dist/bundle.wasm`) and the filter's `pluginConfig` as the
//!   bundle's section for it — what `wasmplugins/bundle/` deploys.
//!
//! A test file names its tests in [`in_both_forms!`](crate::in_both_forms): each test then
//! exists as `separate::<name>` and `bundle::<name>`, and every [`crate::Bed`] it starts renders
//! its plugins in that form (the form travels with the test's task, see [`Form::scope`]; a bed
//! built on a task the test spawned would be rendered separate).

use std::future::Future;

/// How the filters' WasmPlugins are rendered into Envoy config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Form {
    /// Each filter in its own module.
    #[default]
    Separate,
    /// Each filter inside the bundle's module.
    Bundle,
}

tokio::task_local! {
    static FORM: Form;
}

/// The bundle module's URL in WasmPlugins (wasmplugins/local/overlay.yaml maps it to
/// dist/bundle.wasm).
pub const BUNDLE_URL: &str = "oci://ghcr.io/meshwright/bundle:0.1.0";

/// The sidecar bundle's URL (dist/bundle-sidecar.wasm: the bundle without OAuth2), which the
/// shipped sidecar WasmPlugins of wasmplugins/bundle/ pull.
pub const BUNDLE_SIDECAR_URL: &str = "oci://ghcr.io/meshwright/bundle-sidecar:0.1.0";

/// The bundle's `pluginName` (root id).
pub const BUNDLE_PLUGIN_NAME: &str = "bundle";

/// The bundle's section for a filter's WasmPlugin, by its `pluginName`; None for a plugin that
/// is not one of the bundle's filters.
pub fn section_of(plugin_name: &str) -> Option<&'static str> {
    match plugin_name {
        "oauth2" => Some("oauth2"),
        "ab" => Some("ab"),
        "retry_budget" => Some("retry_budget"),
        "fault" => Some("fault"),
        _ => None,
    }
}

/// The form of the running test (Separate outside [`Form::scope`]).
pub fn current() -> Form {
    FORM.try_with(|f| *f).unwrap_or_default()
}

impl Form {
    /// Runs `f` (a test body) in this form: the [`crate::Bed`]s it builds on its own task use it.
    pub async fn scope<F: Future>(self, f: F) -> F::Output {
        FORM.scope(self, f).await
    }

    /// The field a config error names for `field` of `section`'s filter: `field` itself when
    /// separate, `section.field` in the bundle (`.`, the whole document, is `section`).
    pub fn config_field(self, section: &str, field: &str) -> String {
        match (self, field) {
            (Self::Separate, f) => f.to_owned(),
            (Self::Bundle, ".") => section.to_owned(),
            (Self::Bundle, f) => format!("{section}.{f}"),
        }
    }
}

/// Defines each listed test twice — `separate::<name>` and `bundle::<name>`, both
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 4)]` — running the test file's
/// `async fn <name>() -> anyhow::Result<()>` in [`Form::Separate`] and in [`Form::Bundle`].
///
/// The bodies are plain functions at module level (so rustfmt formats them); the invocation only
/// names them. A body left out of the list is an unused function, which the lints refuse.
///
/// ```ignore
/// meshwright_testbed::in_both_forms!(aborts_are_counted, delays_are_counted);
///
/// async fn aborts_are_counted() -> Result<()> {
///     let bed = Bed::builder().plugin(shipped("fault")?).start().await?;
///     // ...
///     Ok(())
/// }
/// ```
///
/// Run one form with a filter: `cargo test -p meshwright-testbed --test integration fault::bundle::`.
#[macro_export]
macro_rules! in_both_forms {
    ($($name:ident),+ $(,)?) => {
        /// Each filter in its own module.
        mod separate {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() -> ::anyhow::Result<()> {
                    $crate::forms::Form::Separate.scope(super::$name()).await
                }
            )+
        }

        /// Each filter inside the bundle.
        mod bundle {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() -> ::anyhow::Result<()> {
                    $crate::forms::Form::Bundle.scope(super::$name()).await
                }
            )+
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_named_inside_the_section_in_the_bundle() {
        assert_eq!(Form::Separate.config_field("fault", "rules[0]"), "rules[0]");
        assert_eq!(
            Form::Bundle.config_field("fault", "rules[0]"),
            "fault.rules[0]"
        );
        assert_eq!(Form::Bundle.config_field("oauth2", "."), "oauth2");
    }

    #[tokio::test]
    async fn the_form_travels_with_the_task() {
        assert_eq!(current(), Form::Separate);
        assert_eq!(Form::Bundle.scope(async { current() }).await, Form::Bundle);
        assert_eq!(current(), Form::Separate);
    }
}
